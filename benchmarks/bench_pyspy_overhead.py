"""What profiling with py-spy costs the server, at the sampling rates pathprobe might use.

The model server of the server-probe tests (tests/integration/serverprobe_app.py, ``light`` mode:
numpy matmuls, 2 pre-forked workers) runs pinned to the last CPU; this process drives a closed
loop of POSTs (concurrency 4) from CPU 0. Windows without any probe and with
:class:`~pathprobe.probes.server.ServerProbe` at each rate are interleaved (the order rotates every
repeat) so drift in the shared machine's load hits all alike. py-spy is moved onto the *server's*
CPU — the pessimistic placement, as for an agent on a busy node.

"-s" rows: one ``py-spy record --subprocesses`` on the master instead of one py-spy per process.
Per window: server CPU-seconds (the worker tree, psutil), py-spy CPU-seconds (read just before it
is stopped), throughput (responses/s). Reported: medians over the repeats of
py-spy CPU ÷ server CPU, and throughput relative to the no-probe windows.

Run as root:  .venv/bin/python benchmarks/bench_pyspy_overhead.py [--rates 20,50,100]
              [--repeats 5] [--duration 8] [--json out.json]
"budget" rows: no rate given, pathprobe's default (pathprobe.probes.sample_budget): scouts at
2 Hz, the busy workers sharing the rest of 100 samples/s.
The target: py-spy ≤ 3 % of a core, and the server's throughput within 3 % of no probe.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from serverprobe_helpers import App, start_app  # noqa: E402

from pathprobe.config import ProbeOptions  # noqa: E402
from pathprobe.probes.base import Window  # noqa: E402
from pathprobe.probes.sample_budget import DEFAULT_RATE_HZ  # noqa: E402
from pathprobe.probes.server import ServerProbe  # noqa: E402

BODY = b"\x07" * 4096


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
    return total


async def closed_loop(url: str, duration_s: float, concurrency: int) -> int:
    done = 0
    deadline = time.monotonic() + duration_s
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(force_close=True, limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.post(url, data=BODY) as resp:
                        await resp.read()
                        done += resp.status == 200

        await asyncio.gather(*(one() for _ in range(concurrency)))
    return done


async def move_py_spy(cpus: set[int]) -> None:
    """Pin every py-spy child of this process to ``cpus``, now and every 0.1 s."""
    while True:
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error):
                if "py-spy" in child.name() and set(child.cpu_affinity()) != cpus:
                    child.cpu_affinity(list(cpus))
        await asyncio.sleep(0.1)


async def window(
    app: App, rate_hz: int | None, duration_s: float, per_process: bool = True
) -> dict[str, Any]:
    server_cpu = app.workers()[-1]  # any worker: they share the server's pinned CPU
    server_cpus = os.sched_getaffinity(server_cpu)
    probe = None
    mover = None
    if rate_hz is not None:
        probe = ServerProbe(
            ProbeOptions(server_pids=(app.pid,)), rate_hz=rate_hz or None, per_process=per_process
        )
        await probe.open()
        await probe.start_window(Window("direct", app.url, 0, None, time.monotonic_ns()))
        # The budget re-records promoted processes during the window: keep moving py-spy.
        mover = asyncio.ensure_future(move_py_spy(server_cpus))
    cpu0 = tree_cpu_seconds(app.pid)
    t0 = time.monotonic()
    done = await closed_loop(app.url + "/predict", duration_s, concurrency=4)
    elapsed = time.monotonic() - t0
    if mover is not None:
        mover.cancel()
    server_cpu_s = tree_cpu_seconds(app.pid) - cpu0
    spy_cpu_s = None
    if probe is not None:
        summary = await probe.stop_window(
            Window("direct", app.url, 0, None, time.monotonic_ns(), time.monotonic_ns())
        )
        await probe.close()
        spy_cpu_s = summary["profiler_cpu_seconds"]
    return {
        "rate_hz": rate_hz,
        "mode": None if rate_hz is None else ("per-process" if per_process else "subprocesses"),
        "throughput_rps": done / elapsed,
        "server_cpu_s": server_cpu_s,
        "server_cores": server_cpu_s / elapsed,
        "pyspy_cpu_s": spy_cpu_s,
        "pyspy_cores": None if spy_cpu_s is None else spy_cpu_s / elapsed,
        "pyspy_share": None if spy_cpu_s is None else spy_cpu_s / server_cpu_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="20,50,100")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    # (rate, per_process): no probe, each rate one py-spy per process, the sample budget (rate 0,
    # pathprobe's default), and the default rate with one `--subprocesses` py-spy on the master.
    conditions: list[tuple[int | None, bool]] = [
        (None, True),
        *((r, True) for r in rates),
        (0, True),
        (DEFAULT_RATE_HZ, False),
    ]
    os.sched_setaffinity(0, {0})
    results: list[dict[str, Any]] = []
    with start_app("light", workers=2) as app:
        asyncio.run(closed_loop(app.url + "/predict", 2.0, 4))  # warm-up
        for repeat in range(args.repeats):
            shift = repeat % len(conditions)
            for rate, per_process in conditions[shift:] + conditions[:shift]:
                row = asyncio.run(window(app, rate, args.duration, per_process))
                row["repeat"] = repeat
                results.append(row)
                print(json.dumps(row), file=sys.stderr)
    none = [r for r in results if r["rate_hz"] is None]
    baseline = statistics.median(r["throughput_rps"] for r in none)
    server_cores = statistics.median(r["server_cores"] for r in none)
    print(
        f"no probe: median throughput {baseline:.1f} req/s, server used {server_cores:.2f} cores "
        f"(default rate {DEFAULT_RATE_HZ} Hz)"
    )
    print(
        f"{'rate Hz':>8} {'py-spy/server CPU':>18} {'py-spy cores':>13} {'server cores':>13} "
        f"{'throughput':>11} {'vs none':>8}"
    )
    table = []
    for rate, per_process in conditions[1:]:
        mode = "per-process" if per_process else "subprocesses"
        rows = [r for r in results if r["rate_hz"] == rate and r["mode"] == mode]
        share = statistics.median(r["pyspy_share"] for r in rows if r["pyspy_share"] is not None)
        spy_cores = statistics.median(r["pyspy_cores"] for r in rows if r["pyspy_cores"])
        srv_cores = statistics.median(r["server_cores"] for r in rows)
        rps = statistics.median(r["throughput_rps"] for r in rows)
        table.append({"rate_hz": rate, "mode": mode, "pyspy_share_median": share,
                      "pyspy_cores": spy_cores,
                      "server_cores": srv_cores, "throughput_median": rps,
                      "throughput_vs_none": rps / baseline})  # fmt: skip
        print(
            f"{rate or 'budget':>8}{'' if per_process else ' -s'} {share * 100:>14.2f}% "
            f"{spy_cores:>13.3f} "
            f"{srv_cores:>13.2f} "
            f"{rps:>11.1f} {rps / baseline * 100:>7.1f}%"
        )
    if args.json:
        args.json.write_text(json.dumps({"baseline_rps": baseline, "table": table,
                                         "windows": results}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
