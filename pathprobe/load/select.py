"""Which engine runs a step: the :class:`Engine` protocol and :func:`make_engine`.

``engine = "auto"`` picks the fast engine (:mod:`pathprobe.load.fast`) whenever it can send the
request — plain ``http://`` and not ``HEAD`` — because it costs a fraction of aiohttp's CPU per
request, so the client stays out of the verdict; otherwise the full-featured aiohttp engine.
Asking for ``fast`` where it cannot run is a :class:`UsageError` (before any load is sent).
``grpc://`` and ``grpcs://`` paths always get the gRPC engine (:mod:`pathprobe.load.grpc_engine`),
imported only then, so that a core install without grpcio runs HTTP paths as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from pathprobe.config import LoadProfile
from pathprobe.errors import UsageError
from pathprobe.grpc_url import is_grpc_url, require_grpc
from pathprobe.load.engine import AiohttpEngine, EngineOptions
from pathprobe.load.fast import FastEngine, check_supported
from pathprobe.load.payloads import PayloadPool
from pathprobe.load.schedule import StepPlan
from pathprobe.model.results import StepResult

if TYPE_CHECKING:
    from pathprobe.load.grpc_engine import GrpcEngine


class Engine(Protocol):
    """Runs one step of one path and returns every request's record."""

    name: str

    async def run_step(self, path: str, url: str, plan: StepPlan) -> StepResult: ...


def engine_name(profile: LoadProfile, urls: Sequence[str]) -> str:
    """The concrete engine (``aiohttp``, ``fast`` or ``grpc``) for ``profile`` over all of ``urls``.

    One engine serves every path of a diagnosis, so that hop deltas never mix two clients.
    Raises :class:`UsageError` when ``fast`` was asked for and cannot run one of the URLs, or
    when gRPC paths are given without grpcio installed.
    """
    if any(is_grpc_url(u) for u in urls):
        require_grpc()  # config already made sure every path is gRPC
        return "grpc"
    if profile.engine == "aiohttp":
        return "aiohttp"
    reasons = [r for r in (check_supported(u, profile) for u in urls) if r is not None]
    if profile.engine == "fast":
        if reasons:
            raise UsageError(f"--engine fast: {reasons[0]}")
        return "fast"
    return "aiohttp" if reasons else "fast"


def make_engine(
    profile: LoadProfile,
    pool: PayloadPool,
    options: EngineOptions,
    stop: asyncio.Event | None = None,
    urls: Sequence[str] = (),
) -> Engine:
    """The engine for ``profile`` (see :func:`engine_name`); ``urls`` are the paths it will load.

    With ``profile.workers > 1`` the result is a :class:`~pathprobe.load.workers.WorkerPool` that
    runs the chosen engine in that many processes; call its ``close()`` when done and give
    ``worker_pids()`` to the client probe. With ``profile.ray`` it is a
    :class:`~pathprobe.load.ray_pool.RayWorkerPool` of that many Ray actors instead.
    """
    name = engine_name(profile, urls)
    if profile.ray is not None:  # the same workers, as actors on a Ray cluster
        from pathprobe.load.ray_pool import RayWorkerPool

        return RayWorkerPool(profile, pool, options, stop, engine=name)
    if profile.workers > 1:
        from pathprobe.load.workers import WorkerPool

        return WorkerPool(profile, pool, options, stop, engine=name)
    return build_engine(name, profile, pool, options, stop)


def build_engine(
    name: str,
    profile: LoadProfile,
    pool: PayloadPool,
    options: EngineOptions,
    stop: asyncio.Event | None = None,
) -> AiohttpEngine | FastEngine | GrpcEngine:
    """One in-process engine by name."""
    if name == "grpc":
        require_grpc()
        from pathprobe.load.grpc_engine import GrpcEngine

        return GrpcEngine(profile, pool, options, stop)
    if name == "fast":
        return FastEngine(profile, pool, options, stop)
    if name == "aiohttp":
        return AiohttpEngine(profile, pool, options, stop)
    raise UsageError(f"--engine must be auto, aiohttp or fast, got {name!r}")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop to run load in: uvloop (several times cheaper per request) if importable.

    Use as ``asyncio.Runner(loop_factory=loop_factory())`` (Python 3.11) so the fast engine runs
    on uvloop; it works on the default loop too, only slower.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep working without it
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
