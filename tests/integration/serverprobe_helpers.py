"""Helpers for the server-probe and agent tests: the model server, bounded load, cgroups."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil
from PIL import Image

APP = Path(__file__).parent / "serverprobe_app.py"


@dataclass
class App:
    proc: subprocess.Popen[bytes]
    port: int
    #: Every worker PID ever seen: killed at the end even if the master died first.
    seen: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        try:
            pids = sorted(c.pid for c in psutil.Process(self.pid).children())
        except psutil.Error:
            return []
        self.seen.update(pids)
        return pids


@contextlib.contextmanager
def start_app(mode: str, workers: int, timeout_s: float = 60.0) -> Iterator[App]:
    """The model server in a subprocess; every process of its tree is killed afterwards."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, str(APP), mode, str(workers)], stdout=subprocess.PIPE, env=env
    )
    tree: set[int] = {proc.pid}
    app: App | None = None
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                raise RuntimeError("model server did not start")
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 256)
                if not chunk:
                    raise RuntimeError("model server closed stdout")
                line += chunk
        port = int(line.split()[1])
        app = App(proc, port)
        app.workers()
        yield app
    finally:
        if app is not None:
            app.workers()
            tree |= app.seen
        with contextlib.suppress(psutil.Error):
            tree |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for pid in tree - {proc.pid}:
            with contextlib.suppress(psutil.Error):
                worker = psutil.Process(pid)
                # Only our own workers: a recycled PID now belongs to someone else.
                if worker.cmdline()[1:2] == [str(APP)]:
                    worker.kill()
        if proc.stdout is not None:
            proc.stdout.close()


def jpeg(side_px: int, seed: int) -> bytes:
    """A noisy RGB JPEG (noise keeps decoding honest work)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(side_px, side_px, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


async def drive(url: str, body: bytes, requests: int, concurrency: int, time_limit_s: float) -> int:
    """POST ``body`` to ``url`` up to ``requests`` times or ``time_limit_s``; returns the 200s."""
    ok = 0
    sent = 0
    deadline = time.monotonic() + time_limit_s
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(force_close=True, limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one() -> None:
            nonlocal ok, sent
            while sent < requests and time.monotonic() < deadline:
                sent += 1
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.post(url, data=body) as resp:
                        await resp.read()
                        ok += resp.status == 200

        await asyncio.gather(*(one() for _ in range(concurrency)))
    return ok


@contextlib.contextmanager
def v1_cgroup(controller: str, settings: dict[str, str]) -> Iterator[Path]:
    """A fresh cgroup v1 ``/sys/fs/cgroup/CONTROLLER/pathprobe-test-…``, removed afterwards.

    Processes still in it at the end are moved to the root cgroup first so it can be removed.
    """
    path = Path("/sys/fs/cgroup") / controller / f"pathprobe-test-{secrets.token_hex(4)}"
    path.mkdir()
    try:
        for name, value in settings.items():
            (path / name).write_text(value)
        yield path
    finally:
        deadline = time.monotonic() + 10
        while True:
            try:
                path.rmdir()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                for pid in (path / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        (path.parent / "cgroup.procs").write_text(pid)
                time.sleep(0.2)


def move_to_cgroup(path: Path, pids: list[int]) -> None:
    for pid in pids:
        (path / "cgroup.procs").write_text(str(pid))
