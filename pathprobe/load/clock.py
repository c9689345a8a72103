"""Clocks of load workers on other machines: the offset to the driver, and moving results over.

Every timestamp in a :class:`~pathprobe.model.results.StepResult` is ``time.monotonic_ns()`` of the
process that took it. On one host that clock is shared (CLOCK_MONOTONIC), so local workers need
nothing here. A worker on another machine has its own: the driver measures the offset NTP-style
(:func:`estimate_offset`), converts the agreed start into the worker's clock, and moves the
worker's result onto its own clock afterwards (:func:`shift_result`), so probe windows and the
merged timeline line up. Latency is never affected: it is a difference of two readings of the
worker's own clock (end − intended send).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from pathprobe.model.results import StepResult, Tally

#: Columns of a record that hold instants (every other ``*_ns`` column is a duration).
INSTANT_COLUMNS = ("intended_ns", "actual_ns", "end_ns")


@dataclass(frozen=True)
class ClockOffset:
    """``remote clock − local clock`` and how well it is known.

    ``offset_ns``: a remote reading ``r`` corresponds to local ``r − offset_ns``.
    ``uncertainty_ns``: the true offset lies within ``offset_ns ± uncertainty_ns`` (half the
    round trip of the sample it came from: the remote reading happened somewhere inside it).
    """

    offset_ns: int
    uncertainty_ns: int
    rtt_ns: int
    samples: int

    def to_remote(self, local_ns: int) -> int:
        return local_ns + self.offset_ns

    def as_json(self) -> dict[str, float | int]:
        return {
            "clock_offset_ms": round(self.offset_ns / 1e6, 4),
            "clock_uncertainty_ms": round(self.uncertainty_ns / 1e6, 4),
            "clock_samples": self.samples,
        }


#: The offset of a worker known to share the driver's clock (same host: same boot id).
SHARED_CLOCK = ClockOffset(offset_ns=0, uncertainty_ns=0, rtt_ns=0, samples=0)


def estimate_offset(samples: Sequence[tuple[int, int, int]]) -> ClockOffset:
    """The offset from round trips ``(t0, remote, t1)``: local send, remote reading, local reply.

    The remote reading was taken between ``t0`` and ``t1``; assuming it sits in the middle, the
    offset is ``remote − (t0 + t1) / 2``, off by at most half the round trip. The sample with the
    shortest round trip has the tightest bound, so it alone is used (as NTP's clock filter does).
    """
    valid = [s for s in samples if s[2] >= s[0]]
    if not valid:
        raise ValueError("no round trip to estimate a clock offset from")
    t0, remote, t1 = min(valid, key=lambda s: s[2] - s[0])
    rtt = t1 - t0
    return ClockOffset(
        offset_ns=remote - (t0 + t1) // 2,
        uncertainty_ns=(rtt + 1) // 2,
        rtt_ns=rtt,
        samples=len(valid),
    )


def shift_result(result: StepResult, delta_ns: int) -> StepResult:
    """``result`` with every instant moved by ``delta_ns`` (durations and counts unchanged).

    To bring a worker's result onto the driver's clock pass ``-offset_ns``. Absent instants (0:
    a request never sent) stay absent. The records are copied (a result received from another
    process may be backed by read-only memory).
    """
    if delta_ns == 0:
        return result
    records = result.records.copy()
    for column in INSTANT_COLUMNS:
        present = records[column] > 0
        records[column][present] += delta_ns
    tally = result.tally
    if tally is not None:
        tally = _shifted_tally(tally, delta_ns)
    return dataclasses.replace(
        result,
        records=records,
        start_ns=result.start_ns + delta_ns,
        measured_start_ns=result.measured_start_ns + delta_ns,
        measured_end_ns=result.measured_end_ns + delta_ns,
        tally=tally,
    )


def _shifted_tally(tally: Tally, delta_ns: int) -> Tally:
    # The tally's one instant; its counts were taken against the worker's own window bounds,
    # which is right: the window is the same interval on either clock.
    copy = Tally()
    copy.merge(tally)
    if tally.last_end_ns:
        copy.last_end_ns = tally.last_end_ns + delta_ns
    return copy
