"""HdrHistograms of nanosecond durations: mergeable, with a stated precision.

``HDR_SIGNIFICANT_DIGITS`` = 3. **Precision**: a percentile read back is the highest value of the
bucket holding the sample of that rank (nearest rank: ``max(int(q/100 * n + 0.5), 1)``-th
smallest), so it lies in ``[exact, exact * (1 + 2**-10)]`` — within 0.1 % above the exact sample,
never below; values below 2,048 ns are exact. Histograms add without loss (counts per bucket), so a
merged histogram equals the histogram of all samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from hdrh.histogram import HdrHistogram

HDR_SIGNIFICANT_DIGITS = 3
HDR_LOWEST_NS = 1
HDR_HIGHEST_NS = 3_600 * 1_000_000_000  # one hour: above any request timeout we allow
# With 3 digits, hdrh keeps 2**11 sub-buckets per power of two: values below 2**11 are exact and
# above it a bucket is 2**(floor(log2 v) - 10) wide, i.e. at most v / 1024.
_EXACT_BELOW = 2**11
HDR_RELATIVE_PRECISION = 2.0**-10


def new_histogram() -> HdrHistogram:
    """An empty histogram of nanosecond durations (1 ns .. 1 h, 3 significant digits)."""
    return HdrHistogram(HDR_LOWEST_NS, HDR_HIGHEST_NS, HDR_SIGNIFICANT_DIGITS)


def histogram_ns(values_ns: npt.NDArray[np.int64]) -> HdrHistogram:
    """A histogram of ``values_ns`` (negative values, i.e. absent durations, are skipped).

    Vectorised: values are first rounded down to their hdrh bucket's lowest value (which lands
    them in the same bucket), so only one ``record_value`` call per distinct bucket is made.
    """
    hist = new_histogram()
    values = np.asarray(values_ns, dtype=np.int64)
    values = np.clip(values[values >= 0], 0, HDR_HIGHEST_NS)
    if len(values) == 0:
        return hist
    keys = bucket_floor_ns(values)
    uniq, counts = np.unique(keys, return_counts=True)
    for value, count in zip(uniq.tolist(), counts.tolist(), strict=True):
        hist.record_value(value, count)
    return hist


def bucket_floor_ns(values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The lowest value of each value's hdrh bucket (3 significant digits)."""
    values = np.asarray(values, dtype=np.int64)
    shift = np.zeros(len(values), dtype=np.int64)
    big = values >= _EXACT_BELOW
    shift[big] = np.floor(np.log2(values[big].astype(np.float64))).astype(np.int64) - 10
    floored: npt.NDArray[np.int64] = (values >> shift) << shift
    return floored


def merge_histograms(hists: Sequence[HdrHistogram]) -> HdrHistogram:
    """The sum of ``hists`` (exact: bucket counts add)."""
    total = new_histogram()
    for hist in hists:
        total.add(hist)
    return total


def percentile_ns(hist: HdrHistogram, q: float) -> int:
    """The ``q``-th percentile (0..100) read from ``hist``; see the module's precision note."""
    return int(hist.get_value_at_percentile(q))


def nearest_rank_ns(values_ns: npt.NDArray[np.int64], q: float) -> int:
    """The exact nearest-rank percentile hdrh approximates (for checking the stated precision)."""
    ordered = np.sort(np.asarray(values_ns, dtype=np.int64))
    rank = max(int(q * len(ordered) / 100 + 0.5), 1)
    return int(ordered[min(rank, len(ordered)) - 1])
