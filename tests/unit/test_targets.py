"""Judging targets exactly as design.md §5 says."""

from __future__ import annotations

from typing import Any

from pathprobe.analysis.targets import judge
from pathprobe.config import Targets


def step(
    offered: float | None, achieved: float, p99: float, error_rate: float = 0.0
) -> dict[str, Any]:
    return {
        "offered_rps": offered,
        "achieved_rps": achieved,
        "latency_ms": {"p99": p99},
        "error_rate": error_rate,
    }


def test_no_targets_nothing_to_miss() -> None:
    result = judge([step(10, 10, 5000, 0.5)], Targets())
    assert result["targets_met"] is True
    assert result["given"] is False


def test_every_step_must_pass_without_target_rps() -> None:
    targets = Targets(p99_ms=100, error_rate=0.01)
    assert judge([step(10, 10, 90), step(20, 20, 99)], targets)["targets_met"] is True
    missed = judge([step(10, 10, 90), step(20, 20, 150)], targets)
    assert missed["targets_met"] is False
    assert "p99 150.0 ms > target 100 ms" in missed["reasons"][0]
    assert judge([step(10, 10, 90, error_rate=0.02)], targets)["targets_met"] is False


def test_target_rps_needs_a_passing_step_that_reached_it() -> None:
    targets = Targets(p99_ms=100, rps=100)
    # The step above the target may fail: only steps offered <= target-rps must pass.
    met = judge([step(50, 50, 50), step(100, 100, 80), step(150, 120, 900)], targets)
    assert met["targets_met"] is True
    # Offered the target but achieved less: missed.
    short = judge([step(50, 50, 50), step(100, 97, 80)], targets)
    assert short["targets_met"] is False
    assert "no passing step achieved 100" in short["reasons"][-1]
    # A step below the target failing: missed even though a later step reached it.
    low_fail = judge([step(50, 50, 500), step(100, 100, 80)], targets)
    assert low_fail["targets_met"] is False


def test_closed_loop_steps_must_pass_under_target_rps() -> None:
    targets = Targets(p99_ms=100, rps=100)
    assert judge([step(None, 150, 500)], targets)["targets_met"] is False
    assert judge([step(None, 150, 50)], targets)["targets_met"] is True
