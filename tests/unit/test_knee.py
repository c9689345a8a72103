"""The knee: first offered rate where the service stops keeping up."""

from __future__ import annotations

from pathprobe.analysis.knee import find_knee


def step(offered: float | None, achieved: float, p99: float) -> dict:
    return {"offered_rps": offered, "achieved_rps": achieved, "latency_ms": {"p99": p99}}


def test_achieved_below_offered_is_the_knee() -> None:
    assert find_knee([step(10, 10, 20), step(20, 19.9, 22), step(40, 30, 25)]) == 40


def test_p99_blow_up_is_the_knee() -> None:
    assert find_knee([step(10, 10, 20), step(20, 20, 30), step(40, 40, 200)]) == 40


def test_small_absolute_rise_is_not_a_knee() -> None:
    # 1 ms → 5 ms is 5× but only 4 ms: a fast service wobbling, not a knee.
    assert find_knee([step(10, 10, 1), step(20, 20, 5)]) is None


def test_closed_loop_has_no_knee_and_order_does_not_matter() -> None:
    assert find_knee([step(None, 50, 20)]) is None
    assert find_knee([step(40, 30, 25), step(10, 10, 20)]) == 40
