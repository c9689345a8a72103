"""The load engines against real servers on loopback (issue 2 'done when')."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from pathprobe.analysis.steps import achieved_rps, latency_ms, service_ms
from pathprobe.config import build_config
from pathprobe.load.engine import EngineOptions
from pathprobe.load.payloads import build_pool
from pathprobe.load.schedule import plan_step
from pathprobe.load.select import loop_factory, make_engine
from pathprobe.model.results import StepResult, measured
from tests.helpers.reference_client import reference_p50_ms
from tests.servers.process import pinned, serve

pytestmark = pytest.mark.integration


def run_engine(raw: dict[str, object], step: int = 0) -> StepResult:
    """One step on the engine ``raw["engine"]`` (aiohttp unless given), on the session's loop."""
    config = build_config({"out": "/tmp/unused", "engine": "aiohttp", **raw})
    pool = build_pool(config.load.payload, config.load.seed)
    plan = plan_step(config.load, step, len(pool), pool.cycle)
    url = config.paths[0].url

    async def go() -> StepResult:
        engine = make_engine(
            config.load,
            pool,
            EngineOptions(capture_headers=("server-timing",), replica_header="x-replica"),
            urls=[url],
        )
        return await engine.run_step(config.paths[0].name, url, plan)

    with pinned(0), asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(go())


# The fast engine is what ``diagnose`` uses for plain http (issue 2: p50 within 1 ms); the
# aiohttp engine (https, mTLS) costs more per request in Python: measured 0.5–1.1 ms over the
# server's own time on a quiet machine, so its bound is 2 ms. Both are compared with a minimal
# client on the same server in the same test, not with the server's own timing: what lies outside
# that timing (its Python request parsing, waking an idle vCPU) cost the minimal client itself
# 0.35–1.06 ms on 2026-12-03, and the engines 1.1–2.2 ms, so the old comparison failed three runs
# in a row that day (also on the code of the day before). Over the minimal client, four runs:
# fast 0.07–0.68 ms, aiohttp 0.26–0.48 ms.
@pytest.mark.parametrize(("engine", "overhead_ms"), [("fast", 1.0), ("aiohttp", 2.0)])
def test_fixed_delay_server_rate_and_median(engine: str, overhead_ms: float) -> None:
    """200 requests/s for 10 s at a 20 ms server: achieved ≈ 200 (±2 %), p50 within 1 ms of what
    a minimal client measures."""
    with serve("tests.servers.fixed_delay", "0.020", cpu=1) as (port, _pid):
        reference_before = reference_p50_ms(port, rate=200, seconds=3)
        result = run_engine(
            {
                "path": {"direct": f"http://127.0.0.1:{port}/"},
                "rate": 200,
                "duration": 10,
                "engine": engine,
            }
        )
        # Before and after: the machine's speed drifts between runs seconds apart (the gRPC
        # test saw ±3 ms of median), so the bound is the slower of the two references.
        reference_ms = max(reference_before, reference_p50_ms(port, rate=200, seconds=3))
    recs = measured(result)
    assert len(recs) == 2000
    assert (recs["status"] == 200).all()
    assert achieved_rps(result) == pytest.approx(200, rel=0.02)
    p50 = float(np.median(latency_ms(recs)))
    # The server's own time says the delay held: any gap is outside its handler.
    measured_values = result.headers["server-timing"][result.first_measured_seq :]
    server_ms = [float(v.split("total;dur=")[1]) for v in measured_values if v]
    server_p50 = float(np.median(server_ms))
    # ... and never more than the client saw in the same run (an absolute ceiling would measure
    # the machine: time.sleep overshoots by whatever the vCPU's wake-up costs at the moment).
    assert 20.0 <= server_p50 <= p50
    assert 20.0 <= p50 <= reference_ms + overhead_ms, (p50, reference_ms, server_p50)
    # What the engine keeps beside the timings.
    assert result.replicas == ["r1"]
    assert result.headers["server-timing"][0].startswith("inference;dur=20.0, total;dur=")
    assert (recs["ttfb_ns"] > 19_000_000).all()


def test_overload_grows_intended_latency_not_service_time() -> None:
    """Past capacity (2 connections × 20 ms = 100 requests/s, offered 200), the backlog shows in
    latency from the intended send time while service time stays at the server's 20 ms."""
    with serve("tests.servers.fixed_delay", "0.020", cpu=1) as (port, _pid):
        result = run_engine(
            {
                "path": {"direct": f"http://127.0.0.1:{port}/"},
                "rate": 200,
                "duration": 3,
                "warmup": 0,
                "connections": 2,
            }
        )
    recs = measured(result)
    lat_p99 = float(np.percentile(latency_ms(recs), 99))
    svc_p99 = float(np.percentile(service_ms(recs), 99))
    # After 3 s at twice the capacity about 300 requests wait: ≈ 1.5 s for the last ones.
    assert lat_p99 > 1000
    assert svc_p99 < 100
    assert (recs["conn_wait_ns"] > 0).mean() > 0.5


def test_same_seed_same_sequence_on_every_path() -> None:
    """Two paths replay one request sequence: same seq, due offsets and payload per request."""
    with (
        serve("tests.servers.fixed_delay", "0.001", cpu=1) as (port_a, _),
        serve("tests.servers.fixed_delay", "0.001", cpu=1) as (port_b, _),
    ):
        raw: dict[str, object] = {
            "rate": 100,
            "duration": 1,
            "warmup": 0.2,
            "arrival": "poisson",
            "payload": "image:32-96",
            "seed": 7,
        }
        a = run_engine({**raw, "path": {"direct": f"http://127.0.0.1:{port_a}/"}})
        b = run_engine({**raw, "path": {"proxy": f"http://127.0.0.1:{port_b}/"}})
    assert np.array_equal(a.records["seq"], b.records["seq"])
    assert np.array_equal(a.records["payload_idx"], b.records["payload_idx"])
    assert np.array_equal(a.records["bytes_out"], b.records["bytes_out"])
    offsets_a = a.records["intended_ns"] - a.start_ns
    offsets_b = b.records["intended_ns"] - b.start_ns
    assert np.array_equal(offsets_a, offsets_b)
    assert a.first_measured_seq == b.first_measured_seq > 0


def test_closed_loop_keeps_concurrency() -> None:
    """Closed loop with 4 users at a 20 ms server: ≈ 200 requests/s, intended = actual send."""
    with serve("tests.servers.fixed_delay", "0.020", cpu=1) as (port, _pid):
        result = run_engine(
            {"path": {"direct": f"http://127.0.0.1:{port}/"}, "concurrency": 4, "duration": 2}
        )
    recs = measured(result)
    assert (recs["intended_ns"] == recs["actual_ns"]).all()
    assert 100 < achieved_rps(result) <= 200


def test_refused_port_counts_errors() -> None:
    """A port nobody listens on: every request is a 'refused' error, the step still finishes."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_engine(
        {"path": {"direct": f"http://127.0.0.1:{port}/"}, "rate": 50, "duration": 1, "warmup": 0}
    )
    recs = measured(result)
    assert len(recs) == 50
    assert (recs["error"] == 2).all()  # ErrorKind.REFUSED
