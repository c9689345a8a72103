"""The knee of a path: the first offered rate where the service stops keeping up (design.md §4).

A step is past the knee when it achieved less than :data:`ACHIEVED_FRACTION` of what was offered,
or when its p99 "blew up" against the lowest step's: more than :data:`P99_BLOWUP_FACTOR` times it
*and* at least :data:`P99_BLOWUP_MIN_MS` above it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: design.md §4: achieved < 0.95 × offered. Below 5 % the shortfall is within what a finite window
#: loses at its edges (requests still in flight when the window closes are not yet completed).
ACHIEVED_FRACTION = 0.95
#: p99 three times the lowest step's: queueing theory's M/M/1 p99 at ρ = 0.67 is already ~3× its
#: value at low load, so 3× marks the region where waiting, not work, dominates the tail.
P99_BLOWUP_FACTOR = 3.0
#: ...and at least this many ms more, so a 1 ms → 3 ms wobble of a fast service is no knee.
P99_BLOWUP_MIN_MS = 20.0


def find_knee(steps: Sequence[Mapping[str, Any]]) -> float | None:
    """The offered rate of the first step past the knee, or None (closed loop, or no knee)."""
    open_loop = [s for s in steps if s.get("offered_rps") is not None]
    if not open_loop:
        return None
    ordered = sorted(open_loop, key=lambda s: float(s["offered_rps"]))
    base = _p99(ordered[0])
    for step in ordered:
        offered = float(step["offered_rps"])
        achieved = float(step.get("achieved_rps") or 0.0)
        if offered > 0 and achieved < ACHIEVED_FRACTION * offered:
            return offered
        p99 = _p99(step)
        if (
            base is not None
            and p99 is not None
            and step is not ordered[0]
            and p99 > P99_BLOWUP_FACTOR * base
            and p99 - base >= P99_BLOWUP_MIN_MS
        ):
            return offered
    return None


def _p99(step: Mapping[str, Any]) -> float | None:
    value = (step.get("latency_ms") or {}).get("p99")
    return None if value is None else float(value)
