"""The request sequence of one step: when each request is due and which payload it carries.

It is a pure function of (profile, step index, seed), generated once and replayed identically on
every path, so paths can be compared request by request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pathprobe.config import Arrival, LoadProfile

NS_PER_S = 1_000_000_000
# Closed-loop steps cannot know their request count in advance; this many payload choices are
# drawn and reused cyclically (each request still gets a fixed, seed-determined payload).
CLOSED_LOOP_PAYLOAD_CHOICES = 65_536


@dataclass(frozen=True)
class StepPlan:
    """One step's request sequence.

    ``offsets_ns[i]`` is when request ``i`` is due, relative to the step's start (open loop);
    ``None`` under closed loop, where each of ``concurrency`` users sends as soon as its last
    response arrived. Requests with ``offsets_ns < warmup_ns`` (open loop) or started before
    ``warmup_ns`` (closed loop) are warm-up and excluded from the numbers.
    """

    step: int
    offered_rps: float | None
    offsets_ns: npt.NDArray[np.int64] | None
    payload_idx: npt.NDArray[np.int32]
    concurrency: int | None
    warmup_ns: int
    duration_ns: int

    @property
    def total_ns(self) -> int:
        return self.warmup_ns + self.duration_ns

    @property
    def first_measured_seq(self) -> int:
        """Open loop: the index of the first measured request."""
        if self.offsets_ns is None:
            return 0
        return int(np.searchsorted(self.offsets_ns, self.warmup_ns, side="left"))

    def payload_for(self, seq: int) -> int:
        if len(self.payload_idx) == 0:
            return -1
        return int(self.payload_idx[seq % len(self.payload_idx)])


def arrival_offsets_ns(
    rate_rps: float, span_ns: int, arrival: Arrival, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """Due times in ``[0, span_ns)`` for an open-loop rate.

    Uniform: evenly spaced, starting at 0. Poisson: exponential gaps with the same mean.
    """
    gap_ns = NS_PER_S / rate_rps
    if arrival == "uniform":
        count = int(np.ceil(span_ns / gap_ns - 1e-9))
        return np.round(np.arange(count, dtype=np.float64) * gap_ns).astype(np.int64)
    # Draw a few more gaps than the mean needs, then cut at the span.
    expected = span_ns / gap_ns
    draws = int(expected + 6 * np.sqrt(expected) + 16)
    times = np.cumsum(rng.exponential(gap_ns, size=draws)) - 0.0
    times = np.concatenate(([0.0], times[:-1]))
    while times[-1] < span_ns:
        more = times[-1] + np.cumsum(rng.exponential(gap_ns, size=draws))
        times = np.concatenate((times, more))
    return np.round(times[times < span_ns]).astype(np.int64)


def plan_step(profile: LoadProfile, step: int, pool_size: int, cycle: bool) -> StepPlan:
    """The request sequence for step ``step`` of ``profile`` (deterministic in its seed)."""
    rng = np.random.default_rng([profile.seed, step])
    warmup_ns = int(profile.warmup_s * NS_PER_S)
    duration_ns = int(profile.duration_s * NS_PER_S)
    offered = profile.steps[step]
    offsets: npt.NDArray[np.int64] | None = None
    if offered is not None:
        offsets = arrival_offsets_ns(offered, warmup_ns + duration_ns, profile.arrival, rng)
        count = len(offsets)
    else:
        count = CLOSED_LOOP_PAYLOAD_CHOICES
    payload_rng = np.random.default_rng([profile.seed, step, 0x9A71])
    if pool_size == 0:
        payload_idx = np.zeros(0, dtype=np.int32)
    elif cycle:
        payload_idx = (np.arange(count) % pool_size).astype(np.int32)
    else:
        payload_idx = payload_rng.integers(0, pool_size, size=count).astype(np.int32)
    return StepPlan(
        step=step,
        offered_rps=offered,
        offsets_ns=offsets,
        payload_idx=payload_idx,
        concurrency=profile.concurrency,
        warmup_ns=warmup_ns,
        duration_ns=duration_ns,
    )
