"""The server split from Triton's statistics (analysis/model_split.py): pure arithmetic."""

from __future__ import annotations

from typing import Any

import pytest

from pathprobe.analysis.model_split import (
    MIN_STATS_REQUESTS,
    ModelPhases,
    model_phases,
    split_unsplit,
)


def stats(**window: Any) -> dict[str, Any]:
    base = {"path": "direct", "step": 0, "requests": 40, "failed": 0, "queue_ms": 6.0,
            "compute_input_ms": 2.0, "compute_infer_ms": 9.0, "compute_output_ms": 1.0}  # fmt: skip
    return {"available": True, "windows": [{**base, **window}]}


def test_phases_map_onto_stages_and_output_extraction_counts_as_inference() -> None:
    phases = model_phases(stats(), "direct", 0)
    assert phases is not None
    assert phases.stage_ms == {"server_concurrency": 6.0, "preprocessing": 2.0, "inference": 10.0}
    assert phases.total_ms == 18.0
    assert phases.work_ms == 12.0


@pytest.mark.parametrize(
    "model_stats",
    [
        None,
        {"available": False, "windows": []},
        stats(path="proxy"),  # another path's window
        stats(requests=MIN_STATS_REQUESTS - 1),  # too few requests to stand for the window
        stats(requests=None),  # the server restarted: counters went down
        stats(queue_ms=None),
        stats(queue_ms=0.0, compute_input_ms=0.0, compute_infer_ms=0.0, compute_output_ms=0.0),
    ],
)
def test_no_usable_window_gives_no_phases(model_stats: Any) -> None:
    assert model_phases(model_stats, "direct", 0) is None


PHASES = ModelPhases(40, {"server_concurrency": 6.0, "preprocessing": 2.0, "inference": 10.0})


def test_work_is_given_as_measured_and_the_wait_shared_as_the_window_shares_it() -> None:
    # Window: 18 ms of phases against a mean unsplit server time of 22 ms → 4 ms of frontend.
    # A tail request with 52 ms: 12 ms of work, 40 ms of waiting shared 6 : 4.
    split = split_unsplit(52.0, PHASES, window_unsplit_ms=22.0)
    assert split["preprocessing"] == pytest.approx(2.0)
    assert split["inference"] == pytest.approx(10.0)
    assert split["server_concurrency"] == pytest.approx(24.0)
    assert split["server"] == pytest.approx(16.0)
    assert sum(split.values()) == pytest.approx(52.0)


def test_a_set_shorter_than_the_work_scales_the_work_down_and_waits_for_nothing() -> None:
    split = split_unsplit(6.0, PHASES, window_unsplit_ms=22.0)
    assert split == pytest.approx({"preprocessing": 1.0, "inference": 5.0})


def test_without_queue_or_frontend_the_rest_stays_unsplit() -> None:
    no_queue = ModelPhases(40, {"server_concurrency": 0.0, "preprocessing": 2.0, "inference": 10.0})
    split = split_unsplit(20.0, no_queue, window_unsplit_ms=12.0)
    assert split == pytest.approx({"preprocessing": 2.0, "inference": 10.0, "server": 8.0})
    assert split_unsplit(0.0, PHASES, 22.0) == {}
