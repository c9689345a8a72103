"""The py-spy sample budget: who is busy, the busy rate, and how mixed-rate segments count."""

from __future__ import annotations

import math

import pytest

from pathprobe.probes.sample_budget import (
    MAX_RATE_HZ,
    MIN_RATE_HZ,
    SAMPLE_BUDGET_HZ,
    SCOUT_RATE_HZ,
    Segment,
    combine,
    is_busy,
    needs_restart,
    plan,
)


def test_a_process_is_busy_after_two_ticks_and_one_percent_of_the_window() -> None:
    assert not is_busy(0.0, 1.0)
    assert not is_busy(0.01, 1.0)  # one 10 ms tick: housekeeping
    assert is_busy(0.02, 1.0)
    assert not is_busy(0.05, 10.0)  # a heartbeat over a long window stays under 1 %
    assert is_busy(0.15, 10.0)


def test_busy_processes_share_what_the_scouts_leave() -> None:
    # Two replicas of master + 4 workers, one replica loaded: 6 scouts at 2 Hz, 4 busy share 88.
    assert plan(10, 4) == (SAMPLE_BUDGET_HZ - 6 * SCOUT_RATE_HZ) // 4 == 22
    # Busy rates plus scouts stay within the budget while the rates are within their bounds.
    for processes in range(1, 20):
        for busy in range(1, processes + 1):
            rate = plan(processes, busy)
            assert MIN_RATE_HZ <= rate <= MAX_RATE_HZ
            if rate > MIN_RATE_HZ:
                assert busy * rate + (processes - busy) * SCOUT_RATE_HZ <= SAMPLE_BUDGET_HZ
    assert plan(1, 1) == MAX_RATE_HZ  # a lone worker: as fast as py-spy is accurate
    assert plan(64, 64) == MIN_RATE_HZ


def test_restarts_only_for_a_material_change() -> None:
    assert needs_restart(SCOUT_RATE_HZ, 22)
    assert not needs_restart(25, 20)  # a fifth busy worker does not restart the other four
    assert needs_restart(82, 22)
    assert not needs_restart(22, 22)


def test_one_rate_counts_plainly() -> None:
    out = combine([Segment(20, {("a",): 30, ("b",): 10}), Segment(20, {("a",): 5})])
    assert out.raw == 45
    assert out.dropped == 0
    assert math.isclose(out.effective, 45)
    assert out.stacks == pytest.approx({("a",): 35, ("b",): 10})


def test_scouts_are_left_out_once_any_process_was_promoted() -> None:
    # A promoted process's scout segment, and a stray sample of a process that never worked:
    # kept at weight 11, the two would cut 40 busy samples to an effective 14.
    out = combine(
        [
            Segment(SCOUT_RATE_HZ, {("a",): 1}, scout=True),
            Segment(SCOUT_RATE_HZ, {("master",): 1}, scout=True),
            Segment(22, {("b",): 40}),
        ]
    )
    assert out.dropped == 2
    assert out.raw == 40
    assert out.stacks == pytest.approx({("b",): 40})


def test_mixed_rates_are_weighted_by_time_and_counted_as_effective_samples() -> None:
    # 50 samples at 50 Hz (1 s of stage a) and 10 at 10 Hz (1 s of stage b): equal time.
    out = combine([Segment(50, {("a",): 50}), Segment(10, {("b",): 10})])
    assert out.stacks[("a",)] == pytest.approx(out.stacks[("b",)])
    # Kish: (Σw)² / Σw² with w = 1/rate: (1 + 1)² / (50/2500 + 10/100) = 4 / 0.12.
    assert out.effective == pytest.approx(4 / 0.12)
    assert sum(out.stacks.values()) == pytest.approx(out.effective)
    assert out.effective < out.raw  # unequal weights are worth fewer samples


def test_with_nobody_promoted_the_scouts_count_plainly() -> None:
    out = combine([Segment(SCOUT_RATE_HZ, {("a",): 3}, scout=True)] * 2)
    assert out.stacks == pytest.approx({("a",): 6})
    assert out.effective == pytest.approx(6)


def test_nothing_counted() -> None:
    out = combine([])
    assert out.effective == 0
    assert out.stacks == {}
    assert out.raw == 0


def test_a_busy_recording_that_got_nothing_keeps_the_scouts() -> None:
    # py-spy could not attach at the busy rate: the scouts are all the profile there is.
    out = combine([Segment(SCOUT_RATE_HZ, {("a",): 4}, scout=True), Segment(22, {})])
    assert out.stacks == pytest.approx({("a",): 4})
    assert out.dropped == 0
