"""Hop deltas: what a hop adds, from the same request sequence sent through two neighbouring paths.

Δhop = Q(outer) − Q(inner) at p50 and at the tail percentile (design.md §4 step 3). Requests are
paired by ``seq`` (the same request of the same seeded sequence on both paths, so payload sizes
match), and the confidence interval comes from a **paired bootstrap**: resample pairs with
replacement, recompute the difference of the two quantiles, take the 2.5 / 97.5 percentiles of the
resampled differences. Resampling *pairs* keeps the per-request payload correlation, which makes the
interval narrower than two independent resamples when payload size drives latency. The generator is
seeded, so a report is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Bootstrap resamples. The CI bounds are the 2.5/97.5 % points of this many resampled
#: differences; at 1000 their own Monte-Carlo error is about ±0.3 percentile points of the
#: resampling distribution, small against the interval itself.
BOOTSTRAP_RESAMPLES = 1000
#: At least this many requests *above* a tail percentile before it is estimated: one or two
#: samples above the cut make "p99" the maximum of a handful of requests, not a percentile.
MIN_TAIL_REQUESTS = 5
#: Pairing is used when at least this many requests pair up, and at least this share of the
#: smaller sample (below, the pairs are a biased slice of the window: its start or its end).
MIN_PAIRS = 20
PAIRED_SHARE = 0.5
#: The tail percentiles tried, most demanding first (the target is p99; fewer requests fall back).
TAIL_PERCENTILES: tuple[tuple[str, float], ...] = (("p99", 99.0), ("p95", 95.0), ("p90", 90.0))


def tail_percentile(n: int) -> tuple[str, float]:
    """The most demanding tail percentile that ``n`` samples support (see MIN_TAIL_REQUESTS)."""
    for label, q in TAIL_PERCENTILES:
        if n * (1.0 - q / 100.0) >= MIN_TAIL_REQUESTS:
            return label, q
    return TAIL_PERCENTILES[-1]


def pair_by_seq(
    seq_a: IntArray, values_a: FloatArray, seq_b: IntArray, values_b: FloatArray
) -> tuple[IntArray, FloatArray, FloatArray]:
    """The sequence numbers present on both sides with their two values, sorted by ``seq``."""
    common, ia, ib = np.intersect1d(
        np.asarray(seq_a, np.int64), np.asarray(seq_b, np.int64), return_indices=True
    )
    return (
        common.astype(np.int64),
        np.asarray(values_a, np.float64)[ia],
        np.asarray(values_b, np.float64)[ib],
    )


@dataclass(frozen=True)
class QuantileDelta:
    """``Q_q(outer) − Q_q(inner)`` with its paired-bootstrap 95 % interval, in ms."""

    q: float
    delta_ms: float
    ci_low_ms: float
    ci_high_ms: float
    pairs: int

    def clears(self, margin_ms: float) -> bool:
        """True when the whole interval lies above ``margin_ms``."""
        return self.ci_low_ms > margin_ms


def unpaired_quantile_delta(
    inner_ms: FloatArray,
    outer_ms: FloatArray,
    q: float,
    *,
    seed: int = 0,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> QuantileDelta:
    """Like :func:`paired_quantile_delta` for samples that cannot be paired: each side is
    resampled on its own. ``pairs`` is then the smaller sample's size."""
    inner = np.asarray(inner_ms, np.float64)
    outer = np.asarray(outer_ms, np.float64)
    if inner.size < 2 or outer.size < 2:
        raise ValueError("need at least two samples on each side")
    point = float(np.percentile(outer, q) - np.percentile(inner, q))
    rng = np.random.default_rng(seed)
    qi = np.percentile(inner[rng.integers(0, inner.size, (resamples, inner.size))], q, axis=1)
    qo = np.percentile(outer[rng.integers(0, outer.size, (resamples, outer.size))], q, axis=1)
    low, high = np.percentile(qo - qi, [2.5, 97.5])
    return QuantileDelta(q, point, float(low), float(high), int(min(inner.size, outer.size)))


def paired_quantile_delta(
    inner_ms: FloatArray,
    outer_ms: FloatArray,
    q: float,
    *,
    seed: int = 0,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> QuantileDelta:
    """Difference of the ``q``-th percentiles of paired samples, with a bootstrap CI.

    ``inner_ms[i]`` and ``outer_ms[i]`` are the same request on the two paths. Raises
    ``ValueError`` on fewer than two pairs.
    """
    inner = np.asarray(inner_ms, np.float64)
    outer = np.asarray(outer_ms, np.float64)
    if inner.shape != outer.shape:
        raise ValueError("paired arrays must have the same length")
    n = inner.size
    if n < 2:
        raise ValueError("need at least two pairs")
    point = float(np.percentile(outer, q) - np.percentile(inner, q))
    rng = np.random.default_rng(seed)
    # Chunks bound the index matrix to ~4 M entries whatever n is.
    chunk = max(1, min(resamples, 4_000_000 // n))
    diffs: list[FloatArray] = []
    done = 0
    while done < resamples:
        b = min(chunk, resamples - done)
        idx = rng.integers(0, n, size=(b, n))
        d = np.percentile(outer[idx], q, axis=1) - np.percentile(inner[idx], q, axis=1)
        diffs.append(np.asarray(d, np.float64))
        done += b
    all_d = np.concatenate(diffs)
    low, high = np.percentile(all_d, [2.5, 97.5])
    return QuantileDelta(q, point, float(low), float(high), n)


def hop_delta_entry(
    hop: str,
    inner_name: str,
    outer_name: str,
    inner: tuple[IntArray, FloatArray],
    outer: tuple[IntArray, FloatArray],
    *,
    seed: int = 0,
) -> dict[str, Any] | None:
    """The report's ``hop_deltas[]`` entry for one hop; None with fewer than two pairs.

    ``inner``/``outer`` are ``(seq, latency_ms)`` of completed requests on each path.
    """
    _, a, b = pair_by_seq(inner[0], inner[1], outer[0], outer[1])
    smaller = min(inner[1].size, outer[1].size)
    paired = a.size >= max(MIN_PAIRS, PAIRED_SHARE * smaller)
    if paired:
        label, q = tail_percentile(int(a.size))
        mid = paired_quantile_delta(a, b, 50.0, seed=seed)
        tail = paired_quantile_delta(a, b, q, seed=seed + 1)
    else:
        # Closed-loop steps number requests per path as they go: different paths cover different
        # seq ranges, so few pairs exist. Compare the two samples as they are.
        a, b = np.asarray(inner[1], np.float64), np.asarray(outer[1], np.float64)
        if a.size < 2 or b.size < 2:
            return None
        label, q = tail_percentile(int(smaller))
        mid = unpaired_quantile_delta(a, b, 50.0, seed=seed)
        tail = unpaired_quantile_delta(a, b, q, seed=seed + 1)
    return {
        "hop": hop,
        "from": inner_name,
        "to": outer_name,
        "paired": paired,
        "pairs": int(mid.pairs),
        "p50_ms": round(mid.delta_ms, 3),
        "p50_ci_ms": [round(mid.ci_low_ms, 3), round(mid.ci_high_ms, 3)],
        "tail_ms": round(tail.delta_ms, 3),
        "tail_ci_ms": [round(tail.ci_low_ms, 3), round(tail.ci_high_ms, 3)],
        "tail_label": label,
        "inner_p50_ms": round(float(np.percentile(a, 50)), 3),
        "inner_tail_ms": round(float(np.percentile(a, q)), 3),
    }
