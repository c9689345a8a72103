"""``--ray``: 2 load workers as Ray actors against 2 local worker processes, in one run.

    flock /tmp/pathprobe-cpu.lock .venv/bin/python benchmarks/bench_ray.py [--rate 8000]
        [--duration 3] [--repeats 3]

Starts a real two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head and a
second node, 1 CPU each, on 127.0.0.1, no dashboard) and nginx ``return 200`` pinned to CPU 1,
then alternates, ``--repeats`` times, one open-loop step of ``--rate`` requests/s from 2 local
worker processes (:class:`~pathprobe.load.workers.WorkerPool`) and from 2 Ray actors
(:class:`~pathprobe.load.ray_pool.RayWorkerPool`), the same plan for both. Printed, as medians:

* requests per client CPU-second: every request a worker sent over the CPU its process spent in
  the step (``time.process_time`` inside the same unit, ``run_slice``: for an actor that includes
  Ray's own threads in its process), and Ray / local;
* the CPU Ray's daemons (``gcs_server``, ``raylet``) spent meanwhile — not the workers', but a
  cost the cluster pays;
* actor start-up: placement group + actors ready, and each actor's own time to ready;
* each actor's clock offset to the driver and its uncertainty (one machine: the true offset is 0,
  so these show the estimator's error bound).

Everything runs on one shared 2-core machine; the cluster is shut down also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# Ray turns a loopback cluster address into the host's IP unless it believes it cannot form a
# cluster; this benchmark stays on 127.0.0.0/8. Read when ray is imported: set first.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.run_benchmarks import nginx  # noqa: E402
from pathprobe.config import build_config  # noqa: E402
from pathprobe.load.engine import EngineOptions  # noqa: E402
from pathprobe.load.payloads import build_pool  # noqa: E402
from pathprobe.load.ray_pool import RayWorkerPool  # noqa: E402
from pathprobe.load.schedule import plan_step  # noqa: E402
from pathprobe.load.select import loop_factory  # noqa: E402
from pathprobe.load.workers import WorkerPool, WorkerStats  # noqa: E402

NODE_ARGS: dict[str, Any] = {
    "num_cpus": 1,
    "node_ip_address": "127.0.0.1",
    "object_store_memory": 80 * 1024 * 1024,
}


def ray_daemons_cpu_s() -> float:
    """CPU seconds so far of this machine's Ray daemons (read only)."""
    total = 0.0
    for proc in psutil.process_iter(["name", "cpu_times"]):
        if proc.info["name"] in ("gcs_server", "raylet") and proc.info["cpu_times"] is not None:
            total += proc.info["cpu_times"].user + proc.info["cpu_times"].system
    return total


def per_cpu_s(stats: list[WorkerStats]) -> float:
    return sum(s.requests for s in stats) / max(sum(s.cpu_s for s in stats), 1e-9)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=8000)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    started = time.monotonic()
    cluster = Cluster(
        initialize_head=True, head_node_args={**NODE_ARGS, "include_dashboard": False}
    )
    try:
        cluster.add_node(**NODE_ARGS)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, namespace="pathprobe-bench")
        print(f"cluster of 2 nodes up in {time.monotonic() - started:.1f} s", flush=True)
        with nginx() as port:
            url = f"http://127.0.0.1:{port}/"
            return run(url, args)
    finally:
        ray.shutdown()
        cluster.shutdown()


def run(url: str, args: argparse.Namespace) -> int:
    config = build_config(
        {
            "out": "/tmp/unused",
            "path": {"direct": url},
            "rate": args.rate,
            "duration": args.duration,
            "warmup": 0.5,
            "workers": 2,
            "connections": 50,
        }
    )
    pool = build_pool(config.load.payload, config.load.seed)
    plan = plan_step(config.load, 0, len(pool), pool.cycle)
    rows: dict[str, list[float]] = {"local": [], "ray": [], "daemons": []}
    p50: dict[str, list[float]] = {"local": [], "ray": []}
    achieved: dict[str, list[float]] = {"local": [], "ray": []}

    async def go() -> None:
        t0 = time.monotonic()
        ray_pool = RayWorkerPool(config.load, pool, EngineOptions(), engine="fast")
        placed_s = time.monotonic() - t0
        actors = ray_pool.actors
        print(
            f"actor start-up: {placed_s:.2f} s for both (placement group + ready); each: "
            + ", ".join(f"{a['startup_s']:.2f} s" for a in actors),
            flush=True,
        )
        local_pool = WorkerPool(config.load, pool, EngineOptions(), engine="fast")
        try:
            for repeat in range(args.repeats):
                for name, engine in (("local", local_pool), ("ray", ray_pool)):
                    daemons0 = ray_daemons_cpu_s()
                    result = await engine.run_step("direct", url, plan)
                    if name == "ray":
                        rows["daemons"].append(ray_daemons_cpu_s() - daemons0)
                    rows[name].append(per_cpu_s(engine.last_stats))
                    lat = (result.records["end_ns"] - result.records["intended_ns"]) / 1e6
                    p50[name].append(float(np.median(lat)))
                    window = result.measured_end_ns - result.measured_start_ns
                    tally = result.tally
                    achieved[name].append((tally.in_window if tally else 0) / (window / 1e9))
                    print(
                        f"repeat {repeat + 1} {name:5s}: {rows[name][-1]:,.0f} requests per "
                        f"client CPU-second, achieved {achieved[name][-1]:,.0f}/s, "
                        f"p50 {p50[name][-1]:.3f} ms",
                        flush=True,
                    )
            for g in ray_pool.last_generators:
                print(
                    f"worker {g.who.worker} on node {g.who.node[:12]}: clock offset "
                    f"{g.clock['clock_offset_ms']:+.4f} ms ± {g.clock['clock_uncertainty_ms']:.4f}"
                    f" ms (shared clock: {g.clock['clock_shared']})"
                )
        finally:
            local_pool.close()
            ray_pool.close()

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(go())
    local, on_ray = statistics.median(rows["local"]), statistics.median(rows["ray"])
    print(
        f"median requests per client CPU-second: local {local:,.0f}, Ray {on_ray:,.0f} "
        f"(Ray / local {on_ray / local:.2f}×); Ray daemons meanwhile "
        f"{statistics.median(rows['daemons']):.2f} CPU-s per step; "
        f"p50 local {statistics.median(p50['local']):.3f} ms, Ray "
        f"{statistics.median(p50['ray']):.3f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
