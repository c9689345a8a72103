"""``--ray ADDRESS``: the load workers as Ray actors spread over a cluster's nodes (design.md §4b).

The only module that imports ``ray`` (install ``pathprobe[ray]``). Each actor runs the same unit as
a local worker (:func:`pathprobe.load.workers.run_slice` on its slice of the one seeded plan,
interleaved by sequence number) and returns the same mergeable result, merged by
:func:`~pathprobe.load.merge.merge_results` exactly as for local processes. What differs is only
what a cluster needs:

* **Placement.** One actor per worker, one CPU each, in a ``SPREAD`` placement group (over as many
  nodes as the cluster has).
* **A common start.** Actors report ready; before each step the driver measures each actor's
  clock offset (NTP-style round trips over a Ray call, :mod:`pathprobe.load.clock`) and sends a
  start :data:`START_MARGIN_NS` ahead on its own clock, converted into the actor's. Latency is
  timed on the actor from the intended send time; results come back onto the driver's clock.
* **Per-node accounts.** Each actor's CPU over the measured window, loop lag and send slip come
  back with its node (:mod:`pathprobe.load.generators`) for the client gate and the report.
* **Losses.** An actor that dies, or stops answering a ping for :data:`PING_TIMEOUT_S`, is
  declared lost: the step finishes with the others, the loss is reported, later steps split the
  plan over the survivors. Nothing waits forever: every wait here is bounded, and the session's
  watchdog stops (then cancels) a step whose actors overrun; :meth:`RayWorkerPool.close` kills
  them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import ray
import ray.exceptions
import ray.util
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from pathprobe.config import LoadProfile
from pathprobe.errors import CannotRunError, PathprobeError
from pathprobe.load.clock import ClockOffset, estimate_offset, shift_result
from pathprobe.load.engine import EngineOptions
from pathprobe.load.generators import (
    GeneratorWindow,
    WindowCpu,
    WorkerIdentity,
    generator_window,
    lost_window,
)
from pathprobe.load.merge import merge_step
from pathprobe.load.payloads import PayloadPool
from pathprobe.load.schedule import StepPlan
from pathprobe.load.workers import (
    SliceResult,
    SliceSpec,
    WorkerStats,
    run_slice,
    slice_specs,
    worker_count,
    worker_stats,
)
from pathprobe.model.results import StepResult

#: Actors import numpy, aiohttp and uvloop when they start, and a cluster may have to start a
#: worker process for each: slow on a busy node, but bounded.
READY_TIMEOUT_S = 60.0
#: How long to wait for the cluster to have room for every worker (one CPU each).
PLACEMENT_TIMEOUT_S = 30.0
#: Between the start being sent and the first request being due: every actor must have its
#: slice by then (a Ray call takes ~1 ms on a LAN; a late actor shows as schedule slip).
START_MARGIN_NS = 500_000_000
#: Round trips per clock measurement; the shortest one gives the offset.
CLOCK_SAMPLES = 7
#: While a step runs, actors that have not replied are pinged this often ...
LIVENESS_INTERVAL_S = 2.0
#: ... and one that does not answer within this is lost (dead process, dead or cut-off node).
#: An actor answers from its second thread, so a busy one still answers within milliseconds.
PING_TIMEOUT_S = 5.0
#: Connecting to an address that does not answer: checked with one TCP connect first, because
#: ray.init retries an unreachable cluster for a long time.
CONNECT_TIMEOUT_S = 5.0
#: ... and ray.init itself is given this long (it connects in well under a second when it can).
INIT_TIMEOUT_S = 60.0
DEFAULT_GCS_PORT = 6379
DEFAULT_CLIENT_PORT = 10001

log = logging.getLogger(__name__)
# The few Ray functions that carry no annotations, called through Any (mypy strict).
_untyped: Any = ray


@dataclass
class ActorReply:
    """What an actor returns for one slice: the unit's result and its CPU over the window."""

    slice: SliceResult
    window_cpu: tuple[float, float] | None


class LoadActor:
    """One load worker on a Ray node (wrapped with ``ray.remote`` by :class:`RayWorkerPool`).

    Two threads (``max_concurrency=2``): one runs a step; the other answers :meth:`clock` pings
    and :meth:`stop` meanwhile.
    """

    def __init__(self, pool: PayloadPool) -> None:
        import pathprobe.load.engine
        import pathprobe.load.fast  # noqa: F401 - imported before "ready", not during a step

        self._pool = pool
        self._lock = threading.Lock()
        self._current: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._stopped = False  # a stop is for the rest of the run (Ctrl-C, watchdog)

    def hello(self) -> dict[str, Any]:
        """Where this actor runs (it is ready once this answers)."""
        return {
            "node": ray.get_runtime_context().get_node_id(),
            "address": _untyped.util.get_node_ip_address(),
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "boot_id": boot_id(),
        }

    def clock(self) -> int:
        return time.monotonic_ns()

    def run(self, spec: SliceSpec) -> ActorReply:
        """Run one slice (its ``start_ns`` already on this actor's clock)."""
        from pathprobe.load.select import loop_factory

        cpu = WindowCpu(spec.start_ns + spec.plan.warmup_ns, spec.start_ns + spec.plan.total_ns)
        try:
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                stop = asyncio.Event()
                with self._lock:
                    self._current = (runner.get_loop(), stop)
                    if self._stopped:
                        stop.set()
                result = runner.run(run_slice(spec, self._pool, stop))
        finally:
            with self._lock:
                self._current = None
            window_cpu = cpu.finish()
        return ActorReply(result, window_cpu)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._current is not None:
                loop, event = self._current
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(event.set)


@dataclass
class _Actor:
    """The driver's view of one actor."""

    who: WorkerIdentity
    handle: Any
    startup_s: float
    same_host: bool  # same boot id as the driver: CLOCK_MONOTONIC is shared, offset exactly 0
    clock: ClockOffset | None = None
    lost: bool = False

    @property
    def applied_offset_ns(self) -> int:
        if self.same_host or self.clock is None:
            return 0
        return self.clock.offset_ns

    def clock_json(self) -> dict[str, float | int]:
        out: dict[str, Any] = self.clock.as_json() if self.clock is not None else {}
        out["clock_shared"] = self.same_host
        out["startup_s"] = round(self.startup_s, 3)
        return out


class RayWorkerPool:
    """N Ray actors running one engine; itself an engine (``run_step``) for the session.

    Connects (unless Ray is already initialised in this process), places the actors and waits for
    them to be ready at construction; :meth:`close` kills them and disconnects. ``last_generators``
    holds each worker's account of the last step's measured window, ``last_stats`` (as a
    local :class:`~pathprobe.load.workers.WorkerPool`'s) the whole step's cost of each reply.
    """

    def __init__(
        self,
        profile: LoadProfile,
        pool: PayloadPool,
        options: EngineOptions,
        stop: asyncio.Event | None = None,
        *,
        engine: str = "fast",
        address: str | None = None,
        workers: int | None = None,
    ) -> None:
        self.name = engine
        self._engine = engine
        self._profile = profile
        self._options = options
        self._stop = stop
        self.count = worker_count(profile, workers)
        self.address = address or profile.ray or "auto"
        self.last_generators: list[GeneratorWindow] = []
        self.last_stats: list[WorkerStats] = []  # as WorkerPool's: each reply's whole-step cost
        self._actors: list[_Actor] = []
        self._pg: Any = None
        self._owns_ray = connect(self.address)
        try:
            self._place(pool)
        except BaseException:
            self.close()
            raise

    # -- start-up --------------------------------------------------------------------------

    def _place(self, pool: PayloadPool) -> None:
        bundles = [{"CPU": 1.0} for _ in range(self.count)]
        self._pg = placement_group(bundles, strategy="SPREAD", name="pathprobe-load")
        if not self._pg.wait(timeout_seconds=PLACEMENT_TIMEOUT_S):
            free = _untyped.available_resources().get("CPU", 0.0)
            raise CannotRunError(
                f"the Ray cluster at {self.address} has no room for {self.count} load workers "
                f"of 1 CPU each ({free:g} CPUs free)"
            )
        pool_ref = ray.put(pool)
        remote_cls: Any = ray.remote(LoadActor)
        created = time.monotonic()
        handles = [
            remote_cls.options(
                num_cpus=1,
                max_concurrency=2,
                max_restarts=0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=self._pg, placement_group_bundle_index=k
                ),
            ).remote(pool_ref)
            for k in range(self.count)
        ]
        refs = {h.hello.remote(): k for k, h in enumerate(handles)}
        hellos: dict[int, tuple[dict[str, Any], float]] = {}
        pending = list(refs)
        deadline = created + READY_TIMEOUT_S
        try:
            while pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CannotRunError(
                        f"{len(pending)} of {self.count} Ray load workers did not start in "
                        f"{READY_TIMEOUT_S:g} s"
                    )
                ready, pending = ray.wait(pending, num_returns=1, timeout=remaining)
                for ref in ready:
                    hellos[refs[ref]] = (ray.get(ref), time.monotonic() - created)
        except ray.exceptions.RayError as exc:
            raise CannotRunError(f"a Ray load worker failed to start: {_first_line(exc)}") from None
        finally:
            # Kept even when start-up failed, so close() kills every actor that was created.
            mine = boot_id()
            for k, handle in enumerate(handles):
                info, startup_s = hellos.get(k, ({}, 0.0))
                who = WorkerIdentity(
                    worker=k,
                    node=str(info.get("node", "")),
                    address=str(info.get("address", "")),
                    hostname=str(info.get("hostname", "")),
                    pid=int(info.get("pid", 0)),
                )
                same = bool(mine) and info.get("boot_id") == mine
                self._actors.append(_Actor(who, handle, startup_s, same))

    def worker_pids(self) -> list[int]:
        """None to sample locally: actors may run elsewhere, they measure their own CPU."""
        return []

    @property
    def actors(self) -> list[dict[str, Any]]:
        """Where each worker runs and how long it took to start (for benchmarks and tests)."""
        return [
            {**dataclasses.asdict(a.who), "startup_s": a.startup_s, "lost": a.lost}
            for a in self._actors
        ]

    # -- a step ----------------------------------------------------------------------------

    async def run_step(self, path: str, url: str, plan: StepPlan) -> StepResult:
        """Run ``plan`` split over the live actors; the merged result has every reply's record."""
        self.last_generators = []
        live = [a for a in self._actors if not a.lost]
        if not live:
            raise CannotRunError("every Ray load worker was lost")
        await self._measure_clocks(live)
        start_ns = time.monotonic_ns() + START_MARGIN_NS
        specs = slice_specs(
            self._engine, self._profile, self._options, path, url, plan, len(live), start_ns
        )
        futures: dict[int, asyncio.Future[ActorReply]] = {}
        for spec in specs:
            actor = live[spec.index]
            remote = dataclasses.replace(spec, start_ns=start_ns + actor.applied_offset_ns)
            futures[spec.index] = asyncio.wrap_future(actor.handle.run.remote(remote).future())
        watcher = None
        if self._stop is not None:
            watcher = asyncio.create_task(self._forward_stop(self._stop, live))
        try:
            replies, lost, errors = await self._collect(live, futures)
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        if errors:
            raise errors[0]
        windows: list[GeneratorWindow] = []
        parts: list[StepResult] = []
        for spec in specs:
            actor = live[spec.index]
            if spec.index in lost:
                windows.append(lost_window(actor.who, _scheduled(spec), actor.clock_json()))
                continue
            reply = replies[spec.index]
            part = shift_result(reply.slice.result, -actor.applied_offset_ns)
            parts.append(part)
            windows.append(
                generator_window(actor.who, part, spec.count, reply.window_cpu, actor.clock_json())
            )
        self.last_generators = windows
        self.last_stats = [
            worker_stats(live[i].who.worker, reply.slice) for i, reply in sorted(replies.items())
        ]
        if not parts:
            raise CannotRunError(f"{path}, step {plan.step + 1}: every Ray load worker was lost")
        return merge_step(parts, plan)

    async def _collect(
        self, live: list[_Actor], futures: dict[int, asyncio.Future[ActorReply]]
    ) -> tuple[dict[int, ActorReply], set[int], list[BaseException]]:
        """Every actor's reply, or its loss; pinging the ones still out every few seconds."""
        replies: dict[int, ActorReply] = {}
        lost: set[int] = set()
        errors: list[BaseException] = []
        pending = dict(futures)
        while pending:
            await asyncio.wait(set(pending.values()), timeout=LIVENESS_INTERVAL_S)
            for index, future in list(pending.items()):
                if not future.done():
                    continue
                del pending[index]
                exc = future.exception()
                if exc is None:
                    replies[index] = future.result()
                elif _is_loss(exc):
                    lost.add(index)
                    self._lose(live[index], exc)
                else:
                    errors.append(_unwrap(exc))
            if pending:
                alive = await asyncio.gather(*(self._ping(live[i]) for i in pending))
                for index, ok in zip(list(pending), alive, strict=True):
                    if not ok and not pending[index].done():
                        pending.pop(index).cancel()
                        lost.add(index)
                        self._lose(live[index], None)
        return replies, lost, errors

    async def _ping(self, actor: _Actor) -> bool:
        try:
            await asyncio.wait_for(
                asyncio.wrap_future(actor.handle.clock.remote().future()), PING_TIMEOUT_S
            )
        except (TimeoutError, ray.exceptions.RayError):
            return False
        return True

    def _lose(self, actor: _Actor, exc: BaseException | None) -> None:
        actor.lost = True
        why = _first_line(exc) if exc is not None else f"no answer in {PING_TIMEOUT_S:g} s"
        log.warning("load worker %d on %s lost: %s", actor.who.worker, actor.who.address, why)
        with contextlib.suppress(Exception):  # already gone, or its node is
            ray.kill(actor.handle, no_restart=True)

    async def _measure_clocks(self, live: list[_Actor]) -> None:
        """Each live actor's offset to this process's clock (sequential round trips)."""
        for actor in live:
            samples: list[tuple[int, int, int]] = []
            for _ in range(CLOCK_SAMPLES):
                t0 = time.monotonic_ns()
                try:
                    remote = await asyncio.wait_for(
                        asyncio.wrap_future(actor.handle.clock.remote().future()), PING_TIMEOUT_S
                    )
                except (TimeoutError, ray.exceptions.RayError):
                    break  # a dead actor: its run call below fails and it is counted lost
                samples.append((t0, int(remote), time.monotonic_ns()))
            if samples:
                actor.clock = estimate_offset(samples)

    async def _forward_stop(self, stop: asyncio.Event, live: list[_Actor]) -> None:
        await stop.wait()
        for actor in live:
            with contextlib.suppress(Exception):
                actor.handle.stop.remote()

    # -- shutdown --------------------------------------------------------------------------

    def close(self) -> None:
        """Kill the actors, remove the placement group, disconnect if we connected."""
        for actor in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(actor.handle, no_restart=True)
        if self._pg is not None:
            with contextlib.suppress(Exception):
                remove_placement_group(self._pg)
            self._pg = None
        if self._owns_ray:
            with contextlib.suppress(Exception):
                ray.shutdown()
            self._owns_ray = False

    def __enter__(self) -> RayWorkerPool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def connect(address: str) -> bool:
    """Connect this process to the Ray cluster at ``address``; True when we did (else it already
    was, and whoever connected it disconnects). Unreachable → :class:`CannotRunError`."""
    if ray.is_initialized():
        return False
    problem = _reachable(address)
    if problem is not None:
        raise CannotRunError(f"cannot reach the Ray cluster at {address}: {problem}")
    # ray.init retries a port that accepts connections but is no GCS (or an address Ray rewrote,
    # see the README) without end: it runs in a daemon thread, given INIT_TIMEOUT_S.
    outcome: list[BaseException | None] = []

    def init() -> None:
        try:
            ray.init(
                address=address,
                namespace="pathprobe",
                log_to_driver=False,
                logging_level=logging.ERROR,
            )
        except BaseException as exc:  # handed to the caller below
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=init, name="pathprobe-ray-init", daemon=True)
    thread.start()
    thread.join(INIT_TIMEOUT_S)
    if not outcome:
        raise CannotRunError(
            f"the Ray cluster at {address} did not answer within {INIT_TIMEOUT_S:g} s "
            "(is that its GCS port, or ray://host:10001?)"
        )
    exc = outcome[0]
    if exc is not None:  # ConnectionError, ValueError, RuntimeError … : all "cannot run"
        raise CannotRunError(
            f"cannot connect to the Ray cluster at {address}: {_first_line(exc)}"
        ) from None
    return True


def _reachable(address: str) -> str | None:
    """One TCP connect to a ``host:port`` or ``ray://host:port`` address: None, or why not."""
    if address == "auto" or address.startswith("local"):
        return None  # resolved by Ray from RAY_ADDRESS or the running local cluster
    default = DEFAULT_CLIENT_PORT if address.startswith("ray://") else DEFAULT_GCS_PORT
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        host, port = parts.hostname, parts.port or default
    except ValueError as exc:
        return f"not an address ({exc})"
    if not host:
        return "not an address (expected host:port or ray://host:port)"
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except TimeoutError:
        return f"connect to {host}:{port} timed out after {CONNECT_TIMEOUT_S:g} s"
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"


def boot_id() -> str:
    """This host's boot id: equal on two processes exactly when they share CLOCK_MONOTONIC."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _scheduled(spec: SliceSpec) -> int | None:
    """Requests of the measured window scheduled on this slice (None under closed loop)."""
    offsets = spec.plan.offsets_ns
    if offsets is None:
        return None
    return int((offsets >= spec.plan.warmup_ns).sum())


def _is_loss(exc: BaseException) -> bool:
    """The actor (its process or its node) is gone, as opposed to our code failing in it."""
    return isinstance(
        exc,
        ray.exceptions.RayActorError
        | ray.exceptions.WorkerCrashedError
        | ray.exceptions.NodeDiedError
        | ray.exceptions.ObjectLostError
        | ray.exceptions.OwnerDiedError,
    )


def _unwrap(exc: BaseException) -> BaseException:
    """An error raised by our code inside an actor, as itself (a PathprobeError keeps its exit
    code), else a one-line :class:`CannotRunError`."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, PathprobeError):
        return cause
    if isinstance(exc, PathprobeError):
        return exc
    return CannotRunError(f"a Ray load worker failed: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
