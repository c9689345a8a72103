"""The late-request rule, defined once: did a request leave late against its open-loop schedule?

A request is *late* when its schedule slip (actual − intended send) exceeds one mean
inter-arrival gap of the schedule, clamped to [:data:`LATE_FLOOR_MS`, :data:`LATE_CAP_MS`]. Why:
a request that slips by a whole gap leaves after its successor was due — the client is at least
one request behind its own schedule, requests queue *inside the client* and the offered rate is no
longer what was asked. Below 1 ms a slip is indistinguishable from timer granularity (asyncio's
clock resolution and wake-up jitter are of that order, see the calibration floor); above 10 ms a
slip already adds more latency than most services' own p50, so at low rates (100 ms gaps at
10 requests/s) being late by less than a gap is still being late.

Only requests the engine started (``actual_ns > 0``) count. ``stride``: the times given are one in
``stride`` of the schedule's requests (a thinned window, one worker's slice of several), so the
schedule's own gap is ``stride`` times shorter than theirs.

Pure functions over the ``intended_ns``/``actual_ns`` columns of the records; the client gate
(analysis), the client probe and the per-worker accounts (load) all call :func:`lateness`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

LATE_FLOOR_MS = 1.0
LATE_CAP_MS = 10.0


@dataclass(frozen=True)
class Lateness:
    """Slip and lateness of one window's requests."""

    slip_ms: npt.NDArray[np.float64]  # per started request, ms, never negative
    gap_ms: float | None  # the schedule's mean inter-arrival gap; None under two distinct sends
    threshold_ms: float  # the gap clamped to [LATE_FLOOR_MS, LATE_CAP_MS]
    late_fraction: float  # share of started requests whose slip exceeds the threshold


def schedule_gap_ms(intended_ns: npt.NDArray[Any], stride: int = 1) -> float | None:
    """The mean gap between scheduled sends, ms (``None`` without two distinct send times)."""
    intended = np.asarray(intended_ns, dtype=np.int64)
    if intended.size < 2:
        return None
    first, last = int(intended.min()), int(intended.max())
    if last <= first:
        return None
    return (last - first) / (intended.size - 1) / 1e6 / stride


def lateness(
    intended_ns: npt.NDArray[Any], actual_ns: npt.NDArray[Any], stride: int = 1
) -> Lateness:
    """Slip, threshold and late fraction of one window (see the module's docstring)."""
    intended = np.asarray(intended_ns, dtype=np.int64)
    actual = np.asarray(actual_ns, dtype=np.int64)
    sent = actual > 0
    slip = np.maximum((actual[sent] - intended[sent]) / 1e6, 0.0).astype(np.float64)
    gap_ms = schedule_gap_ms(intended, stride)
    threshold_ms = min(max(gap_ms or LATE_FLOOR_MS, LATE_FLOOR_MS), LATE_CAP_MS)
    late = float(np.mean(slip > threshold_ms)) if slip.size else 0.0
    return Lateness(slip, gap_ms, threshold_ms, late)
