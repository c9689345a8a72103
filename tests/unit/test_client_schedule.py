"""Schedule slip, lateness and pool wait from per-request records; TTFB overhead vs the wire."""

from __future__ import annotations

import numpy as np

from pathprobe.model.records import empty_records
from pathprobe.probes.client import client_overhead_ms, client_schedule_summary

MS = 1_000_000


def _records(gap_ms: float, slips_ms: list[float], waits_ms: list[float] | None = None):
    n = len(slips_ms)
    rec = empty_records(n)
    rec["seq"] = np.arange(n)
    rec["intended_ns"] = 10**12 + (np.arange(n) * gap_ms * MS).astype(np.int64)
    rec["actual_ns"] = rec["intended_ns"] + (np.array(slips_ms) * MS).astype(np.int64)
    if waits_ms is not None:
        rec["conn_wait_ns"] = (np.array(waits_ms) * MS).astype(np.int64)
    return rec


def test_threshold_is_the_gap_clamped() -> None:
    # 2,000 requests/s: gap 0.5 ms → the 1 ms floor.
    assert client_schedule_summary(_records(0.5, [0.0] * 10))["late_threshold_ms"] == 1.0
    # 200 requests/s: gap 5 ms → 5 ms.
    assert client_schedule_summary(_records(5.0, [0.0] * 10))["late_threshold_ms"] == 5.0
    # 10 requests/s: gap 100 ms → capped at 10 ms.
    assert client_schedule_summary(_records(100.0, [0.0] * 10))["late_threshold_ms"] == 10.0


def test_slip_and_late_fraction() -> None:
    s = client_schedule_summary(_records(5.0, [0.1, 0.2, 0.3, 6.0, 50.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    assert s["requests"] == 10
    assert s["late_fraction"] == 0.2  # 6 ms and 50 ms exceed the 5 ms gap
    assert s["slip_ms"]["max"] == 50.0
    assert s["slip_ms"]["count"] == 10
    assert abs(s["mean_gap_ms"] - 5.0) < 1e-9


def test_unsent_requests_and_empty_input() -> None:
    rec = _records(1.0, [0.0, 3.0, 0.0])
    rec["actual_ns"][2] = 0  # never sent (interrupted)
    s = client_schedule_summary(rec)
    assert s["slip_ms"]["count"] == 2
    assert s["late_fraction"] == 0.5
    empty = client_schedule_summary(empty_records(0))
    assert empty["late_fraction"] == 0.0
    assert empty["slip_ms"]["p99"] is None
    assert empty["pool_wait_ms"]["count"] == 0


def test_pool_wait_ignores_unmeasured() -> None:
    s = client_schedule_summary(_records(1.0, [0.0] * 4, waits_ms=[0.0, 2.0, 4.0, -1e-6]))
    assert s["pool_wait_ms"]["count"] == 3
    assert s["pool_wait_ms"]["max"] == 4.0


def test_overhead_uses_reused_connections_only() -> None:
    rec = _records(1.0, [0.0] * 4)
    rec["ttfb_ns"] = np.array([12, 12, 12, 90]) * MS
    rec["connect_ns"] = np.array([-1, -1, -1, 5 * MS])
    out = client_overhead_ms(rec, {"p50": 10.0, "p90": 10.5, "p99": None})
    assert out["app_ttfb_ms"]["count"] == 3
    assert out["overhead_p50_ms"] == 2.0
    assert out["overhead_p90_ms"] == 1.5
    assert out["overhead_p99_ms"] is None
