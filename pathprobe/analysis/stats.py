"""Percentiles and distribution summaries (pure, numpy in, plain numbers out)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
#: The percentiles every latency summary carries (design.md §5 plus p99.9).
LATENCY_PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
)


def percentile_summary(values: npt.ArrayLike) -> dict[str, float | None]:
    """``{"p50", "p90", "p99", "p99.9", "max"}`` of ``values``; all ``None`` when empty.

    Percentiles use the "higher" method (an observed value at or above the rank), the usual
    choice for latency: a reported p99 is a latency some request really had.
    """
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    keys = [k for k, _ in LATENCY_PERCENTILES] + ["max"]
    if arr.size == 0:
        return dict.fromkeys(keys)
    qs = np.percentile(arr, [q for _, q in LATENCY_PERCENTILES], method="higher")
    out: dict[str, float | None] = {
        k: round(float(v), 4) for (k, _), v in zip(LATENCY_PERCENTILES, qs, strict=True)
    }
    out["max"] = round(float(arr.max()), 4)
    return out


def quick_summary(
    values: npt.ArrayLike, keys: Sequence[str] = ("p50", "p99", "max")
) -> dict[str, float | None]:
    """A smaller summary (subset of :func:`percentile_summary` plus ``mean`` and ``count``)."""
    full = percentile_summary(values)
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    out: dict[str, float | None] = {k: full[k] for k in keys}
    out["mean"] = round(float(arr.mean()), 4) if arr.size else None
    out["count"] = int(arr.size)
    return out


def log_histogram(values_ms: npt.ArrayLike, bins_per_decade: int = 20) -> dict[str, list[float]]:
    """Counts in log-spaced bins covering the data (for a latency distribution on a log scale)."""
    arr = np.asarray(values_ms, dtype=np.float64)
    arr = arr[np.isfinite(arr) & (arr > 0)]
    if arr.size == 0:
        return {"edges_ms": [], "counts": []}
    low = np.floor(np.log10(arr.min()) * bins_per_decade) / bins_per_decade
    high = np.ceil(np.log10(arr.max()) * bins_per_decade) / bins_per_decade
    if high <= low:
        high = low + 1.0 / bins_per_decade
    edges = 10 ** np.arange(low, high + 0.5 / bins_per_decade, 1.0 / bins_per_decade)
    counts, edges = np.histogram(arr, bins=edges)
    return {
        "edges_ms": [round(float(e), 4) for e in edges],
        "counts": [int(c) for c in counts],
    }


#: Two-sided 95 % normal quantile: every interval pathprobe draws (hop deltas, profile shares) is
#: at the same confidence, so that stages clear their bars on equal terms.
Z_95 = 1.959963984540054


def wilson_interval(successes: float, n: float, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n``; (0, 1) when ``n`` is 0.

    Unlike the normal approximation it stays inside [0, 1] and is honest for small ``n`` and for
    shares near 0 or 1 (12 of 13 samples: 0.67…0.99; 7 of 13: 0.29…0.77).
    """
    if n <= 0:
        return 0.0, 1.0
    p = min(max(successes / n, 0.0), 1.0)
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(float(centre - half), 0.0), min(float(centre + half), 1.0)
