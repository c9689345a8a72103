"""``--workers N``: one step's load spread over N local processes, merged exactly (design.md §4b).

The unit of load is :func:`run_slice`: a pure function of (:class:`SliceSpec`, payload pool) — the
worker's share of the plan, its seed-determined payloads, the target and a shared absolute start
time — returning a :class:`SliceResult` that :func:`~pathprobe.load.merge.merge_results` merges
without loss. :class:`WorkerPool` runs that unit in N local processes; ``--ray`` runs the same
function unchanged in Ray actors (:mod:`pathprobe.load.ray_pool`) when one machine is not enough,
so there is no cluster protocol here, only a pipe per local process.

Splitting. Open loop: request ``i`` goes to worker ``i mod N`` (round-robin), keeping its due time
and payload, so the union of the slices is the plan, request for request. Closed loop: the
concurrency (and the connection pool) is split as evenly as possible; each worker numbers its own
requests and the merge renumbers them in sending order. All workers start at the same
CLOCK_MONOTONIC instant (that clock is shared by every process on a host).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pathprobe.config import LoadProfile
from pathprobe.errors import CannotRunError, PathprobeError
from pathprobe.load import heap
from pathprobe.load.engine import EngineOptions
from pathprobe.load.merge import merge_step
from pathprobe.load.payloads import PayloadPool
from pathprobe.load.schedule import StepPlan
from pathprobe.model.results import StepResult

# Starting a worker imports numpy, aiohttp and uvloop: slow on a busy machine, but bounded.
READY_TIMEOUT_S = 60.0
#: Workers fork from multiprocessing's fork server, which imports these once (≈ 0.4 CPU-s); a
#: spawned worker would import them itself, every one of them. Forking the parent directly is not
#: safe: it has threads (DNS resolution, probes) and a running event loop by then.
WORKER_START_METHOD = "forkserver"
WORKER_PRELOAD = (
    "pathprobe.load.workers",
    "pathprobe.load.engine",
    "pathprobe.load.fast",
    "pathprobe.load.select",
)
# Time between handing the slices out and the common start: every worker must have its slice
# before the first request is due (a late one shows up as schedule slip, never hidden).
START_MARGIN_NS = 300_000_000


@dataclass(frozen=True)
class SliceSpec:
    """One worker's share of one step: everything it needs besides the payload pool."""

    engine: str
    profile: LoadProfile  # with this worker's share of connections and concurrency
    options: EngineOptions
    path: str
    url: str
    plan: StepPlan  # this worker's requests only
    index: int
    count: int
    start_ns: int  # CLOCK_MONOTONIC instant shared by all workers


@dataclass
class SliceResult:
    """What one worker returns: its records (``seq`` already global) and what it cost."""

    result: StepResult
    pid: int
    cpu_s: float
    wall_s: float


@dataclass(frozen=True)
class WorkerStats:
    """One worker's cost during the last step (for the client gate and the report)."""

    index: int
    pid: int
    cpu_s: float
    wall_s: float
    loop_lag_max_ns: int
    loop_lag_p99_ns: int
    requests: int


def share(total: int, index: int, count: int) -> int:
    """Worker ``index``'s share of ``total`` when split as evenly as possible over ``count``."""
    return total // count + (1 if index < total % count else 0)


def split_plan(plan: StepPlan, count: int) -> list[StepPlan]:
    """Slice ``plan`` for ``count`` workers (round-robin for open loop; concurrency split else).

    Open loop: slice ``k`` holds requests ``k, k+count, …`` with their due times and payloads.
    Closed loop: slice ``k`` gets ``share(concurrency, k, count)`` users (possibly 0) and the
    same payload cycle.
    """
    slices: list[StepPlan] = []
    for k in range(count):
        if plan.offsets_ns is not None:
            payload_idx = plan.payload_idx
            if len(payload_idx) == len(plan.offsets_ns):
                payload_idx = payload_idx[k::count].copy()
            slices.append(
                dataclasses.replace(
                    plan, offsets_ns=plan.offsets_ns[k::count].copy(), payload_idx=payload_idx
                )
            )
        else:
            slices.append(
                dataclasses.replace(plan, concurrency=share(plan.concurrency or 1, k, count))
            )
    return slices


def slice_specs(
    engine: str,
    profile: LoadProfile,
    options: EngineOptions,
    path: str,
    url: str,
    plan: StepPlan,
    count: int,
    start_ns: int,
) -> list[SliceSpec]:
    """The specs of every worker that has work (closed loop with few users may use fewer)."""
    specs: list[SliceSpec] = []
    for k, part in enumerate(split_plan(plan, count)):
        if plan.offsets_ns is None and not part.concurrency:
            continue
        worker_profile = dataclasses.replace(
            profile,
            connections=max(share(profile.connections, k, count), 1),
            concurrency=part.concurrency if plan.offsets_ns is None else profile.concurrency,
            workers=1,
        )
        worker_options = options
        if plan.offsets_ns is not None:  # the worker's seq j is the plan's j * count + k
            worker_options = dataclasses.replace(options, seq_scale=count, seq_offset=k)
        specs.append(
            SliceSpec(engine, worker_profile, worker_options, path, url, part, k, count, start_ns)
        )
    return specs


async def run_slice(
    spec: SliceSpec, pool: PayloadPool, stop: asyncio.Event | None = None
) -> SliceResult:
    """Run one worker's slice in the current event loop and return its mergeable result."""
    from pathprobe.load.fast import FastEngine
    from pathprobe.load.select import build_engine

    heap.settle()  # no full garbage collection inside the step (load/heap.py)
    wall0 = time.monotonic()
    cpu0 = time.process_time()
    engine = build_engine(spec.engine, spec.profile, pool, spec.options, stop)
    try:
        if isinstance(engine, FastEngine):
            result = await engine.run_step(spec.path, spec.url, spec.plan, start_ns=spec.start_ns)
        else:
            wait_ns = spec.start_ns - time.monotonic_ns()
            if wait_ns > 0:
                await asyncio.sleep(wait_ns / 1e9)
            result = await engine.run_step(spec.path, spec.url, spec.plan)
    finally:
        heap.release()
    if spec.plan.offsets_ns is not None:
        # Local index j of slice k is request j*count + k of the whole plan.
        result.records["seq"] = result.records["seq"] * spec.count + spec.index
    return SliceResult(
        result=result,
        pid=os.getpid(),
        cpu_s=time.process_time() - cpu0,
        wall_s=time.monotonic() - wall0,
    )


def run_slice_sync(spec: SliceSpec, pool: PayloadPool) -> SliceResult:
    """:func:`run_slice` in a fresh uvloop event loop (the form a Ray task would take)."""
    from pathprobe.load.select import loop_factory

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(run_slice(spec, pool))


def _worker_main(
    conn: multiprocessing.connection.Connection,
    stop_flag: Any,
    pool: PayloadPool,
    cpus: frozenset[int],
) -> None:
    """A worker process: run each slice it is sent, reply with its result, until told to stop."""
    import pathprobe.load.engine
    import pathprobe.load.fast  # noqa: F401 - imported before "ready", not during a step
    from pathprobe.load.select import loop_factory

    # Ctrl-C (and a service manager's SIGTERM) reach the whole process group; the parent
    # decides, and tells us via stop_flag. Should the parent die, our pipe closes and we exit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Set, not inherited: the fork server keeps the affinity the parent had when it started.
    os.sched_setaffinity(0, cpus)

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        loop = runner.get_loop()
        # Everything is imported and the loop exists: the parent may hand out work now.
        conn.send(("ready", os.getpid()))
        current: list[asyncio.Event] = []

        def forward_stop() -> None:
            # A daemon thread blocks on the cross-process flag so the loop never polls for it.
            stop_flag.wait()

            def set_all() -> None:
                for event in current:
                    event.set()

            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(set_all)

        threading.Thread(target=forward_stop, name="pathprobe-stop", daemon=True).start()

        async def one(spec: SliceSpec) -> SliceResult:
            stop = asyncio.Event()
            current[:] = [stop]
            if stop_flag.is_set():
                stop.set()
            return await run_slice(spec, pool, stop)

        while True:
            try:
                spec = conn.recv()
            except EOFError:
                return
            if spec is None:
                return
            try:
                reply: tuple[str, Any] = ("ok", runner.run(one(spec)))
            except PathprobeError as exc:  # sent back and raised in the parent
                reply = ("error", exc)
            except Exception as exc:  # may not pickle: send its text
                reply = ("error", CannotRunError(f"load worker failed: {exc!r}"))
            conn.send(reply)


def worker_count(profile: LoadProfile, workers: int | None) -> int:
    """How many load workers a pool runs: ``workers`` when given, else the profile's.
    Raises ``ValueError`` below one."""
    count = workers if workers is not None else profile.workers
    if count < 1:
        raise ValueError("workers must be >= 1")
    return count


class WorkerPool:
    """N worker processes running one engine; itself an engine (``run_step``) for the session.

    Processes start at construction (so their PIDs can be given to the client probe before any
    load) and live until :meth:`close`. ``cpus[k]`` pins worker ``k`` to that core.
    """

    def __init__(
        self,
        profile: LoadProfile,
        pool: PayloadPool,
        options: EngineOptions,
        stop: asyncio.Event | None = None,
        *,
        engine: str = "fast",
        workers: int | None = None,
        cpus: Sequence[int] | None = None,
        start_method: str = WORKER_START_METHOD,
    ) -> None:
        self.name = engine
        self._engine = engine
        self._profile = profile
        self._options = options
        self._stop = stop
        self.count = worker_count(profile, workers)
        ctx: Any = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            ctx.set_forkserver_preload(list(WORKER_PRELOAD))
        self._stop_flag = ctx.Event()
        self._conns: list[multiprocessing.connection.Connection] = []
        self._procs: list[Any] = []
        self.last_stats: list[WorkerStats] = []
        try:
            for k in range(self.count):
                parent, child = ctx.Pipe()
                allowed = frozenset({cpus[k % len(cpus)]} if cpus else os.sched_getaffinity(0))
                proc = ctx.Process(
                    target=_worker_main,
                    args=(child, self._stop_flag, pool, allowed),
                    name=f"pathprobe-worker-{k}",
                    daemon=True,
                )
                with _main_module_hidden():
                    proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)
            for k, conn in enumerate(self._conns):
                if not conn.poll(READY_TIMEOUT_S):
                    raise CannotRunError(f"load worker {k} did not start in {READY_TIMEOUT_S:g} s")
                conn.recv()
        except BaseException:
            self.close()
            raise

    def worker_pids(self) -> list[int]:
        """PIDs of the worker processes (sample their CPU: they are the client)."""
        return [int(p.pid) for p in self._procs if p.pid is not None]

    async def run_step(self, path: str, url: str, plan: StepPlan) -> StepResult:
        """Run ``plan`` split over the workers; the merged result has every request's record."""
        start_ns = time.monotonic_ns() + START_MARGIN_NS
        specs = slice_specs(
            self._engine, self._profile, self._options, path, url, plan, self.count, start_ns
        )
        loop = asyncio.get_running_loop()
        for spec in specs:
            self._conns[spec.index].send(spec)
        watcher = None
        if self._stop is not None:
            watcher = asyncio.create_task(self._forward_stop(self._stop))
        try:
            # Every worker's reply is read, even when one failed, so none is left in a pipe.
            outcomes = await asyncio.gather(
                *(loop.run_in_executor(None, self._receive, spec.index) for spec in specs),
                return_exceptions=True,
            )
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        replies = [o for o in outcomes if isinstance(o, SliceResult)]
        parts = [r.result for r in replies]
        self.last_stats = [
            worker_stats(spec.index, reply) for spec, reply in zip(specs, replies, strict=True)
        ]
        return merge_step(parts, plan)

    def _receive(self, index: int) -> SliceResult:
        try:
            status, payload = self._conns[index].recv()
        except (EOFError, OSError):
            raise CannotRunError(
                f"load worker {index} (pid {self._procs[index].pid}) died during the step"
            ) from None
        if status == "error":
            raise payload
        assert isinstance(payload, SliceResult)
        return payload

    async def _forward_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stop_flag.set()

    def close(self) -> None:
        """Stop the workers (by their PIDs, which we started) and wait for them."""
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()  # ours, by PID (workers ignore SIGTERM)
                proc.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self._conns = []
        self._procs = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """While a worker starts, hide the ``__main__`` script from multiprocessing.

    A spawned or fork-served child re-runs the parent's main script (minus its ``__main__`` block)
    so that pickled references into it resolve. Workers need nothing from it — their target and
    arguments live in ``pathprobe`` — and for the ``pathprobe`` command that script imports the
    whole CLI (typer, rich, matplotlib, jinja2: ≈ 1.4 CPU-s per worker, measured).
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None:
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def worker_stats(index: int, reply: SliceResult) -> WorkerStats:
    """Worker ``index``'s cost of one step, from its reply (local process or Ray actor)."""
    lag = reply.result.loop_lag_ns
    return WorkerStats(
        index=index,
        pid=reply.pid,
        cpu_s=reply.cpu_s,
        wall_s=reply.wall_s,
        loop_lag_max_ns=int(lag.max()) if len(lag) else 0,
        loop_lag_p99_ns=int(np.percentile(lag, 99)) if len(lag) else 0,
        requests=len(reply.result.records),
    )
