"""``--ray``: load workers as actors on a real two-node Ray cluster on this machine (issue 15).

One cluster per module (``ray.cluster_utils.Cluster``: a head and a second node, one CPU each, on
127.0.0.1, no dashboard), shut down also when a test fails. Ray start-up is slow on a 2-core
machine: keep these tests few and short, and run them under the shared CPU lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# Ray turns a loopback cluster address into the host's own IP before connecting, unless it
# believes it cannot form a cluster (as on macOS): tests stay on 127.0.0.0/8. Read at import.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402 - after the skip

from pathprobe.config import DiagnoseConfig, build_config  # noqa: E402
from pathprobe.load.engine import EngineOptions  # noqa: E402
from pathprobe.load.payloads import build_pool  # noqa: E402
from pathprobe.load.ray_pool import (  # noqa: E402
    LIVENESS_INTERVAL_S,
    PING_TIMEOUT_S,
    RayWorkerPool,
)
from pathprobe.load.schedule import plan_step  # noqa: E402
from pathprobe.load.select import loop_factory  # noqa: E402
from pathprobe.load.workers import WorkerPool  # noqa: E402
from pathprobe.model.results import StepResult  # noqa: E402
from pathprobe.run import RunResult  # noqa: E402
from pathprobe.session import Session, finish, prepare  # noqa: E402
from tests.servers.process import serve  # noqa: E402

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(240),
]

RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}
NODE_ARGS: dict[str, Any] = {
    "num_cpus": 1,
    "node_ip_address": "127.0.0.1",
    "object_store_memory": 80 * 1024 * 1024,
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head and one more node, 1 CPU each; this process connected as the driver."""
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    started: Cluster | None = None
    try:
        started = Cluster(
            initialize_head=True,
            head_node_args={
                **NODE_ARGS,
                "include_dashboard": False,
                # A node that disappears is noticed in seconds, not the default half minute.
                "_system_config": {
                    "health_check_period_ms": 1000,
                    "health_check_failure_threshold": 3,
                },
            },
        )
        started.add_node(**NODE_ARGS)
        started.wait_for_nodes()
        ray.init(
            address=started.address,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            namespace="pathprobe-tests",
        )
        yield started
    finally:
        ray.shutdown()
        if started is not None:
            started.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def config_for(cluster: Cluster, out: Path, **raw: Any) -> DiagnoseConfig:
    return build_config(
        {"out": str(out), "no_capture": True, "no_profile": True, "ray": cluster.address, **raw}
    )


def diagnose(config: DiagnoseConfig) -> tuple[RunResult, dict[str, Any]]:
    """A whole diagnosis in this process (already connected: the pool reuses the connection)."""
    pool, plan = prepare(config)
    session = Session(config, ["diagnose"], pool, plan)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        run = runner.run(session.run())
    report, _code = finish(run)
    return run, report


def local_run(url: str, raw: dict[str, Any]) -> StepResult:
    config = build_config({"out": "/tmp/unused", "path": {"direct": url}, **raw})
    pool = build_pool(config.load.payload, config.load.seed)
    plan = plan_step(config.load, 0, len(pool), pool.cycle)

    async def go() -> StepResult:
        with WorkerPool(config.load, pool, EngineOptions(), engine="fast") as workers:
            return await workers.run_step("direct", url, plan)

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(go())


def test_rate_held_counted_once_and_paired_across_paths(cluster: Cluster, tmp_path: Path) -> None:
    raw = {"rate": 400, "duration": 3, "warmup": 0.5, "workers": 2}
    with serve("tests.servers.fixed_delay", "0.005", cpu=1) as (port, _pid):
        url = f"http://127.0.0.1:{port}/"
        config = config_for(cluster, tmp_path, path={"direct": url, "proxy": url}, **raw)
        local_before = local_run(url, raw)
        run, report = diagnose(config)
        local_after = local_run(url, raw)

    gens = report["run"]["load_generators"]
    assert [g["worker"] for g in gens] == [0, 1]
    assert len({g["node"] for g in gens}) == 2  # SPREAD: one actor on each node
    for g in gens:
        assert g["lost"] is None
        assert g["clock_shared"] is True  # one machine: CLOCK_MONOTONIC is shared
        # ... so the NTP-style estimate must find the true offset, 0, within its own bound.
        assert abs(g["clock_offset_ms"]) <= g["clock_uncertainty_ms"] + 1e-3
        assert g["cpu_percent"] is not None
        assert 0 < g["cpu_percent"] < 90
        assert g["startup_s"] > 0
    steps = {p: report["paths"][p]["steps"][0] for p in ("direct", "proxy")}
    # Every request counted once: the workers' counts add up to the steps'.
    assert sum(g["requests"] for g in gens) == sum(s["requests"] for s in steps.values())
    planned = 400 * 3
    for name, step in steps.items():
        assert step["requests"] == planned, name
        assert step["errors"] == 0
        assert step["achieved_rps"] == pytest.approx(400, rel=0.03), name
        recs = run.steps[name][0].records
        assert recs["seq"].tolist() == list(range(len(recs)))  # none twice, none missing
    # Pairing: the same requests (seq and payload) on both paths.
    a, b = (run.steps[p][0].records for p in ("direct", "proxy"))
    np.testing.assert_array_equal(a["seq"], b["seq"])
    np.testing.assert_array_equal(a["payload_idx"], b["payload_idx"])
    # One schedule from one start: due times are the plan's offsets on the driver's clock.
    plan = plan_step(config.load, 0, 0, False)
    assert plan.offsets_ns is not None
    due = a["intended_ns"] - run.steps["direct"][0].start_ns
    np.testing.assert_array_equal(due, plan.offsets_ns)
    # Same p50 as two local worker processes against the same server, run just before and just
    # after: the machine's speed drifts between runs seconds apart, so Ray's median must lie
    # within 0.5 ms of the range the two local runs span.
    local_p50 = sorted(
        float(np.median((r.records["end_ns"] - r.records["intended_ns"]) / 1e6))
        for r in (local_before, local_after)
    )
    ray_p50 = steps["direct"]["latency_ms"]["p50"]
    assert local_p50[0] - 0.5 <= ray_p50 <= local_p50[1] + 0.5, (ray_p50, local_p50)
    # The client gate saw each worker with its node.
    client_windows = report["probes"]["client"]["windows"]
    assert all(len(w["load_generators"]) == 2 for w in client_windows)


def test_unreachable_address_is_exit_3_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, **RAY_ENV}
    env.pop("RAY_ADDRESS", None)
    with serve("tests.servers.fixed_delay", "0.001", cpu=1) as (port, _pid):
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "pathprobe"), "diagnose", "--path",
             f"direct=http://127.0.0.1:{port}/", "--ray", "127.0.0.1:1", "--workers", "2",
             "--no-capture", "--no-profile", "--out", str(tmp_path / "out")],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in lines[0]


def test_an_address_that_is_no_ray_cluster_does_not_hang() -> None:
    """A port that accepts connections and says nothing: ray.init would retry it without end."""
    code = (
        "import sys, time\n"
        "import pathprobe.load.ray_pool as rp\n"
        "from pathprobe.errors import CannotRunError\n"
        "rp.INIT_TIMEOUT_S = 3.0\n"
        "t = time.monotonic()\n"
        "try:\n"
        "    rp.connect(sys.argv[1])\n"
        "except CannotRunError as exc:\n"
        "    print(f'{time.monotonic() - t:.1f} {exc}')\n"
    )
    env = {**os.environ, **RAY_ENV}
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes the handshakes; nobody ever answers
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", code, address],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
    assert time.monotonic() - started < 45  # Ray's import, 3 s, and a prompt exit
    waited, _, message = proc.stdout.strip().partition(" ")
    assert float(waited) < 5, proc.stdout
    assert message == f"the Ray cluster at {address} did not answer within 3 s " + (
        "(is that its GCS port, or ray://host:10001?)"
    )


def test_the_command_connects_itself(cluster: Cluster, tmp_path: Path) -> None:
    """The real command in its own process, connecting itself to the cluster's address."""
    env = {**os.environ, **RAY_ENV, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    out = tmp_path / "out"
    with serve("tests.servers.fixed_delay", "0.002", cpu=1) as (port, _pid):
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "pathprobe"), "diagnose", "--path",
             f"direct=http://127.0.0.1:{port}/", "--ray", cluster.address,
             "--workers", "2", "--rate", "100", "--duration", "2", "--warmup", "0.5",
             "--no-capture", "--no-profile", "--out", str(out)],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    gens = report["run"]["load_generators"]
    assert [g["worker"] for g in gens] == [0, 1]
    step = report["paths"]["direct"]["steps"][0]
    assert step["requests"] == 200
    assert sum(g["requests"] for g in gens) == 200
    assert "Load generators" in (out / "report.html").read_text()


def test_a_frozen_actor_is_declared_lost_and_the_step_ends(cluster: Cluster) -> None:
    """A worker that neither answers nor dies (SIGSTOP): the ping, not Ray, finds it."""
    with serve("tests.servers.fixed_delay", "0.002", cpu=1) as (port, _pid):
        url = f"http://127.0.0.1:{port}/"
        config = build_config(
            {"out": "/tmp/unused", "path": {"direct": url}, "rate": 100, "duration": 3,
             "warmup": 0.5, "workers": 2, "ray": cluster.address}
        )  # fmt: skip
        pool = build_pool(config.load.payload, config.load.seed)
        plan = plan_step(config.load, 0, len(pool), pool.cycle)

        async def go() -> tuple[StepResult, float, RayWorkerPool]:
            workers = RayWorkerPool(config.load, pool, EngineOptions(), engine="fast")
            frozen = workers.actors[1]["pid"]
            try:
                loop = asyncio.get_running_loop()
                loop.call_later(1.5, os.kill, frozen, signal.SIGSTOP)
                started = time.monotonic()
                result = await asyncio.wait_for(workers.run_step("direct", url, plan), 60)
                return result, time.monotonic() - started, workers
            finally:
                workers.close()
                with contextlib.suppress(ProcessLookupError):  # ours: the test's cluster's
                    os.kill(frozen, signal.SIGKILL)

        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            result, elapsed, workers = runner.run(go())
    # Due at 3.5 s + the start margin; the ping declares it lost within interval + timeout.
    assert elapsed < 3.5 + 0.5 + LIVENESS_INTERVAL_S + PING_TIMEOUT_S + 5
    lost = [w for w in workers.last_generators if w.lost]
    assert [w.who.worker for w in lost] == [1]
    assert lost[0].unsent_requests == 150
    assert result.tally is not None
    assert result.tally.requests == 150  # the survivor's half
    assert (result.records["seq"] % 2 == 0).all()


def test_node_killed_mid_step_is_reported(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs last: it takes the second node away."""
    with serve("tests.servers.fixed_delay", "0.002", cpu=1) as (port, _pid):
        url = f"http://127.0.0.1:{port}/"
        config = config_for(
            cluster, tmp_path, path={"direct": url}, rate=100, duration=4, warmup=0.5, workers=2
        )
        # Kill the non-head node 2 s into the step (the windows start after the baseline).
        victim = cluster.list_all_nodes()[1]
        windows_started = threading.Event()

        def kill_when_loaded() -> None:
            if windows_started.wait(60):
                time.sleep(2.0)
                cluster.remove_node(victim, allow_graceful=False)

        original = Session._run_windows

        async def mark_start(self: Session, *args: Any) -> None:
            windows_started.set()
            await original(self, *args)

        monkeypatch.setattr(Session, "_run_windows", mark_start)
        killer = threading.Thread(target=kill_when_loaded, daemon=True)
        killer.start()
        started = time.monotonic()
        try:
            run, report = diagnose(config)
        finally:
            windows_started.set()
            killer.join(30)
        elapsed = time.monotonic() - started
    assert elapsed < 60  # never hangs: the ping declares the worker lost within seconds
    gens = report["run"]["load_generators"]
    lost = [g for g in gens if g["lost"]]
    assert len(lost) == 1, gens
    victim_id = victim.node_id
    assert lost[0]["node"] == victim_id
    assert lost[0]["lost"]["path"] == "direct"
    # The lost worker's share of the measured window: half of 400 scheduled requests.
    assert lost[0]["lost"]["unsent_requests"] == 200
    assert any(f"load worker {lost[0]['worker']} on node" in n and "was lost" in n
               for n in report["notes"])  # fmt: skip
    step = report["paths"]["direct"]["steps"][0]
    survivor = next(g for g in gens if not g["lost"])
    assert step["requests"] == survivor["requests"] == 200
    assert json.dumps(report)  # the report is still plain JSON
