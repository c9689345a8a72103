"""``--workers N``: the plan split over processes and merged back, request for request (issue 7)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any

import numpy as np
import psutil
import pytest

from pathprobe.analysis.steps import step_summary
from pathprobe.config import build_config
from pathprobe.errors import UsageError
from pathprobe.load.engine import EngineOptions
from pathprobe.load.payloads import build_pool
from pathprobe.load.schedule import plan_step
from pathprobe.load.select import build_engine, loop_factory, make_engine
from pathprobe.load.store import kept_mask
from pathprobe.load.workers import WorkerPool, run_slice_sync, slice_specs
from pathprobe.model.records import ErrorKind, completed
from pathprobe.model.results import StepResult
from tests.servers.process import serve

pytestmark = pytest.mark.integration

OPTIONS = EngineOptions(capture_headers=("server-timing",), replica_header="x-replica")


def setup(url: str, **raw: Any) -> tuple[Any, Any, Any]:
    config = build_config({"out": "/tmp/unused", "path": {"direct": url}, **raw})
    pool = build_pool(config.load.payload, config.load.seed)
    plan = plan_step(config.load, 0, len(pool), pool.cycle)
    return config.load, pool, plan


def run_single(engine: str, url: str, options: EngineOptions = OPTIONS, **raw: Any) -> StepResult:
    profile, pool, plan = setup(url, **raw)

    async def go() -> StepResult:
        return await build_engine(engine, profile, pool, options).run_step("direct", url, plan)

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(go())


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
def test_two_workers_send_the_same_requests_as_one(engine: str) -> None:
    with serve("tests.servers.fixed_delay", "0.005", cpu=1) as (port, _pid):
        url = f"http://127.0.0.1:{port}/"
        raw = {"rate": 200, "duration": 2, "warmup": 0.5, "payload": "image:8-16", "workers": 2}
        profile, pool, plan = setup(url, **raw)
        assert plan.offsets_ns is not None

        async def go() -> tuple[StepResult, list[int]]:
            pool_ = make_engine(profile, pool, OPTIONS, urls=[url])
            assert isinstance(pool_, WorkerPool)
            pool_.close()  # make_engine builds a pool of profile.workers; use our own below
            with WorkerPool(profile, pool, OPTIONS, engine=engine, cpus=[0]) as workers:
                pids = workers.worker_pids()
                assert len(pids) == 2
                assert os.getpid() not in pids
                assert all(psutil.pid_exists(p) for p in pids)
                result = await workers.run_step("direct", url, plan)
                stats = workers.last_stats
            assert [s.pid for s in stats] == pids
            assert all(s.cpu_s > 0 for s in stats)
            assert sum(s.requests for s in stats) == len(plan.offsets_ns)
            return result, pids

        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            merged, pids = runner.run(go())
        single = run_single(engine, url, **{**raw, "workers": 1})
    for p in pids:  # the pool stopped its processes
        assert not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE
    n = len(plan.offsets_ns)
    for result in (merged, single):
        recs = result.records
        assert recs["seq"].tolist() == list(range(n))
        assert completed(recs).all()
        assert result.first_measured_seq == plan.first_measured_seq
        assert result.replicas == ["r1"]
        values = result.headers["server-timing"]
        assert len(values) == n
        assert all(v is not None and v.startswith("inference;dur=5.0,") for v in values)
        # Every request carried the payload the plan gave it.
        np.testing.assert_array_equal(recs["payload_idx"], plan.payload_idx)
        assert (recs["bytes_out"] > 0).all()
    # One schedule shared across processes: due times are the plan's from one common start.
    # (The aiohttp engine takes its own start when its step begins, a little after the common
    # start; each worker's slice then keeps the plan's spacing exactly.)
    due = merged.records["intended_ns"] - merged.start_ns
    if engine == "fast":
        np.testing.assert_array_equal(due, plan.offsets_ns)
    for k in range(2):
        np.testing.assert_array_equal(np.diff(due[k::2]), np.diff(plan.offsets_ns[k::2]))
        assert 0 <= due[k] - plan.offsets_ns[k] < 200_000_000
    assert merged.engine == engine
    assert len(merged.loop_lag_ns) > 0


def test_closed_loop_split_and_renumbered() -> None:
    with serve("tests.servers.fixed_delay", "0.010", cpu=1) as (port, _pid):
        url = f"http://127.0.0.1:{port}/"
        profile, pool, plan = setup(url, concurrency=5, duration=1.5, warmup=0.3, workers=2)

        async def go() -> StepResult:
            with WorkerPool(profile, pool, OPTIONS, engine="fast") as workers:
                result = await workers.run_step("direct", url, plan)
                assert [s.index for s in workers.last_stats] == [0, 1]
                return result

        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            merged = runner.run(go())
    recs = merged.records
    assert merged.concurrency == 5
    assert recs["seq"].tolist() == list(range(len(recs)))
    assert (np.diff(recs["intended_ns"]) >= 0).all()
    assert completed(recs).all()
    # 5 users against a 10 ms server for 1.8 s: at most 5 × 180 requests.
    assert 100 <= len(recs) <= 5 * 180 + 5
    assert recs[merged.first_measured_seq]["intended_ns"] >= merged.measured_start_ns


def test_stop_reaches_the_workers() -> None:
    with serve("tests.servers.fixed_delay", "30", cpu=1) as (port, _pid):  # never answers in time
        url = f"http://127.0.0.1:{port}/"
        profile, pool, plan = setup(url, rate=20, duration=10, warmup=0, workers=2)

        async def go() -> StepResult:
            stop = asyncio.Event()
            with WorkerPool(profile, pool, OPTIONS, stop, engine="fast") as workers:
                asyncio.get_running_loop().call_later(1.0, stop.set)
                return await asyncio.wait_for(workers.run_step("direct", url, plan), 20)

        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            merged = runner.run(go())
    assert merged.interrupted
    assert set(merged.records["error"].tolist()) == {ErrorKind.CANCELLED}
    assert 10 <= len(merged.records) <= 30  # ~1 s of 20/s after the 0.3 s start margin


def test_run_slice_is_a_plain_function() -> None:
    """The unit a Ray task would run: spec + pool in, mergeable result out, no pool needed."""
    with serve("tests.servers.fixed_delay", "0.002", cpu=1) as (port, _pid):
        url = f"http://127.0.0.1:{port}/"
        profile, pool, plan = setup(url, rate=50, duration=1, warmup=0)
        import time

        specs = slice_specs("fast", profile, OPTIONS, "direct", url, plan, 3, time.monotonic_ns())
        parts = [run_slice_sync(spec, pool) for spec in specs]
    seqs = sorted(s for part in parts for s in part.result.records["seq"].tolist())
    assert seqs == list(range(50))
    assert [p.result.records["seq"].tolist()[:2] for p in parts] == [[0, 3], [1, 4], [2, 5]]


def test_a_failing_slice_raises_and_leaves_the_pool_usable() -> None:
    with serve("tests.servers.fixed_delay", "0.002", cpu=1) as (port, _pid):
        url = f"http://127.0.0.1:{port}/"
        profile, pool, plan = setup(url, rate=20, duration=0.5, warmup=0, workers=2)

        async def go() -> StepResult:
            with WorkerPool(profile, pool, OPTIONS, engine="fast") as workers:
                with pytest.raises(UsageError, match="plain http"):
                    await workers.run_step("direct", f"https://127.0.0.1:{port}/", plan)
                return await workers.run_step("direct", url, plan)

        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            result = runner.run(go())
    assert result.records["seq"].tolist() == list(range(10))
    assert completed(result.records).all()


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
def test_a_long_window_is_thinned_exactly_counted_and_merged(engine: str) -> None:
    """More requests than --max-records, through one engine and through two worker processes:
    at most max_records rows are kept (the same requests both ways, chosen by seq), and every
    request is still counted."""
    options = dataclasses.replace(OPTIONS, max_records=1024)
    with serve("tests.servers.fixed_delay", "0.001", cpu=1) as (port, _pid):
        url = f"http://127.0.0.1:{port}/"
        raw = {"rate": 1000, "duration": 3.5, "warmup": 0.5, "payload": "image:8-16"}
        profile, pool, plan = setup(url, **{**raw, "workers": 2})
        assert plan.offsets_ns is not None
        n = len(plan.offsets_ns)

        async def go() -> StepResult:
            with WorkerPool(profile, pool, options, engine=engine, cpus=[0]) as workers:
                return await workers.run_step("direct", url, plan)

        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            merged = runner.run(go())
        single = run_single(engine, url, options=options, **raw)
    for result in (merged, single):
        assert result.tally is not None
        assert result.tally.all_requests == n
        assert result.tally.requests == n - plan.first_measured_seq
        assert result.tally.responses == result.tally.requests  # a healthy server
        assert result.sample_stride >= 2  # 4000 requests into 1024 rows (2 × 1024 for 2 workers)
    assert len(single.records) <= 1024
    assert len(merged.records) <= 2 * 1024  # each worker keeps up to its own cap
    for result in (merged, single):
        np.testing.assert_array_equal(
            result.records["seq"], np.flatnonzero(kept_mask(np.arange(n), result.sample_stride))
        )
        assert completed(result.records).all()
        values = result.headers["server-timing"]
        assert len(values) == len(result.records)
        assert all(v is not None and v.startswith("inference;dur=1.0,") for v in values)
        summary = step_summary(result, None)
        assert summary["requests"] == n - plan.first_measured_seq
        assert summary["sample_stride"] == result.sample_stride
        assert 900 < summary["achieved_rps"] < 1100


WORKER_START_SCRIPT = """
import asyncio, os, sys
with open(sys.argv[1], "a") as marks:  # once per run of this script as a module
    marks.write(f"{os.getpid()}\\n")
if __name__ == "__main__":
    from pathprobe.config import build_config
    from pathprobe.load.engine import EngineOptions
    from pathprobe.load.payloads import build_pool
    from pathprobe.load.workers import WorkerPool

    url = sys.argv[2]
    config = build_config({"out": "/tmp/unused", "path": {"direct": url}, "rate": 20,
                           "duration": 0.5, "warmup": 0, "workers": 2})
    pool = build_pool(config.load.payload, config.load.seed)
    seen = []
    # The first pool starts the fork server; the second starts after the parent's affinity
    # changed, and its workers must follow the parent, not the fork server.
    for cpus in ({0, 1}, {1}):
        os.sched_setaffinity(0, cpus)
        with WorkerPool(config.load, pool, EngineOptions(), engine="fast") as workers:
            seen.append(sorted(sorted(os.sched_getaffinity(p)) for p in workers.worker_pids()))
    print(seen)
"""


def test_workers_neither_rerun_the_main_script_nor_keep_a_stale_affinity(tmp_path: Any) -> None:
    import subprocess
    import sys

    script = tmp_path / "heavy_main.py"
    script.write_text(WORKER_START_SCRIPT)
    marks = tmp_path / "marks"
    with serve("tests.servers.fixed_delay", "0.001", cpu=1) as (port, _pid):
        done = subprocess.run(
            [sys.executable, str(script), str(marks), f"http://127.0.0.1:{port}/"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=os.getcwd(),
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
    assert done.returncode == 0, done.stderr
    # Only the parent ran the script; four workers started without re-running it.
    assert len(marks.read_text().split()) == 1
    assert done.stdout.strip() == "[[[0, 1], [0, 1]], [[1], [1]]]"
