"""One pathprobe load step as a benchmark client: prints one JSON line of what it measured.

    python benchmarks/pp_client.py URL --engine fast (--rate R | --concurrency C)
        [--connections N] [--duration S] [--warmup S] [--workers N]

Runs the engine exactly as ``pathprobe diagnose`` does (same plan, same records) without probes
or report, so its CPU can be compared with wrk's and hey's. ``cpu_window_s`` is the CPU this
process and its load workers spent inside the step (start-up and imports excluded: wrk and hey
start in milliseconds); the runner also measures the whole process externally.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pathprobe.config import LoadProfile  # noqa: E402
from pathprobe.load.engine import EngineOptions  # noqa: E402
from pathprobe.load.payloads import PayloadPool  # noqa: E402
from pathprobe.load.schedule import plan_step  # noqa: E402
from pathprobe.load.select import build_engine, loop_factory  # noqa: E402
from pathprobe.load.workers import WorkerPool  # noqa: E402
from pathprobe.model.records import completed  # noqa: E402
from pathprobe.model.results import StepResult, tally_of  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--engine", default="fast")
    parser.add_argument("--rate", type=float)
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    profile = LoadProfile(
        rates=(args.rate,) if args.rate else None,
        concurrency=None if args.rate else args.concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        timeout_s=args.timeout,
        workers=args.workers,
    )
    pool = PayloadPool((), cycle=False)
    plan = plan_step(profile, 0, 0, False)
    options = EngineOptions()

    async def go() -> tuple[StepResult, float, list[float], list[int]]:
        if args.workers > 1:
            with WorkerPool(profile, pool, options, engine=args.engine, cpus=None) as workers:
                cpu0 = time.process_time()
                result = await workers.run_step("direct", args.url, plan)
                parent_cpu = time.process_time() - cpu0
                worker_cpu = [s.cpu_s for s in workers.last_stats]
                return result, parent_cpu, worker_cpu, workers.worker_pids()
        engine = build_engine(args.engine, profile, pool, options)
        cpu0 = time.process_time()
        result = await engine.run_step("direct", args.url, plan)
        return result, time.process_time() - cpu0, [], []

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        result, parent_cpu, worker_cpu, _pids = runner.run(go())
    # Peak RSS of the run itself, before this script's own analysis copies columns around.
    max_rss_run_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    recs = result.records  # all of them, or a sample past --max-records (load.store)
    tally = tally_of(result)  # every request, counted
    ok = completed(recs)
    done_count = tally.responses  # measured responses (with the default --warmup 0: all)
    keep = ok & (recs["seq"] >= result.first_measured_seq)
    end = recs["end_ns"][keep]
    intended = recs["intended_ns"][keep]
    actual = recs["actual_ns"][keep]
    # Service time starts when a pooled connection was free (records.py).
    on_wire = actual + np.maximum(recs["conn_wait_ns"][keep], 0)
    wall_s = (tally.last_end_ns - result.start_ns) / 1e9 if tally.all_requests else 0.0

    def pct_ms(values_ns: np.ndarray) -> dict[str, float | None]:
        if len(values_ns) == 0:
            return {"p50": None, "p90": None, "p99": None}
        p50, p90, p99 = np.percentile(values_ns / 1e6, [50, 90, 99])
        return {"p50": float(p50), "p90": float(p90), "p99": float(p99)}

    out = {
        "engine": result.engine,
        "workers": args.workers,
        "requests": tally.all_requests,
        "completed": done_count,
        "errors": tally.errors,
        "records_kept": int(len(recs)),
        "sample_stride": result.sample_stride,
        "wall_s": wall_s,
        "cpu_window_s": parent_cpu + sum(worker_cpu),
        "worker_cpu_s": worker_cpu,
        "latency_ms": pct_ms(end - intended),
        "service_ms": pct_ms(end - on_wire),
        "slip_ms": pct_ms(actual - intended),
        "loop_lag_max_ms": float(result.loop_lag_ns.max() / 1e6) if len(result.loop_lag_ns) else 0,
        "max_rss_run_bytes": max_rss_run_bytes,
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
