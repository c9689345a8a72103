"""Step summaries from synthetic records (no sockets)."""

from __future__ import annotations

import numpy as np

from pathprobe.analysis.steps import achieved_rps, step_summary
from pathprobe.model.records import ErrorKind, empty_records
from pathprobe.model.results import StepResult

MS = 1_000_000
S = 1_000_000_000


def synthetic(n: int = 100, service_ms: float = 10.0, slip_ms: float = 0.0) -> StepResult:
    """``n`` requests 10 ms apart starting at t=1 s (warm-up: the first 10)."""
    recs = empty_records(n)
    recs["seq"] = np.arange(n)
    recs["intended_ns"] = S + np.arange(n) * 10 * MS
    recs["actual_ns"] = recs["intended_ns"] + int(slip_ms * MS)
    recs["conn_wait_ns"] = 0
    recs["end_ns"] = recs["actual_ns"] + int(service_ms * MS)
    recs["status"] = 200
    return StepResult(
        path="direct",
        url="http://x/",
        step=0,
        offered_rps=100.0,
        concurrency=None,
        engine="test",
        records=recs,
        first_measured_seq=10,
        start_ns=S,
        measured_start_ns=S + 100 * MS,
        measured_end_ns=S + 1000 * MS,
    )


def test_latency_counts_from_intended_and_service_from_actual() -> None:
    result = synthetic(slip_ms=5.0)
    summary = step_summary(result, None)
    assert summary["requests"] == 90  # warm-up excluded
    assert summary["latency_ms"]["p50"] == 15.0
    assert summary["service_ms"]["p50"] == 10.0
    assert summary["slip_ms"]["p50"] == 5.0


def test_pool_wait_is_latency_not_service_time() -> None:
    result = synthetic()
    result.records["conn_wait_ns"] = 30 * MS
    result.records["end_ns"] += 30 * MS
    summary = step_summary(result, None)
    assert summary["latency_ms"]["p50"] == 40.0
    assert summary["service_ms"]["p50"] == 10.0
    assert summary["pool_wait_ms"]["p50"] == 30.0


def test_errors_by_kind_and_status_codes() -> None:
    result = synthetic()
    recs = result.records
    recs["status"][20:25] = 503
    recs["status"][30:33] = 0
    recs["error"][30:33] = ErrorKind.TIMEOUT
    recs["error"][40] = ErrorKind.CANCELLED
    recs["status"][40] = 0
    summary = step_summary(result, None)
    assert summary["errors"] == 8
    assert summary["errors_by_kind"] == {"5xx": 5, "timeout": 3}
    assert summary["status_codes"] == {"200": 81, "503": 5}
    assert summary["cancelled"] == 1
    assert summary["requests"] == 89
    assert summary["responses"] == 86


def test_achieved_rps_counts_responses_completed_inside_the_window() -> None:
    result = synthetic(service_ms=10.0)
    # 100 requests 10 ms apart; responses at 1.01 s … 2.0 s; window [1.1 s, 2.0 s] holds 91.
    assert achieved_rps(result) == 91 / 0.9
