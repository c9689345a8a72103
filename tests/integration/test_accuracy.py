"""Measurement you can trust: the coordinated-omission property on a stalling server (issue 7).

The server freezes 1 s every 5 s. Under an open-loop load, a fifth of the requests arrive during a
freeze and wait uniformly up to 1 s: the analytic latency p90 is 0.5 s and p99 0.95 s, whatever
the rate. A client that measures from the moment it got a connection (as closed-loop tools do)
sees only the few requests that were on the wire when the freeze began: its p90 stays near zero.
The engines must report the former from the intended send time.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from pathprobe.config import build_config
from pathprobe.load.engine import EngineOptions
from pathprobe.load.payloads import build_pool
from pathprobe.load.schedule import plan_step
from pathprobe.load.select import build_engine, loop_factory
from pathprobe.model.records import completed
from pathprobe.model.results import StepResult, measured
from tests.servers.process import pinned, serve

pytestmark = pytest.mark.integration


def run(engine: str, url: str) -> StepResult:
    # 5 connections: most requests that fall due during a freeze wait in the client's pool.
    config = build_config(
        {
            "out": "/tmp/unused", "path": {"direct": url}, "rate": 50, "duration": 10,
            "warmup": 1, "connections": 5, "timeout": 10,
        }
    )  # fmt: skip
    pool = build_pool(config.load.payload, config.load.seed)
    plan = plan_step(config.load, 0, len(pool), pool.cycle)

    async def go() -> StepResult:
        return await build_engine(engine, config.load, pool, EngineOptions()).run_step(
            "direct", url, plan
        )

    with pinned(0), asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(go())


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
def test_stall_is_seen_from_the_intended_send_time(engine: str) -> None:
    with serve("tests.servers.stall", "5", "1", cpu=1) as (port, _pid):
        result = run(engine, f"http://127.0.0.1:{port}/")
    recs = measured(result)
    assert len(recs) == 500
    assert completed(recs).all()
    latency_s = (recs["end_ns"] - recs["intended_ns"]) / 1e9
    # The measured window is 10 s = two full stall cycles, whatever their phase.
    p90, p99 = np.percentile(latency_s, [90, 99])
    assert 0.4 <= p90 <= 0.6
    assert 0.95 * 0.9 <= p99 <= 0.95 * 1.15
    # What a client that starts its clock on getting a connection would have reported.
    on_wire_s = (recs["end_ns"] - recs["actual_ns"] - recs["conn_wait_ns"]) / 1e9
    assert np.percentile(on_wire_s, 90) < 0.1
    # The scheduler itself kept time: the lateness is the server's, not the client's.
    slip_ms = (recs["actual_ns"] - recs["intended_ns"]) / 1e6
    assert np.percentile(slip_ms, 50) < 5
