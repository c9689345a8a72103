"""The client gate: slip, loop lag and CPU trip it; pool wait alone does not."""

from __future__ import annotations

import numpy as np

from pathprobe.analysis.client_gate import client_gate, window_gate
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
