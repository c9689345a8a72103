"""How much of a request's server time was work, and how much was waiting — without any header.

Most services send no ``Server-Timing``: the decomposition then knows each request's server time
``w`` (its latency with the client, the network and the hops taken out) but not how much of it was
spent waiting behind other requests (design.md §4, "without cooperation"). pathprobe measures the
uncontended work itself, from two sources that need nothing from the server:

* **the baseline** — a few requests the session sends one at a time before the load (concurrency
  1: nothing else of ours is in the server), with the same payloads as the load;
* **requests that found the server empty** — in the window itself, requests sent while none of
  the client's other requests to that path was in flight (the client's own records say so).
  As the diagnosis is the only load on the path under test, such a request waited for nobody.

Work grows with input size (decoding, resizing a larger image), so the uncontended samples fit
``work(bytes) = a + b·bytes`` (b ≥ 0, a robust median-of-slopes fit). A request that found others
in flight waited ``max(w − work(bytes) − tolerance, 0)``, where ``tolerance`` is a robust 90th
percentile of the uncontended samples' own residuals, so that work's ordinary variation is not
taken for waiting; a request that found the server empty waited 0.

Whether that waiting was for the CPU (then the work's stages explain it) or for a worker, thread
or lock while CPU was to spare (``server_concurrency``) is decided downstream by the CPU the
server used (:func:`pathprobe.analysis.server_split.cpu_caused_wait_ms`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: How far above the fitted work a request's time may lie and still count as work: the 90th
#: percentile of the uncontended residuals, estimated robustly — 1.2816 (the normal's p90) ×
#: 1.4826 × their median absolute deviation — because the baseline's few samples may hold one
#: cold-start request (a lazily loaded model) that would make a plain p90 of seven samples huge.
TOLERANCE_Z = 1.2816
MAD_TO_SIGMA = 1.4826
#: A size slope needs this many uncontended samples and the largest body at least this factor of
#: the smallest; below that the slope is not identifiable and work is taken as size-independent.
MIN_SLOPE_SAMPLES = 6
MIN_SIZE_SPREAD = 1.5
#: Pairs of samples whose sizes differ by less than this share of the median size carry no slope.
MIN_PAIR_SIZE_DIFF = 0.25


@dataclass(frozen=True)
class WorkModel:
    """Uncontended server time of a request as a function of its body size."""

    intercept_ms: float
    ms_per_byte: float
    tolerance_ms: float
    samples: int  # uncontended samples it was fitted on
    baseline_samples: int  # ... of which from the baseline

    def work_ms(self, bytes_out: FloatArray) -> FloatArray:
        return np.asarray(self.intercept_ms + self.ms_per_byte * bytes_out, np.float64)


def in_flight_at_send(actual_ns: IntArray, end_ns: IntArray) -> IntArray:
    """For each request, how many *other* requests of the same array were in flight when it was
    sent: sent before it (``actual_ns``) and not yet finished (``end_ns``). O(n log n)."""
    actual = np.asarray(actual_ns, np.int64)
    end = np.asarray(end_ns, np.int64)
    if actual.size == 0:
        return np.zeros(0, np.int64)
    sent_before = np.searchsorted(np.sort(actual), actual, side="left")
    ended_by = np.searchsorted(np.sort(end), actual, side="right")
    return np.asarray(np.maximum(sent_before - ended_by, 0), np.int64)


def fit_work_model(
    bytes_out: FloatArray, server_ms: FloatArray, baseline_samples: int = 0
) -> WorkModel | None:
    """The :class:`WorkModel` of uncontended samples (None without any)."""
    x = np.asarray(bytes_out, np.float64)
    y = np.asarray(server_ms, np.float64)
    ok = np.isfinite(x) & np.isfinite(y) & (y >= 0)
    x, y = x[ok], y[ok]
    if y.size == 0:
        return None
    slope = 0.0
    if y.size >= MIN_SLOPE_SAMPLES and x.min() > 0 and x.max() >= MIN_SIZE_SPREAD * x.min():
        slope = _median_pairwise_slope(x, y)
    intercept = float(np.median(y - slope * x))
    residuals = y - (intercept + slope * x)
    mad = float(np.median(np.abs(residuals - np.median(residuals))))
    tolerance = TOLERANCE_Z * MAD_TO_SIGMA * mad
    return WorkModel(intercept, slope, tolerance, int(y.size), baseline_samples)


def _median_pairwise_slope(x: FloatArray, y: FloatArray) -> float:
    """Theil–Sen: the median slope over pairs whose sizes differ enough; ≥ 0."""
    if x.size > 200:  # pairwise slopes grow as n²: a deterministic thinning keeps ~20k pairs
        keep = np.linspace(0, x.size - 1, 200).astype(np.int64)
        x, y = x[keep], y[keep]
    i, j = np.triu_indices(x.size, k=1)
    dx = x[j] - x[i]
    good = np.abs(dx) > MIN_PAIR_SIZE_DIFF * float(np.median(x))
    if good.sum() < MIN_SLOPE_SAMPLES:
        return 0.0
    return max(float(np.median((y[j] - y[i])[good] / dx[good])), 0.0)


def split_work_and_wait(
    server_ms: FloatArray,
    bytes_out: FloatArray,
    found_empty: npt.NDArray[np.bool_],
    model: WorkModel,
) -> tuple[FloatArray, FloatArray]:
    """(work, waiting) per request, adding up to ``server_ms`` (module docstring)."""
    server = np.asarray(server_ms, np.float64)
    expected = model.work_ms(np.asarray(bytes_out, np.float64)) + model.tolerance_ms
    wait = np.clip(server - expected, 0.0, server)
    wait = np.where(found_empty, 0.0, wait)
    return server - wait, wait
