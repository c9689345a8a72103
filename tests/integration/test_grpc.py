"""The gRPC engine against a real grpc.aio Open Inference Protocol server (issue 16).

The server (tests/servers/grpc_infer.py) answers ModelInfer after a fixed delay and records what
it received, so the tests check both what pathprobe measured and that its requests were
well-formed. Magnitudes are checked against the server's own delay and against a minimal grpcio
client that times the same server one request at a time (the floor of gRPC on this machine).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from pathprobe.analysis.steps import latency_ms, step_summary
from pathprobe.config import build_config
from pathprobe.grpcproto import grpc_predict_v2_pb2 as pb
from pathprobe.load.engine import EngineOptions
from pathprobe.load.oip import build_grpc_pool
from pathprobe.load.schedule import plan_step
from pathprobe.load.select import build_engine, engine_name, loop_factory
from pathprobe.model.results import StepResult, measured
from tests.conftest import free_env
from tests.helpers.certs import make_tls_files
from tests.servers.process import pinned, serve

pytestmark = pytest.mark.integration

PATHPROBE = str(Path(sys.executable).parent / "pathprobe")
OPTIONS = EngineOptions(capture_headers=("server-timing",), abort_on_error_rate=1.0)
REQUEST = {
    "inputs": [
        {"name": "pixels", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": [0.5] * 48},
        {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["cat"]},
    ]
}
EXPECTED_INPUTS = [["pixels", "FP32", [1, 3, 4, 4]], ["label", "BYTES", [1]]]


def run_engine(url: str, body_file: Path, **raw: Any) -> StepResult:
    config = build_config({"out": "/tmp/unused", "path": {"direct": url},
                           "body_file": str(body_file), **raw})  # fmt: skip
    assert engine_name(config.load, [url]) == "grpc"
    pool = build_grpc_pool(config.load.payload, config.load.seed)
    plan = plan_step(config.load, 0, len(pool), pool.cycle)

    async def go() -> StepResult:
        engine = build_engine("grpc", config.load, pool, OPTIONS)
        return await engine.run_step("direct", url, plan)

    with pinned(0), asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(go())


def request_bytes(url: str, body_file: Path) -> bytes:
    """The engine's serialized request, addressed to model m version 1 as the engine does."""
    config = build_config({"out": "/tmp/unused", "path": {"direct": url},
                           "body_file": str(body_file)})  # fmt: skip
    pool = build_grpc_pool(config.load.payload, 0)
    request = pb.ModelInferRequest.FromString(pool.payloads[0].body)
    request.model_name, request.model_version = "m", "1"
    serialized: bytes = request.SerializeToString()
    return serialized


def paced_client_p50_ms(
    port: int, body: bytes, rate: float, seconds: float, channels: int
) -> float:
    """A bare grpc.aio client at the engine's load: ``rate`` ModelInfer/s on ``channels`` channels.

    Each call is started at its intended time and timed from it, as the engine does, so the
    server's own queueing at that rate is in both medians and only the engines' costs differ.
    """

    async def go() -> float:
        opened = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(channels)]
        infers = [c.unary_unary("/inference.GRPCInferenceService/ModelInfer") for c in opened]
        for infer in infers:  # one call per channel opens its connection before the clock runs
            await infer(body, timeout=5)
        start = time.perf_counter() + 0.05  # not loop.time(): uvloop's ticks in whole ms

        async def one(i: int) -> float:
            intended = start + i / rate
            # Sleep to within 1 ms, then yield until due, as the engine does: the loop's
            # timers round up to whole ms. A spin on the clock, not a wait for an event.
            await asyncio.sleep(max(0.0, intended - time.perf_counter() - 0.001))
            while time.perf_counter() < intended:  # noqa: ASYNC110
                await asyncio.sleep(0)
            await infers[i % channels](body, timeout=5)
            return (time.perf_counter() - intended) * 1000

        times = await asyncio.gather(*(one(i) for i in range(int(rate * seconds))))
        for channel in opened:
            await channel.close()
        return statistics.median(times)

    with pinned(0), asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(go())


def received(record: Path, expect_requests: int) -> dict[str, dict[str, int]]:
    """The server's record once it has counted ``expect_requests`` (it rewrites it every 0.1 s)."""
    deadline = time.monotonic() + 5
    while True:
        data: dict[str, dict[str, int]] = json.loads(record.read_text()) if record.exists() else {}
        if sum(v["requests"] for v in data.values()) >= expect_requests:
            return data
        if time.monotonic() > deadline:
            return data
        time.sleep(0.1)


@pytest.fixture
def body_file(tmp_path: Path) -> Path:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(REQUEST))
    return path


def test_open_loop_200_per_s_against_a_10ms_server(tmp_path: Path, body_file: Path) -> None:
    record = tmp_path / "received.json"
    with serve("tests.servers.grpc_infer", "0.010", str(record), "m", cpu=1) as (port, _pid):
        url = f"grpc://127.0.0.1:{port}/models/m/versions/1"
        request = request_bytes(url, body_file)
        floor_before = paced_client_p50_ms(port, request, 200, 2.0, channels=4)
        result = run_engine(url, body_file, rate=200, duration=5, warmup=1, connections=4)
        floor_after = paced_client_p50_ms(port, request, 200, 2.0, channels=4)
        # Two runs of the bare client: 200/s × 2 s each, plus one call per channel to open it.
        reference_requests = 2 * (int(200 * 2.0) + 4)
        got = received(record, 1200 + reference_requests)
    summary = step_summary(result, None)
    assert summary["errors"] == 0, summary["errors_by_kind"]
    assert summary["status_codes"] == {"200": 1000}
    assert abs(summary["achieved_rps"] - 200) <= 200 * 0.03
    p50 = summary["latency_ms"]["p50"]
    # Never below the server's own 10 ms (latency counts from the intended send). The upper
    # bound is relative, not absolute: what gRPC and the server's queueing at 200/s cost on this
    # machine at this moment is a bare client's median at the same rate, just before and just
    # after the engine's run (the machine's speed drifts by ±3 ms of median between runs a few
    # seconds apart; a one-at-a-time reference left out the server's queueing and failed a busy
    # CI run at 18.1 against 15.6 + 1 ms). No more than the slower of the two, plus 1 ms.
    floor_p50 = max(floor_before, floor_after)
    assert p50 >= 10, (p50, floor_before, floor_after)
    assert p50 <= floor_p50 + 1.0, (p50, floor_before, floor_after)
    # The server answered every request (the engine's 1,200 with the warm-up, and the bare
    # client's of the same bytes), each well-formed, as sent.
    key = json.dumps(["m", "1", EXPECTED_INPUTS])
    total = 1200 + reference_requests
    assert got[key] == {"requests": total, "well_formed": total}, got
    assert len(result.records) == 1200
    # Its Server-Timing travelled in the initial metadata into the captured headers.
    timings = result.headers["server-timing"]
    assert len(timings) == 1200
    assert all(v is not None and v.startswith("inference;dur=") for v in timings)
    # --connections 4: four HTTP/2 connections, each opened by one request.
    assert int((result.records["connect_ns"] >= 0).sum()) == 4


def test_closed_loop_and_unknown_model_counted_by_grpc_status(
    tmp_path: Path, body_file: Path
) -> None:
    record = tmp_path / "received.json"
    with serve("tests.servers.grpc_infer", "0.005", str(record), "m", cpu=1) as (port, _pid):
        closed = run_engine(f"grpc://127.0.0.1:{port}/models/m", body_file,
                            concurrency=4, duration=1, warmup=0)  # fmt: skip
        unknown = run_engine(f"grpc://127.0.0.1:{port}/models/nope", body_file,
                             rate=50, duration=1, warmup=0)  # fmt: skip
    summary = step_summary(closed, None)
    assert summary["errors"] == 0
    # A closed loop keeps its 4 users busy: by Little's law, requests ≈ 4 × window / mean
    # latency, whatever the machine's speed (a fixed count, ≥ 400, failed once at 387 on a busy
    # CI machine). 20 % for the users' last requests cut off at the window's end and the gaps
    # between a response and the next send.
    recs = measured(closed)
    window_s = (closed.measured_end_ns - closed.measured_start_ns) / 1e9
    expected = 4 * window_s / (float(latency_ms(recs).mean()) / 1e3)
    assert summary["requests"] == pytest.approx(expected, rel=0.2)
    assert summary["requests"] >= 4 * window_s / 0.1  # and well under 100 ms per request
    bad = step_summary(unknown, None)
    assert bad["errors_by_kind"] == {"NOT_FOUND": 50}
    assert bad["status_codes"] == {}


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [PATHPROBE, "diagnose", *args, "--duration", "1", "--warmup", "0", "--rate", "20",
            "--no-capture", "--no-profile", "--out", str(tmp_path / "out")]  # fmt: skip
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env=free_env(), check=False
    )


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_cli_end_to_end_and_bad_inputs(tmp_path: Path, body_file: Path) -> None:
    record = tmp_path / "received.json"
    with serve("tests.servers.grpc_infer", "0.002", str(record), "m", cpu=1) as (port, _pid):
        ok = cli(tmp_path, "--path", f"direct=grpc://127.0.0.1:{port}/models/m",
                 "--body-file", str(body_file))  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        step = report["paths"]["direct"]["steps"][0]
        assert step["status_codes"] == {"200": 20}
        assert step["errors"] == 0
        # Triton-style statistics differenced over the window: its 20 requests, each at least
        # the server's 2 ms delay in the model (more when its loop wakes late) and no more than
        # the client saw, nothing queued.
        stats = report["probes"]["model_stats"]
        assert stats["available"] is True
        assert stats["model_wide"] is True
        (window,) = stats["windows"]
        assert window["requests"] == 20
        assert 2.0 <= window["compute_infer_ms"] <= step["latency_ms"]["max"]
        assert window["queue_ms"] == 0

        unknown = cli(tmp_path, "--path", f"direct=grpc://127.0.0.1:{port}/models/nope",
                      "--body-file", str(body_file))  # fmt: skip
        assert unknown.returncode == 3
        assert "has no model 'nope' (NOT_FOUND" in one_line(unknown.stderr)

        broken = tmp_path / "broken.json"
        broken.write_text(
            '{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1]}]}'
        )
        bad = cli(tmp_path, "--path", f"direct=grpc://127.0.0.1:{port}/models/m",
                  "--body-file", str(broken))  # fmt: skip
        assert bad.returncode == 2
        assert "shape [2] holds 2 elements but data has 1" in one_line(bad.stderr)
        assert received(record, 1)  # the good run's requests only ...
        before = sum(v["requests"] for v in received(record, 1).values())
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{inputs: nope")
    bad = cli(tmp_path, "--path", "direct=grpc://127.0.0.1:1/models/m", "--body-file", str(garbage))
    assert bad.returncode == 2
    assert "not a JSON inference request" in one_line(bad.stderr)
    # ... nothing was sent for the bad bodies (checked before any load).
    assert before == sum(v["requests"] for v in json.loads(record.read_text()).values())

    # A port that speaks HTTP/1.1, not gRPC: could not run, one line.
    with serve("tests.servers.fixed_delay", "0.001", cpu=1) as (http_port, _pid):
        wrong = cli(tmp_path, "--path", f"direct=grpc://127.0.0.1:{http_port}/models/m",
                    "--body-file", str(body_file))  # fmt: skip
    assert wrong.returncode == 3
    assert "does not answer gRPC" in one_line(wrong.stderr)


def test_grpcs_with_cacert(tmp_path: Path, body_file: Path) -> None:
    tls = make_tls_files(tmp_path)
    record = tmp_path / "received.json"
    server_args = ("0.001", str(record), "m", str(tls.server_cert), str(tls.server_key))
    with serve("tests.servers.grpc_infer", *server_args, cpu=1) as (port, _pid):
        url = f"grpcs://127.0.0.1:{port}/models/m"
        ok = cli(tmp_path, "--path", f"direct={url}", "--body-file", str(body_file),
                 "--cacert", str(tls.ca_cert), "--connections", "2")  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        step = json.loads((tmp_path / "out" / "report.json").read_text())["paths"]["direct"]
        assert step["steps"][0]["status_codes"] == {"200": 20}
        untrusted = cli(tmp_path, "--path", f"direct={url}", "--body-file", str(body_file))
    assert untrusted.returncode == 3
    assert "TLS with the server failed" in one_line(untrusted.stderr)
