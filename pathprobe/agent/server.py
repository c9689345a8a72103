"""``pathprobe agent``: the server probe run beside a model server on another host.

A small aiohttp service (a sidecar in Kubernetes) that records server-probe windows locally and
hands their summaries to ``pathprobe diagnose --agent URL``. It is a door into the server it
watches, so it is kept narrow (issue 8):

* every endpoint needs ``Authorization: Bearer TOKEN``, compared in constant time
  (:func:`hmac.compare_digest` on bytes) — 401 otherwise, before any routing;
* it binds 127.0.0.1 unless told otherwise;
* it profiles only the processes it was started for: the ``--pid`` trees (restarted workers
  included, as children of those PIDs) and the processes of ``--cgroup``; a request naming any
  other PID gets 403;
* every recording stops by itself after ``max_record_s`` (120 s by default) and at most
  ``max_concurrent`` (2) run at once — 429 beyond;
* requests carry data only (a path label, a step, optional PIDs); unknown fields are refused with
  400, and nothing a client sends is ever run or passed to a shell.

Endpoints (JSON in and out):

* ``GET  /v1/info`` → agent version, watched PIDs, limits, what the probe can observe;
* ``POST /v1/windows`` ``{"path": str, "step": int, "pids"?: [int]}`` → ``{"id": str, ...}``;
* ``POST /v1/windows/{id}/stop`` → the window summary (:mod:`pathprobe.probes.server`), with
  ``"truncated": true`` when the length cap stopped it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import signal
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from pathprobe import __version__
from pathprobe.config import ProbeOptions
from pathprobe.probes import cgroups
from pathprobe.probes.base import JSONDict, Window
from pathprobe.probes.processes import descendants
from pathprobe.probes.sample_budget import SAMPLE_BUDGET_HZ
from pathprobe.probes.server import ServerProbe

DEFAULT_PORT = 9787
DEFAULT_MAX_RECORD_S = 120.0
DEFAULT_MAX_CONCURRENT = 2
#: py-spy samples per second per process; 0 shares a budget among the processes that work
#: (pathprobe.probes.sample_budget), as a local --server-pid does.
DEFAULT_RATE_HZ = 0
MIN_TOKEN_CHARS = 16
#: Finished summaries kept for a late ``stop`` call; the oldest are dropped beyond this.
KEEP_FINISHED = 32
_PATH_LABEL = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_ALLOWED_FIELDS = frozenset({"path", "step", "pids"})


@dataclass(frozen=True)
class AgentSettings:
    """How one agent runs; built and validated by the CLI."""

    token: str
    pids: tuple[int, ...] = ()
    cgroup: Path | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_record_s: float = DEFAULT_MAX_RECORD_S
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    rate_hz: int = DEFAULT_RATE_HZ
    stage_rules: tuple[tuple[str, str], ...] = ()


@dataclass
class _Recording:
    id: str
    path: str
    step: int
    probe: ServerProbe
    window: Window
    started_s: float
    auto_stop: asyncio.TimerHandle | None = None
    task: asyncio.Task[JSONDict] | None = None  # the stop in progress, once one began
    dedicated: bool = False  # a probe of its own (request named PIDs): closed after stopping
    summary: JSONDict | None = field(default=None)


class Agent:
    """The agent's state: one shared probe over its PIDs, the recordings in flight."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.token_bytes = settings.token.encode("utf-8")
        self.probe = self._make_probe(settings.pids)
        self.active: dict[str, _Recording] = {}
        self.finished: OrderedDict[str, JSONDict] = OrderedDict()
        self._lock = asyncio.Lock()

    def _make_probe(self, pids: tuple[int, ...]) -> ServerProbe:
        options = ProbeOptions(server_pids=pids, stage_rules=self.settings.stage_rules)
        return ServerProbe(
            options,
            cgroup=self.settings.cgroup if not pids or pids == self.settings.pids else None,
            rate_hz=self.settings.rate_hz or None,
            # py-spy's own cap: a little beyond ours, so our stop (which collects) comes first.
            max_record_s=int(self.settings.max_record_s) + 5,
            keep_windows=False,  # a long-lived agent must not grow with every window
        )

    def allowed_pids(self) -> set[int]:
        """The processes this agent may profile, now: its PID trees and its cgroup."""
        allowed = descendants(self.settings.pids)
        if self.settings.cgroup is not None:
            paths = cgroups.cgroup_from_path(self.settings.cgroup)
            if paths is not None:
                allowed |= cgroups.cgroup_pids(paths)
        allowed.discard(os.getpid())  # never the agent itself, even inside the watched cgroup
        return allowed

    # -- handlers ---------------------------------------------------------------------------

    async def info(self, request: web.Request) -> web.Response:
        probe = self.probe
        return web.json_response(
            {
                "agent": "pathprobe",
                "version": __version__,
                "pids": list(self.settings.pids),
                "cgroup": None if self.settings.cgroup is None else str(self.settings.cgroup),
                "max_record_s": self.settings.max_record_s,
                "max_concurrent": self.settings.max_concurrent,
                "active": len(self.active),
                "available": probe.unavailable is None,
                "reason": None if probe.unavailable is None else probe.unavailable.reason,
                "how_to_enable": (
                    None if probe.unavailable is None else probe.unavailable.how_to_enable
                ),
                "profiler": {
                    "tool": "py-spy",
                    "version": probe.py_spy_version,
                    "rate_hz": probe.rate_hz,
                    "sample_budget_hz": None if probe.rate_hz else SAMPLE_BUDGET_HZ,
                    **ServerProbe._part(probe.profile_unavailable),
                },
                "cgroup_state": ServerProbe._part(probe.cgroup_unavailable),
                "watched_pids": sorted(await asyncio.to_thread(self.allowed_pids)),
            }
        )

    async def start(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        unknown = sorted(set(body) - _ALLOWED_FIELDS)
        if unknown:
            raise _error(web.HTTPBadRequest, f"unknown field {unknown[0]!r}")
        path = body.get("path")
        step = body.get("step", 0)
        if not isinstance(path, str) or not _PATH_LABEL.match(path):
            raise _error(web.HTTPBadRequest, "path must be a label of 1-64 [A-Za-z0-9_.-]")
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < 10_000:
            raise _error(web.HTTPBadRequest, "step must be an integer from 0 to 9999")
        pids = body.get("pids")
        if pids is not None:
            if (
                not isinstance(pids, list)
                or not pids
                or len(pids) > 64
                or not all(isinstance(p, int) and not isinstance(p, bool) for p in pids)
            ):
                raise _error(web.HTTPBadRequest, "pids must be a list of process ids")
            allowed = await asyncio.to_thread(self.allowed_pids)
            foreign = sorted(set(pids) - allowed)
            if foreign:
                raise _error(
                    web.HTTPForbidden,
                    f"PID {foreign[0]} is not one of the processes this agent was started for",
                )
        async with self._lock:
            if len(self.active) >= self.settings.max_concurrent:
                raise _error(
                    web.HTTPTooManyRequests,
                    f"{len(self.active)} recordings already running "
                    f"(at most {self.settings.max_concurrent})",
                )
            rec_id = secrets.token_hex(8)
            probe = self.probe
            wanted = tuple(sorted(set(pids))) if pids is not None else None
            dedicated = wanted is not None and wanted != tuple(sorted(self.settings.pids))
            if dedicated:
                probe = self._make_probe(wanted or ())
                await probe.open()
            window = Window(path=rec_id, url="", step=step, offered_rps=None,
                            start_ns=time.monotonic_ns())  # fmt: skip
            await probe.start_window(window)
            rec = _Recording(rec_id, path, step, probe, window, time.monotonic(),
                             dedicated=dedicated)  # fmt: skip
            loop = asyncio.get_running_loop()
            rec.auto_stop = loop.call_later(self.settings.max_record_s, self._auto_stop, rec_id)
            self.active[rec_id] = rec
        return web.json_response(
            {"id": rec_id, "path": path, "step": step, "max_record_s": self.settings.max_record_s},
            status=201,
        )

    async def stop(self, request: web.Request) -> web.Response:
        rec_id = request.match_info["id"]
        if rec_id in self.finished:
            return web.json_response(self.finished[rec_id])
        rec = self.active.get(rec_id)
        if rec is None:
            raise _error(web.HTTPNotFound, "no such recording")
        summary = await self._stop(rec, truncated=False)
        return web.json_response(summary)

    # -- stopping ---------------------------------------------------------------------------

    def _auto_stop(self, rec_id: str) -> None:
        rec = self.active.get(rec_id)
        if rec is not None and rec.task is None:
            rec.task = asyncio.ensure_future(self._do_stop(rec, truncated=True))

    async def _stop(self, rec: _Recording, truncated: bool) -> JSONDict:
        if rec.task is None:
            rec.task = asyncio.ensure_future(self._do_stop(rec, truncated))
        return await asyncio.shield(rec.task)

    async def _do_stop(self, rec: _Recording, truncated: bool) -> JSONDict:
        if rec.auto_stop is not None:
            rec.auto_stop.cancel()
        window = Window(rec.window.path, "", rec.step, None, rec.window.start_ns,
                        end_ns=time.monotonic_ns())  # fmt: skip
        try:
            summary = await rec.probe.stop_window(window)
            if rec.dedicated:
                await rec.probe.close()
        finally:
            self.active.pop(rec.id, None)
        summary = dict(summary, path=rec.path, step=rec.step, truncated=truncated, id=rec.id)
        self.finished[rec.id] = summary
        while len(self.finished) > KEEP_FINISHED:
            self.finished.popitem(last=False)
        return summary

    async def shutdown(self) -> None:
        """Stop every recording (py-spy reaped) and close the probe."""
        for rec in list(self.active.values()):
            with contextlib.suppress(Exception):
                await self._stop(rec, truncated=True)
        await self.probe.close()


def _error(kind: type[web.HTTPException], message: str) -> web.HTTPException:
    return kind(text=json.dumps({"error": message}), content_type="application/json")


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise _error(web.HTTPBadRequest, "body must be a JSON object") from None
    if not isinstance(body, dict):
        raise _error(web.HTTPBadRequest, "body must be a JSON object")
    return body


def auth_middleware(token_bytes: bytes) -> Middleware:
    """401 unless ``Authorization: Bearer <token>`` matches, in constant time, on every route."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, supplied = header.partition(" ")
        supplied_bytes = supplied.strip().encode("utf-8", "replace")
        # compare_digest runs in time independent of where the strings differ.
        valid = hmac.compare_digest(supplied_bytes, token_bytes)
        if scheme.lower() != "bearer" or not valid:
            return web.json_response(
                {"error": "missing or wrong bearer token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="pathprobe-agent"'},
            )
        return await handler(request)

    return check


def create_app(agent: Agent) -> web.Application:
    """The aiohttp application; the probe is opened on startup and closed on cleanup."""
    app = web.Application(
        middlewares=[auth_middleware(agent.token_bytes)], client_max_size=64 * 1024
    )
    app.router.add_get("/v1/info", agent.info)
    app.router.add_post("/v1/windows", agent.start)
    app.router.add_post("/v1/windows/{id}/stop", agent.stop)

    async def on_startup(_: web.Application) -> None:
        await agent.probe.open()

    async def on_cleanup(_: web.Application) -> None:
        await agent.shutdown()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(settings: AgentSettings, ready: Callable[[str], None] | None = None) -> None:
    """Run the agent until SIGINT/SIGTERM; ``ready`` gets the URL once it listens."""
    agent = Agent(settings)
    app = create_app(agent)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        port = settings.port
        server = getattr(site, "_server", None)
        if server is not None and getattr(server, "sockets", None):
            port = server.sockets[0].getsockname()[1]
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        if ready is not None:
            ready(f"http://{host}:{port}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    finally:
        await runner.cleanup()


def run_agent(settings: AgentSettings) -> None:
    """Blocking entry point for the CLI: prints ``listening URL`` on stdout when ready."""

    def ready(url: str) -> None:
        sys.stdout.write(f"listening {url}\n")
        sys.stdout.flush()
        if not is_loopback(settings.host):
            sys.stderr.write(
                f"pathprobe agent: listening on non-loopback {settings.host}; anyone who can reach "
                "it and holds the token can profile the watched processes\n"
            )

    asyncio.run(serve(settings, ready))
