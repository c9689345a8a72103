"""The client gate: slip, loop lag and CPU trip it; pool wait alone does not."""

from __future__ import annotations

import numpy as np

from pathprobe.analysis.client_gate import client_gate, one_stall, window_gate
from pathprobe.model.records import empty_records


def records(n: int, gap_ms: float, slip_ms: np.ndarray, pool_ms: float = 0.0) -> np.ndarray:
    rec = empty_records(n)
    rec["seq"] = np.arange(n)
    rec["intended_ns"] = 10**12 + (np.arange(n) * gap_ms * 1e6).astype(np.int64)
    rec["actual_ns"] = rec["intended_ns"] + (slip_ms * 1e6).astype(np.int64)
    rec["conn_wait_ns"] = int(pool_ms * 1e6)
    return rec


def test_on_time_client_passes() -> None:
    reasons, numbers = window_gate(records(500, 20, np.full(500, 0.3)), 50.0, None, None)
    assert reasons == []
    assert numbers["late_fraction"] == 0.0


def test_slipping_client_trips() -> None:
    slip = np.where(np.arange(500) % 4 == 0, 40.0, 0.2)
    reasons, _ = window_gate(records(500, 20, slip), 80.0, None, None)
    assert reasons
    assert "behind schedule" in reasons[0]


def test_slip_that_is_tiny_against_the_latency_does_not_trip() -> None:
    slip = np.where(np.arange(500) % 4 == 0, 3.0, 0.2)  # late by > 1 ms gap, but p99 3 ms
    reasons, _ = window_gate(records(500, 1, slip), 900.0, None, None)
    assert reasons == []


def test_pool_wait_alone_is_not_client_evidence() -> None:
    reasons, _ = window_gate(records(500, 20, np.zeros(500), pool_ms=400.0), 900.0, None, None)
    assert reasons == []


def test_loop_lag_and_cpu_trip() -> None:
    lag = np.full(100, 35_000_000, np.int64)
    reasons, _ = window_gate(records(10, 20, np.zeros(10)), 50.0, lag, None)
    assert any("loop lagged" in r for r in reasons)
    cpu = {"busiest_process_cpu_percent": {"mean": 97.0}}
    reasons, _ = window_gate(records(10, 20, np.zeros(10)), 50.0, None, cpu)
    assert any("of a core" in r for r in reasons)


def test_gate_over_windows_names_the_window() -> None:
    ok = records(100, 20, np.zeros(100))
    bad = records(100, 20, np.full(100, 50.0))
    gate = client_gate([("direct", 0, ok, 30.0, None, None), ("lb", 1, bad, 90.0, None, None)])
    assert gate.tripped
    assert gate.reasons[0].startswith("lb, step 2")
    calm = client_gate([("direct", 0, ok, 30.0, None, None)])
    assert not calm.tripped
    assert calm.passed


def test_loop_lag_small_against_a_slow_service_does_not_trip() -> None:
    lag = np.full(100, 30_000_000, np.int64)  # 30 ms lag under a 900 ms p50
    reasons, _ = window_gate(records(10, 20, np.zeros(10)), 1200.0, lag, None, 900.0)
    assert reasons == []


def stall(n: int, gap_ms: float, at: int, stall_ms: float) -> np.ndarray:
    """Slips of one stall of ``stall_ms`` at request ``at``: every request due while the client
    stood still leaves when it wakes."""
    due = np.arange(n) * gap_ms
    start, end = at * gap_ms, at * gap_ms + stall_ms
    return np.where((due >= start) & (due < end), end - due, 0.2)


def test_one_stall_is_told_from_a_client_that_cannot_keep_up() -> None:
    # 160 requests at 20/s, one 780 ms stall: 16 of them (10 %) late, the loop on time at p90.
    slips = stall(160, 50, 140, 780.0)
    lag_ns = np.full(800, 1_000_000, dtype=np.int64)
    lag_ns[-100] = 780_000_000
    reasons, numbers = window_gate(records(160, 50, slips), 730.0, lag_ns, None, 12.0)
    assert reasons
    assert "behind schedule" in reasons[0]
    assert one_stall(reasons, numbers)
    # The same lateness from a loop that is late one tick in five is a starved client.
    starved_lag = np.where(np.arange(800) % 5 == 0, 40_000_000, 1_000_000).astype(np.int64)
    reasons, numbers = window_gate(records(160, 50, slips), 730.0, starved_lag, None, 12.0)
    assert not one_stall(reasons, numbers)
    # ... and so is one whose process spends a whole core.
    busy = {"busiest_process_cpu_percent": {"mean": 97.0}}
    reasons, numbers = window_gate(records(160, 50, slips), 730.0, lag_ns, busy, 12.0)
    assert not one_stall(reasons, numbers)


def test_a_window_that_passed_is_no_stall() -> None:
    reasons, numbers = window_gate(records(500, 20, np.full(500, 0.3)), 50.0, None, None)
    assert not one_stall(reasons, numbers)
