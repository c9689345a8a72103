"""The late-request rule (pathprobe.model.lateness) and its three callers agreeing on it."""

from __future__ import annotations

import numpy as np
import pytest

from pathprobe.analysis.client_gate import window_gate
from pathprobe.model.lateness import LATE_CAP_MS, LATE_FLOOR_MS, lateness, schedule_gap_ms
from pathprobe.model.records import empty_records
from pathprobe.probes.client import client_schedule_summary

MS = 1_000_000


def _records(gap_ms: float, slips_ms: list[float]) -> np.ndarray:
    n = len(slips_ms)
    rec = empty_records(n)
    rec["seq"] = np.arange(n)
    rec["intended_ns"] = 10**12 + (np.arange(n) * gap_ms * MS).astype(np.int64)
    rec["actual_ns"] = rec["intended_ns"] + (np.array(slips_ms) * MS).astype(np.int64)
    return rec


def test_the_threshold_is_one_schedule_gap_clamped() -> None:
    for gap, threshold in ((0.5, LATE_FLOOR_MS), (5.0, 5.0), (100.0, LATE_CAP_MS)):
        rec = _records(gap, [0.0] * 10)
        assert lateness(rec["intended_ns"], rec["actual_ns"]).threshold_ms == threshold


def test_a_thinned_window_corrects_the_gap_by_its_stride() -> None:
    rec = _records(8.0, [0.0] * 10)  # one in 4 of a schedule with 2 ms gaps
    assert schedule_gap_ms(rec["intended_ns"]) == pytest.approx(8.0)
    assert schedule_gap_ms(rec["intended_ns"], stride=4) == pytest.approx(2.0)
    assert schedule_gap_ms(rec["intended_ns"][:1]) is None


def test_only_started_requests_count() -> None:
    rec = _records(1.0, [0.0, 3.0, 0.0])
    rec["actual_ns"][2] = 0  # never sent (interrupted)
    late = lateness(rec["intended_ns"], rec["actual_ns"])
    assert late.slip_ms.tolist() == [0.0, 3.0]
    assert late.late_fraction == 0.5
    empty = empty_records(0)
    assert lateness(empty["intended_ns"], empty["actual_ns"]).late_fraction == 0.0


@pytest.mark.parametrize("stride", [1, 4])
def test_the_gate_and_the_client_probe_give_the_same_numbers(stride: int) -> None:
    # 8 ms between kept records: at stride 4 the schedule's gap is 2 ms, so 3 ms slips are late.
    rec = _records(8.0, [0.1, 3.0, 0.2, 3.0, 9.0, 0.0, 0.0, 0.0, 0.0, 0.0] * 10)
    _reasons, numbers = window_gate(rec, None, None, None, stride=stride)
    summary = client_schedule_summary(rec, stride)
    assert numbers["late_threshold_ms"] == summary["late_threshold_ms"]
    assert numbers["late_fraction"] == summary["late_fraction"]
    assert summary["late_fraction"] == (0.1 if stride == 1 else 0.3)
