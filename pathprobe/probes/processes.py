"""CPU and memory of the server's worker processes over one window, births and deaths.

Which processes are the server's is decided afresh at every tick, so restarted workers are
followed: the root PIDs given by the user and all their descendants (a gunicorn master's new
worker after an OOM kill is its child), plus — when a cgroup is named explicitly (the agent's
``--cgroup``) — every process in that cgroup. The cgroup a root PID merely *lives in* is not used
for selection: on a plain host that is often a cgroup shared with unrelated processes.

The sampler runs in its own thread (psutil reads /proc with blocking syscalls; the event loop must
not wait on them), at ``sample_hz`` (5 Hz by default). CPU percent is of one core, computed from
the change of user+system CPU time between ticks over the monotonic time between them.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psutil

from pathprobe.probes.base import JSONDict

MAX_TIMELINE_POINTS = 200
#: A worker counts as busy above this share of one core (design.md §4: one process pinned to one
#: core while cores sit idle is the server_concurrency signature).
BUSY_CPU_PERCENT = 50.0


def descendants(root_pids: Iterable[int]) -> set[int]:
    """The live root PIDs and every descendant of them."""
    found: set[int] = set()
    for pid in root_pids:
        try:
            proc = psutil.Process(pid)
            found.add(pid)
            found.update(child.pid for child in proc.children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def is_python_process(pid: int) -> bool:
    """True when ``pid`` itself runs a Python interpreter (executable name or libpython mapped).

    ``gunicorn: worker`` style process titles do not hide it: the executable is still python.
    """
    try:
        proc = psutil.Process(pid)
        if "python" in proc.name().lower() or "python" in (proc.exe() or "").lower():
            return True
        with open(f"/proc/{pid}/maps") as maps:
            return any("libpython" in line for line in maps)
    except (psutil.Error, OSError):
        return False


def looks_like_python(pid: int) -> bool:
    """True when ``pid`` (or one of its descendants) runs a Python interpreter.

    Checks the executable name and the mapped libraries (libpython), so ``gunicorn`` and
    ``uvicorn`` entry points and embedded interpreters count.
    """
    return any(is_python_process(candidate) for candidate in sorted(descendants([pid])))


def runqueue_wait_s(pid: int) -> float:
    """Seconds the threads of ``pid`` have spent runnable but waiting for a core, summed over
    its live threads (``/proc/PID/task/TID/schedstat``, second field); 0 when unreadable."""
    total_ns = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total_ns += int(fh.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total_ns / 1e9


@dataclass
class _Worker:
    proc: psutil.Process
    first_t_ms: float
    last_cpu_s: float
    last_t_s: float
    first_cpu_s: float = 0.0
    # Time its threads were runnable but waiting for a core (schedstat), first and last seen.
    first_wait_s: float = 0.0
    last_wait_s: float = 0.0
    cpu_percents: list[float] = field(default_factory=list)
    rss_max: int = 0
    uss_max: int | None = None
    dead: bool = False


@dataclass
class _Point:
    t_ms: float
    cpu_percent_total: float
    rss_bytes_total: int
    workers: int
    busy_workers: int
    cgroup_usage_bytes: int | None


class ProcessSampler:
    """Samples one window in a background thread. ``start`` → ``stop`` → ``summary``."""

    def __init__(
        self,
        root_pids: Iterable[int],
        cgroup_pids: Callable[[], set[int]] | None = None,
        on_tick: Callable[[], Any] | None = None,
        on_birth: Callable[[int], Any] | None = None,
        sample_hz: float = 5.0,
        uss: bool = True,
    ) -> None:
        self.root_pids = tuple(root_pids)
        self._cgroup_pids = cgroup_pids
        self._on_tick = on_tick  # e.g. reading the cgroup's memory usage at the same rate
        self._on_birth = on_birth  # called from the sampler thread with each new PID
        self._interval_s = 1.0 / sample_hz
        self._uss = uss
        self._workers: dict[int, _Worker] = {}
        self._ever_seen: set[int] = set()
        self._points: list[_Point] = []
        self._births: list[JSONDict] = []
        self._deaths: list[JSONDict] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0_s = 0.0
        #: time.monotonic_ns() of t_ms 0 (lines the timeline up with the request records).
        self.t0_ns = 0
        self._own_pid = 0
        self.error: str | None = None

    def current_pids(self) -> set[int]:
        pids = descendants(self.root_pids)
        if self._cgroup_pids is not None:
            pids |= self._cgroup_pids()
        # Never count the observer itself (the agent may share the cgroup it watches).
        pids.discard(self._own_pid)
        return pids

    def cpu_by_pid(self) -> dict[int, tuple[float, float]]:
        """Per live process: (CPU seconds used, seconds observed) since :meth:`start` or its
        birth, as of the last tick; callable from any thread while the sampler runs."""
        return {
            pid: (
                w.last_cpu_s - w.first_cpu_s,
                max(w.last_t_s - self._t0_s - w.first_t_ms / 1e3, 0.0),
            )
            for pid, w in list(self._workers.items())
            if not w.dead
        }

    def start(self) -> None:
        self._own_pid = os.getpid()
        self.t0_ns = time.monotonic_ns()
        self._t0_s = self.t0_ns / 1e9
        self._tick(first=True)
        self._thread = threading.Thread(target=self._run, name="pathprobe-psutil", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the thread to end after its current tick, without waiting (never blocks)."""
        self._stop.set()

    def stop(self) -> None:
        """Stop the thread (joins it; returns within one tick plus one sample's cost)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                return  # stuck in a /proc read; its samples so far still count
        self._tick(first=False)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._interval_s):
                self._tick(first=False)
        except Exception as exc:  # a sampler bug must not kill the run; the report says so
            self.error = f"{type(exc).__name__}: {exc}"

    def _tick(self, first: bool) -> None:
        now_s = time.monotonic()
        t_ms = (now_s - self._t0_s) * 1000.0
        pids = self.current_pids()
        for pid in pids - set(self._workers):
            try:
                proc = psutil.Process(pid)
                cpu = proc.cpu_times()
            except psutil.Error:
                continue
            cpu_s = cpu.user + cpu.system
            wait_s = runqueue_wait_s(pid)
            self._workers[pid] = _Worker(
                proc, t_ms, cpu_s, now_s, first_cpu_s=cpu_s, first_wait_s=wait_s, last_wait_s=wait_s
            )
            if not first and pid not in self._ever_seen:
                self._births.append({"pid": pid, "t_ms": round(t_ms, 1)})
                if self._on_birth is not None:
                    with contextlib.suppress(Exception):
                        self._on_birth(pid)
            self._ever_seen.add(pid)
        cpu_total = 0.0
        rss_total = 0
        busy = 0
        alive = 0
        for pid, worker in list(self._workers.items()):
            if worker.dead:
                continue
            try:
                with worker.proc.oneshot():
                    cpu = worker.proc.cpu_times()
                    rss = worker.proc.memory_info().rss
                    status = worker.proc.status()
                uss = None
                if self._uss:
                    with contextlib.suppress(psutil.AccessDenied):
                        uss = worker.proc.memory_full_info().uss
                if status == psutil.STATUS_ZOMBIE:
                    raise psutil.ZombieProcess(pid)
            except psutil.Error:
                # Gone (or a zombie: killed, not yet reaped by its parent) → a death.
                worker.dead = True
                self._deaths.append({"pid": pid, "t_ms": round(t_ms, 1)})
                continue
            cpu_s = cpu.user + cpu.system
            dt = now_s - worker.last_t_s
            if dt > 0 and t_ms > worker.first_t_ms:
                percent = max(0.0, (cpu_s - worker.last_cpu_s) / dt * 100.0)
                worker.cpu_percents.append(percent)
                cpu_total += percent
                busy += percent > BUSY_CPU_PERCENT
            worker.last_cpu_s, worker.last_t_s = cpu_s, now_s
            worker.last_wait_s = max(worker.last_wait_s, runqueue_wait_s(pid))
            worker.rss_max = max(worker.rss_max, rss)
            if uss is not None:
                worker.uss_max = max(worker.uss_max or 0, uss)
            rss_total += rss
            alive += 1
        cgroup_usage = None
        if self._on_tick is not None:
            with contextlib.suppress(Exception):
                cgroup_usage = self._on_tick()
        if not first:
            self._points.append(
                _Point(round(t_ms, 1), round(cpu_total, 1), rss_total, alive, busy, cgroup_usage)
            )

    def summary(self) -> JSONDict:
        """``workers``, ``timeline`` (≤ 200 points), ``worker_births``, ``worker_deaths``,
        ``busy_workers_mean``; t_ms relative to :meth:`start`."""
        workers = []
        for pid, w in sorted(self._workers.items()):
            cpus = w.cpu_percents
            workers.append(
                {
                    "pid": pid,
                    "cpu_percent_mean": round(sum(cpus) / len(cpus), 1) if cpus else None,
                    "cpu_percent_max": round(max(cpus), 1) if cpus else None,
                    "rss_bytes_max": w.rss_max,
                    "uss_bytes_max": w.uss_max,
                    "died": w.dead,
                }
            )
        points = _downsample(self._points, MAX_TIMELINE_POINTS)
        busy_mean = (
            sum(p.busy_workers for p in self._points) / len(self._points) if self._points else None
        )
        return {
            "workers": workers,
            "timeline": [
                {
                    "t_ms": p.t_ms,
                    "cpu_percent_total": p.cpu_percent_total,
                    "rss_bytes_total": p.rss_bytes_total,
                    "workers": p.workers,
                    "busy_workers": p.busy_workers,
                    "cgroup_memory_bytes": p.cgroup_usage_bytes,
                }
                for p in points
            ],
            "worker_births": list(self._births),
            "worker_deaths": list(self._deaths),
            "busy_workers_mean": None if busy_mean is None else round(busy_mean, 3),
            # CPU the workers used while observed (a worker born mid-window counts from birth).
            "cpu_seconds_total": round(
                sum(w.last_cpu_s - w.first_cpu_s for w in self._workers.values()), 3
            ),
            # ... and the time they were runnable but waited for a core: CPU work took this much
            # longer in wall time than its CPU seconds (the kernel's schedstat).
            "runqueue_wait_seconds_total": round(
                sum(w.last_wait_s - w.first_wait_s for w in self._workers.values()), 3
            ),
            "sampler_error": self.error,
        }


def _downsample(points: list[_Point], limit: int) -> list[_Point]:
    """At most ``limit`` points; each kept point is the busiest (max CPU) of its bucket so short
    spikes stay visible."""
    if len(points) <= limit:
        return points
    out = []
    for i in range(limit):
        bucket = points[i * len(points) // limit : (i + 1) * len(points) // limit]
        if bucket:
            out.append(max(bucket, key=lambda p: p.cpu_percent_total))
    return out
