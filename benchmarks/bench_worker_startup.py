"""CPU that starting ``--workers N`` load workers costs, as the ``pathprobe`` command starts them.

    .venv/bin/python benchmarks/bench_worker_startup.py [--workers 2] [--repeats 5]

Each repeat runs a fresh interpreter on a script file that imports the CLI first (as the
``pathprobe`` command's script does), starts a :class:`~pathprobe.load.workers.WorkerPool` and,
once every worker reported ready, sums the CPU time of all its descendant processes (workers, the
fork server, multiprocessing's resource tracker). Three ways to start them:

* ``spawn+main`` — as before 2026-11-25 19:00: spawned, each re-running the main script;
* ``spawn`` — spawned, main script hidden (each worker still imports the load modules);
* ``forkserver`` — what pathprobe does: forked from a server that imported them once.

Printed: the median of each and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import contextlib
import json
import sys

import psutil

import pathprobe.cli.main  # noqa: F401 - the command's imports, at module level like its script
import pathprobe.load.workers
from pathprobe.config import build_config
from pathprobe.load.engine import EngineOptions
from pathprobe.load.payloads import build_pool
from pathprobe.load.workers import WorkerPool

if __name__ == "__main__":
    workers, method = int(sys.argv[1]), sys.argv[2]
    if method == "spawn+main":  # the old behaviour: the main script is not hidden
        pathprobe.load.workers._main_module_hidden = contextlib.nullcontext
        method = "spawn"
    config = build_config({"out": "/tmp/unused", "path": {"direct": "http://127.0.0.1:9/"},
                           "workers": workers})
    pool = build_pool(config.load.payload, config.load.seed)
    with WorkerPool(config.load, pool, EngineOptions(), engine="fast", start_method=method):
        cpu = 0.0
        for p in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                cpu += t.user + t.system
    print(json.dumps({"children_cpu_s": cpu}))
"""


def measure(script: Path, workers: int, method: str) -> float:
    done = subprocess.run(
        [sys.executable, str(script), str(workers), method],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    return float(json.loads(done.stdout.strip().splitlines()[-1])["children_cpu_s"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    medians = {}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "pathprobe_like_main.py"
        script.write_text(CHILD)
        for method in ("spawn+main", "spawn", "forkserver"):
            runs = [measure(script, args.workers, method) for _ in range(args.repeats)]
            medians[method] = statistics.median(runs)
            print(f"{method:10s} {args.workers} workers: start-up CPU median "
                  f"{medians[method]:.2f} s (runs {', '.join(f'{r:.2f}' for r in runs)})",
                  flush=True)  # fmt: skip
    for method in ("spawn", "forkserver"):
        print(f"{method} / spawn+main: {medians[method] / medians['spawn+main']:.2f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
