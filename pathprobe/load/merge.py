"""Merging the results of several load workers into one, exactly.

Raw merge (:func:`merge_results`): the workers' record arrays are concatenated and re-sorted by
``seq``; nothing is summarised, so every percentile of the merged result equals the percentile of
all samples taken together (it *is* all samples taken together).

Histogram merge (:func:`histogram_ns`, :func:`merge_histograms`): for runs too large to keep raw,
HdrHistograms of nanosecond durations with ``HDR_SIGNIFICANT_DIGITS`` = 3. **Precision**: a
percentile read back is the highest value of the bucket holding the sample of that rank (nearest
rank: ``max(int(q/100 * n + 0.5), 1)``-th smallest), so it lies in ``[exact, exact * (1 + 2**-10)]``
— within 0.1 % above the exact sample, never below; values below 2,048 ns are exact. Histograms
add without loss (counts per bucket), so a merged histogram equals the histogram of all samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from hdrh.histogram import HdrHistogram

from pathprobe.load.engine import StepResult
from pathprobe.load.records import Records

HDR_SIGNIFICANT_DIGITS = 3
HDR_LOWEST_NS = 1
HDR_HIGHEST_NS = 3_600 * 1_000_000_000  # one hour: above any request timeout we allow
# With 3 digits, hdrh keeps 2**11 sub-buckets per power of two: values below 2**11 are exact and
# above it a bucket is 2**(floor(log2 v) - 10) wide, i.e. at most v / 1024.
_EXACT_BELOW = 2**11
HDR_RELATIVE_PRECISION = 2.0**-10


def merge_results(
    parts: Sequence[StepResult],
    *,
    first_measured_seq: int | None = None,
    renumber: bool = False,
) -> StepResult:
    """One :class:`StepResult` holding every record of ``parts``, sorted by ``seq``.

    ``parts`` carry globally unique ``seq`` values (open loop: the plan's own indices). With
    ``renumber`` (closed loop, where each worker counted its own requests) ``seq`` becomes the
    order of sending, as one process would have numbered them. Replica tables are united and the
    replica column remapped; captured header lists follow their records; loop-lag samples of all
    workers are pooled. ``first_measured_seq`` defaults to the first request sent at or after
    the end of the warm-up.
    """
    if not parts:
        raise ValueError("nothing to merge")
    replicas: dict[str, int] = {}
    chunks: list[Records] = []
    header_names = list(parts[0].headers)
    headers: dict[str, list[str | None]] = {name: [] for name in header_names}
    for part in parts:
        recs = part.records
        if part.replicas:
            table = np.array(
                [replicas.setdefault(name, len(replicas)) for name in part.replicas],
                dtype=np.int16,
            )
            if not np.array_equal(table, np.arange(len(table))):  # else nothing to remap
                recs = recs.copy()
                known = recs["replica"] >= 0
                recs["replica"][known] = table[recs["replica"][known]]
        chunks.append(recs)
        for name in header_names:
            headers[name].extend(part.headers.get(name) or [None] * len(recs))
    total = sum(len(c) for c in chunks)
    seqs = [c["seq"] for c in chunks]
    records: Records | None = None
    order: npt.NDArray[np.intp] | None = None
    if (
        not renumber
        and total
        and all(len(q) == 0 or (q.min() >= 0 and q.max() < total) for q in seqs)
    ):
        # The usual open-loop case: seqs are exactly 0 .. total-1, so each record goes straight
        # to its place (one scatter instead of concatenate + argsort + gather).
        records = np.empty(total, dtype=chunks[0].dtype)
        filled = np.zeros(total, dtype=bool)
        for chunk, q in zip(chunks, seqs, strict=True):
            records[q] = chunk
            filled[q] = True
        if not filled.all():  # duplicates or holes: fall back to sorting
            records = None
    if records is None:
        joined = np.concatenate(chunks) if chunks else parts[0].records[:0]
        if renumber:
            # Stable radix sort on the send time (closed loop: intended = actual).
            order = np.argsort(joined["intended_ns"], kind="stable")
            records = joined[order]
            records["seq"] = np.arange(len(records), dtype=np.int64)
        else:
            order = np.argsort(joined["seq"], kind="stable")
            records = joined[order]
    if header_names:
        if order is not None:
            index = order.tolist()
        else:  # scattered by seq: the concatenated position of each seq
            position = np.empty(total, dtype=np.int64)
            offset = 0
            for q in seqs:
                position[q] = np.arange(offset, offset + len(q))
                offset += len(q)
            index = position.tolist()
        headers = {name: [values[i] for i in index] for name, values in headers.items()}
    start_ns = min(p.start_ns for p in parts)
    measured_start_ns = min(p.measured_start_ns for p in parts)
    if first_measured_seq is None:
        later = records["seq"][records["intended_ns"] >= measured_start_ns]
        first_measured_seq = int(later.min()) if len(later) else len(records)
    base = parts[0]
    return StepResult(
        path=base.path,
        url=base.url,
        step=base.step,
        offered_rps=base.offered_rps,
        concurrency=(
            sum(p.concurrency or 0 for p in parts) if base.concurrency is not None else None
        ),
        engine=base.engine,
        records=records,
        first_measured_seq=first_measured_seq,
        start_ns=start_ns,
        measured_start_ns=measured_start_ns,
        measured_end_ns=max(p.measured_end_ns for p in parts),
        replicas=list(replicas),
        headers=headers,
        loop_lag_ns=np.concatenate([p.loop_lag_ns for p in parts]).astype(np.int64),
        in_flight_cap_hits=sum(p.in_flight_cap_hits for p in parts),
        aborted=next((p.aborted for p in parts if p.aborted is not None), None),
        interrupted=any(p.interrupted for p in parts),
    )


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
