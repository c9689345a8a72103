"""Start a test server subprocess, read its port, and always stop it (by PID)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def serve(module: str, *args: str, cpu: int | None = None) -> Iterator[tuple[int, int]]:
    """Run ``python -m module args…``; yields ``(port, pid)``; kills it on exit."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        env=env,
        cwd=ROOT,
        text=True,
    )
    try:
        if cpu is not None and cpu < (os.cpu_count() or 1):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(proc.pid, {cpu})
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip():
            raise RuntimeError(f"{module} did not print its port")
        yield int(line), proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@contextlib.contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """Pin the calling process to ``cpu`` (the client core) for the duration, then restore."""
    before = os.sched_getaffinity(0)
    if cpu >= (os.cpu_count() or 1):
        yield
        return
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
