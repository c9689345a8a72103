"""The server split from Triton's statistics extension (issue 16), end to end.

A real grpc.aio server (tests/servers/grpc_infer.py) keeps Triton-style ModelStatistics and, like
Triton, sends no Server-Timing; pathprobe diagnoses it without a profile (Triton is C++: py-spy
sees nothing in it), so the statistics are the only server split there is. Magnitudes are
predicted from the server's configuration, not read back from the report: a server that runs
``slots`` requests at a time, each ``delay`` long, under N closed-loop users, holds each request
N / slots × delay in all (Little's law), of which all but the delay is queue.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_env
from tests.servers.process import serve

pytestmark = pytest.mark.integration

PATHPROBE = str(Path(sys.executable).parent / "pathprobe")
REQUEST = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.5] * 4}]}


def diagnose(tmp_path: Path, port: int, *load: str) -> dict[str, Any]:
    body = tmp_path / "request.json"
    body.write_text(json.dumps(REQUEST))
    out = tmp_path / "out"
    argv = [PATHPROBE, "diagnose", "--path", f"direct=grpc://127.0.0.1:{port}/models/m",
            "--body-file", str(body), *load, "--duration", "3", "--warmup", "0.5",
            "--target-p99", "60", "--no-profile", "--no-calibrate", "--out", str(out)]  # fmt: skip
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=180, env=free_env(), check=False
    )
    assert done.returncode in (0, 1), done.stderr  # 1: targets missed
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def p50_part(report: dict[str, Any], stage: str) -> float:
    return float(report["verdict"]["attribution"]["direct"]["p50"].get(stage, 0.0))


def test_a_queue_in_the_model_scheduler_is_server_concurrency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users, delay_ms = 6, 20.0
    monkeypatch.setenv("GRPC_INFER_SLOTS", "1")
    monkeypatch.setenv("GRPC_INFER_TIMING", "0")
    record = tmp_path / "received.json"
    with serve("tests.servers.grpc_infer", str(delay_ms / 1e3), str(record), cpu=1) as (port, _):
        report = diagnose(tmp_path, port, "--concurrency", str(users), "--connections", "6")
    verdict = report["verdict"]
    assert verdict["bottleneck"] == "server_concurrency", verdict["summary"]
    # One at a time: each request waits for the users - 1 ahead of it.
    assert p50_part(report, "server_concurrency") == pytest.approx((users - 1) * delay_ms, rel=0.25)
    assert p50_part(report, "inference") == pytest.approx(delay_ms, rel=0.25)
    assert any("statistics" in line for line in verdict["ranking"][0]["evidence"])


def test_time_in_the_model_is_inference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    delay_ms = 80.0
    monkeypatch.setenv("GRPC_INFER_TIMING", "0")
    record = tmp_path / "received.json"
    with serve("tests.servers.grpc_infer", str(delay_ms / 1e3), str(record), cpu=1) as (port, _):
        report = diagnose(tmp_path, port, "--rate", "10", "--connections", "4")
    verdict = report["verdict"]
    assert verdict["bottleneck"] == "inference", verdict["summary"]
    assert p50_part(report, "inference") == pytest.approx(delay_ms, rel=0.25)
    assert p50_part(report, "server_concurrency") < 0.1 * delay_ms
