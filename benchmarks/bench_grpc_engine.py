"""Requests per client CPU-second: pathprobe's gRPC engine against a bare grpcio client.

    .venv/bin/python benchmarks/bench_grpc_engine.py [--seconds 5] [--concurrency 50] [--repeats 3]

Both drive the same grpc.aio test server (tests/servers/grpc_infer.py, no delay, pinned to CPU 1)
closed loop with the same number of requests in flight over one channel, on uvloop, pinned to
CPU 0, each in a fresh interpreter. The bare client is the least a grpc.aio client can do per
request: pre-serialized bytes in, bytes out, nothing recorded. The CPU is the client process's
(every thread: grpcio polls in threads of its own), from ``time.process_time``. ghz is not a
Debian or PyPI package here, so the bare client is the comparison.

Printed: the median of each, and pathprobe's share of the bare client's rate per CPU-second.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers.process import serve  # noqa: E402

BARE = """
import asyncio, json, os, sys, time
import grpc, uvloop
from pathprobe.grpcproto import grpc_predict_v2_pb2 as pb
port, seconds, concurrency = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
os.sched_setaffinity(0, {0})

async def main():
    body = pb.ModelInferRequest(model_name="m").SerializeToString()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        await infer(body, timeout=5)
        done = 0
        deadline = time.monotonic() + seconds

        async def user():
            nonlocal done
            while time.monotonic() < deadline:
                await infer(body, timeout=5)
                done += 1

        cpu0, t0 = time.process_time(), time.monotonic()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        print(json.dumps({"requests": done, "cpu_s": time.process_time() - cpu0,
                          "wall_s": time.monotonic() - t0}))

uvloop.run(main())
"""

PATHPROBE = """
import asyncio, json, os, sys, time
from pathprobe.config import build_config
from pathprobe.load.engine import EngineOptions
from pathprobe.load.oip import build_grpc_pool
from pathprobe.load.schedule import plan_step
from pathprobe.load.select import build_engine, loop_factory
port, seconds, concurrency = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
os.sched_setaffinity(0, {0})
url = f"grpc://127.0.0.1:{port}/models/m"
config = build_config({"out": "/tmp/x", "path": {"direct": url}, "concurrency": concurrency,
                       "duration": seconds, "warmup": 0, "connections": 1})
pool = build_grpc_pool(config.load.payload, 1)
plan = plan_step(config.load, 0, len(pool), pool.cycle)

async def main():
    options = EngineOptions(capture_headers=("server-timing",))
    engine = build_engine("grpc", config.load, pool, options)
    cpu0, t0 = time.process_time(), time.monotonic()
    result = await engine.run_step("direct", url, plan)
    tally = result.tally
    ok = tally.all_requests - sum(tally.errors_by_kind.values())
    print(json.dumps({"requests": ok, "cpu_s": time.process_time() - cpu0,
                      "wall_s": time.monotonic() - t0}))

with asyncio.Runner(loop_factory=loop_factory()) as runner:
    runner.run(main())
"""


def run(script: str, port: int, seconds: float, concurrency: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(script)
    try:
        done = subprocess.run(
            [sys.executable, fh.name, str(port), str(seconds), str(concurrency)],
            capture_output=True, text=True, timeout=seconds + 60, check=True, cwd=ROOT,
            env={"PYTHONPATH": str(ROOT), "GRPC_VERBOSITY": "ERROR", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    finally:
        Path(fh.name).unlink()
    out: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {"bare grpcio": [], "pathprobe grpc": []}
    with tempfile.TemporaryDirectory() as tmp:
        record = str(Path(tmp) / "received.json")
        with serve("tests.servers.grpc_infer", "0", record, "m", cpu=1) as (port, _pid):
            for _ in range(args.repeats):  # interleaved, so drift favours neither
                rows["bare grpcio"].append(run(BARE, port, args.seconds, args.concurrency))
                rows["pathprobe grpc"].append(run(PATHPROBE, port, args.seconds, args.concurrency))
    per_cpu = {}
    for name, results in rows.items():
        per_cpu[name] = statistics.median(r["requests"] / r["cpu_s"] for r in results)
        rate = statistics.median(r["requests"] / r["wall_s"] for r in results)
        cpu = statistics.median(r["cpu_s"] / r["wall_s"] for r in results)
        print(f"{name:15s} {per_cpu[name]:8.0f} requests/CPU-s  {rate:8.0f} requests/s  "
              f"client CPU {cpu:.0%} of a core")  # fmt: skip
    share = per_cpu["pathprobe grpc"] / per_cpu["bare grpcio"]
    print(f"pathprobe / bare: {share:.2f}x requests per CPU-second")


if __name__ == "__main__":
    main()
