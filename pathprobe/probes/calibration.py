"""pathprobe's own latency floor on this machine: the load engine against a do-nothing server.

:func:`calibrate` starts a null HTTP endpoint on ``127.0.0.1`` (port 0) in a separate process — a
raw asyncio ``Protocol`` that answers every request with a fixed ``200`` at once — pinned to another
core when there are at least two, drives it open-loop with the real load engine (``aiohttp`` or
``fast``; latency from the intended send time, exactly as in a diagnosis) at a modest rate, and
returns the latency distribution. Nothing a path measures can be told apart from zero below this
floor. The server process is always killed and reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from typing import Any

import numpy as np

# The null server: answers each request (GET, no body: one request per blank line) immediately.
# Bounded: exits after 120 s even if nobody kills it.
NULL_SERVER_SCRIPT = r"""
import asyncio, sys
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"

class Null(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""
    def data_received(self, data):
        self.buf += data
        n = self.buf.count(b"\r\n\r\n")
        if n:
            self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4:]
            self.transport.write(RESP * n)

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Null, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""
START_TIMEOUT_S = 5.0


def _pick_cores() -> tuple[int | None, set[int] | None]:
    """(server core, client thread cores) — the server on a core the client thread leaves free."""
    try:
        mine = os.sched_getaffinity(0)
    except OSError:
        return None, None
    others = set(range(os.cpu_count() or 1)) - mine
    if others:
        return min(others), None
    if len(mine) >= 2:
        server = max(mine)
        return server, mine - {server}
    return None, None


async def calibrate_async(
    duration_s: float = 2.0, rate_rps: float = 500, *, engine: str = "aiohttp"
) -> dict[str, Any]:
    """Measure the floor; see the module docstring. Returns ``floor_ms`` {p50, p90, p99} and how it
    was measured. ``engine`` is the load engine's name (``aiohttp`` or ``fast``): pass the one the
    diagnosis runs with, the floor is that engine's. Never raises for environment reasons: a
    failure gives ``available: false``."""
    from pathprobe.config import LoadProfile
    from pathprobe.errors import PathprobeError
    from pathprobe.load.engine import EngineOptions
    from pathprobe.load.payloads import PayloadPool
    from pathprobe.load.schedule import plan_step
    from pathprobe.load.select import build_engine
    from pathprobe.model.records import completed

    server_core, client_cores = _pick_cores()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        NULL_SERVER_SCRIPT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    saved_affinity: set[int] | None = None
    t0 = time.monotonic()
    try:
        if server_core is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(proc.pid, {server_core})
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
        port = int(line.strip() or b"0")
        if port <= 0:
            raise RuntimeError("the null server did not start")
        if client_cores:
            # Only this thread (the event loop's) moves; restored below.
            with contextlib.suppress(OSError):
                saved_affinity = os.sched_getaffinity(0)
                os.sched_setaffinity(0, client_cores)
        warmup_s = min(0.25, duration_s / 5)
        profile = LoadProfile(
            rates=(float(rate_rps),),
            concurrency=None,
            duration_s=max(duration_s - warmup_s, 0.1),
            warmup_s=warmup_s,
            seed=1,
            connections=64,
            timeout_s=5.0,
            connect_timeout_s=2.0,
        )
        plan = plan_step(profile, 0, 0, cycle=False)
        runner = build_engine(engine, profile, PayloadPool((), cycle=False), EngineOptions())
        result = await runner.run_step("calibration", f"http://127.0.0.1:{port}/", plan)
    except (OSError, ValueError, TimeoutError, RuntimeError, PathprobeError) as exc:
        return {
            "available": False,
            "reason": f"calibration failed: {exc}",
            "how_to_enable": "check that a local process may listen on 127.0.0.1",
            "floor_ms": None,
        }
    finally:
        if saved_affinity:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, saved_affinity)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
    recs = result.records[result.records["seq"] >= result.first_measured_seq]
    ok = recs[completed(recs)]
    lat_ms = (ok["end_ns"] - ok["intended_ns"]) / 1e6
    svc_ms = (ok["end_ns"] - ok["actual_ns"]) / 1e6

    def pcts(values: Any) -> dict[str, float | None]:
        if len(values) == 0:
            return {"p50": None, "p90": None, "p99": None}
        p = np.percentile(values, [50, 90, 99])
        return {"p50": round(float(p[0]), 4), "p90": round(float(p[1]), 4),
                "p99": round(float(p[2]), 4)}  # fmt: skip

    return {
        "available": len(ok) > 0,
        "reason": None if len(ok) else "no calibration request completed",
        "how_to_enable": None,
        "floor_ms": pcts(lat_ms),
        "service_floor_ms": pcts(svc_ms),
        "requests": int(len(recs)),
        "completed": int(len(ok)),
        "rate_rps": float(rate_rps),
        "duration_s": float(duration_s),
        "engine": result.engine,
        "server_core": server_core,
        "wall_s": round(time.monotonic() - t0, 3),
    }


def calibrate(
    duration_s: float = 2.0, rate_rps: float = 500, *, engine: str = "aiohttp"
) -> dict[str, Any]:
    """Blocking form of :func:`calibrate_async` (for callers without a running event loop)."""
    return asyncio.run(calibrate_async(duration_s, rate_rps, engine=engine))
