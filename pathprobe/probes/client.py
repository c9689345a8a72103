"""The client probe: could the load generator itself keep its schedule?

Three kinds of evidence (design.md §4, step 1 — the client gate):

* **CPU** of the load-generating processes (psutil, ~10 Hz, in a daemon thread so the event loop
  never waits on ``/proc``), in % of one core: an event loop is one thread, so a process near 100 %
  is saturated whatever the machine's core count. Beside it, how busy the cores those processes may
  run on are (``cores_busy_percent``): low own CPU on busy cores: a neighbour starves the client.
* **Event-loop lag** of the loop the probe runs in: a 10 ms periodic timer and how late it wakes.
* **Schedule slip and pool wait** from the engine's per-request records:
  :func:`client_schedule_summary` (pure), and the client's own overhead where the capture saw the
  wire: :func:`client_overhead_ms` (pure).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from pathprobe.load.store import BoundedSamples
from pathprobe.model.lateness import lateness
from pathprobe.model.records import Records
from pathprobe.probes.base import JSONDict, Unavailable, Window

CPU_SAMPLE_INTERVAL_S = 0.1
LOOP_LAG_TICK_S = 0.010
TIMELINE_MAX_POINTS = 200
# Bounded memory: samples are kept per window, whole for ~27 min (CPU, 10 Hz) and ~5.5 min (loop
# lag, 100 Hz), then evenly thinned: a long soak holds at most ~2 MB of them.
_MAX_CPU_SAMPLES = 1 << 14
_MAX_LAG_SAMPLES = 1 << 15


def _pcts_ms(
    values: npt.NDArray[Any], keys: Sequence[str], unit_ns: float = 1.0
) -> dict[str, float | int | None]:
    """Selected statistics of values in units of ``unit_ns`` nanoseconds (1: ns, 1e6: ms), in ms.
    Keys: p50/p90/p99/max/mean, plus count."""
    out: dict[str, float | int | None] = {}
    arr = np.asarray(values, dtype=np.float64) * unit_ns / 1e6
    for key in keys:
        if arr.size == 0:
            out[key] = None
        elif key == "max":
            out[key] = round(float(arr.max()), 4)
        elif key == "mean":
            out[key] = round(float(arr.mean()), 4)
        else:
            out[key] = round(float(np.percentile(arr, float(key[1:]))), 4)
    out["count"] = int(arr.size)
    return out


def client_schedule_summary(records: Records, stride: int = 1) -> JSONDict:
    """Schedule slip and pool wait of one window's requests (pure; the engine's records in).

    * ``slip_ms`` {p50, p99, max}: ``actual_ns - intended_ns`` — how late the engine started each
      request against its open-loop schedule (0 under closed loop, where intended = actual).
    * ``late_fraction``: share of requests whose slip exceeds ``late_threshold_ms``, one schedule
      gap (``mean_gap_ms``) clamped to [1 ms, 10 ms]: the rule of
      :mod:`pathprobe.model.lateness`, the client gate's. ``stride``: the records are one in
      ``stride`` of the window's requests (``StepResult.sample_stride``).
    * ``pool_wait_ms`` {p50, p99, max}: time requests waited for a pooled connection.
      **Pool wait alone is not client evidence**: a slow server holds every connection longer and
      fills any pool, so requests queue for a connection without the client being at fault. Use
      it with CPU, loop lag and slip, never alone.
    """
    n = len(records)
    late = lateness(records["intended_ns"], records["actual_ns"], stride)
    wait = np.asarray(records["conn_wait_ns"], dtype=np.int64) if n else np.zeros(0, np.int64)
    wait = wait[wait >= 0]
    return {
        "requests": n,
        "slip_ms": _pcts_ms(late.slip_ms, ("p50", "p99", "max"), unit_ns=1e6),
        "late_threshold_ms": round(late.threshold_ms, 4),
        "mean_gap_ms": None if late.gap_ms is None else round(late.gap_ms, 4),
        "late_fraction": round(late.late_fraction, 6),
        "pool_wait_ms": _pcts_ms(wait, ("p50", "p99", "max")),
    }


def client_overhead_ms(records: Records, wire_ttfb_ms: Mapping[str, Any]) -> JSONDict:
    """The client's own overhead on the time to first byte: application TTFB minus wire TTFB.

    The engine's ``ttfb_ns`` runs from its send call to the first response byte as the
    application sees it; the capture's ``wire_ttfb_ms`` from the request's last byte on the wire
    to the response's first byte. Both are distributions over the same window, so the difference
    of their quantiles (not a per-request pairing) is what the client adds: event-loop delay,
    parsing, the time to write the request. Only requests on reused connections enter (the wire
    figure has no connect in it). ``None`` entries when either side is empty.
    """
    ok = (records["ttfb_ns"] >= 0) & (records["connect_ns"] < 0) if len(records) else None
    app = records["ttfb_ns"][ok] if ok is not None else np.zeros(0, np.int64)
    app_ms = _pcts_ms(app, ("p50", "p90", "p99"))
    out: JSONDict = {"app_ttfb_ms": app_ms, "wire_ttfb_ms": dict(wire_ttfb_ms)}
    for key in ("p50", "p90", "p99"):
        a, w = app_ms.get(key), wire_ttfb_ms.get(key)
        out[f"overhead_{key}_ms"] = (
            None if a is None or w is None else round(float(a) - float(w), 4)
        )
    return out


class _CpuSampler(threading.Thread):
    """Samples summed and per-process CPU of the PIDs the provider names, every interval."""

    def __init__(self, pids_provider: Callable[[], Sequence[int]], interval_s: float) -> None:
        super().__init__(name="pathprobe-client-cpu", daemon=True)
        self.pids_provider = pids_provider
        self.interval_s = interval_s
        self.stop_event = threading.Event()
        # (t_ns, summed cpu %, busiest single process cpu %, busy % of the processes' cores);
        # replaced by a fresh one at each window's start.
        self.samples: BoundedSamples[tuple[int, float, float, float]] = BoundedSamples(
            _MAX_CPU_SAMPLES
        )
        self.error: str | None = None

    def run(self) -> None:
        import psutil

        procs: dict[int, psutil.Process] = {}
        last: dict[int, float] = {}
        last_t = time.monotonic_ns()
        last_cores: list[Any] = psutil.cpu_times(percpu=True)
        while not self.stop_event.is_set():
            try:
                pids = list(self.pids_provider())
            except Exception as exc:  # a provider bug must not kill the run
                self.error = f"PID provider failed: {exc}"
                pids = []
            now = time.monotonic_ns()
            wall_s = (now - last_t) / 1e9
            total = 0.0
            busiest = 0.0
            seen: dict[int, float] = {}
            for pid in pids:
                try:
                    proc = procs.get(pid) or procs.setdefault(pid, psutil.Process(pid))
                    t = proc.cpu_times()
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    procs.pop(pid, None)
                    continue
                cpu_s = t.user + t.system
                seen[pid] = cpu_s
                if pid in last and wall_s > 0:
                    pct = max(cpu_s - last[pid], 0.0) / wall_s * 100.0
                    total += pct
                    busiest = max(busiest, pct)
            cores_now: list[Any] = psutil.cpu_times(percpu=True)
            busy = _cores_busy_percent(last_cores, cores_now, _affinity(pids))
            if last and wall_s > 0:
                self.samples.append((now, total, busiest, busy))
            last, last_t, last_cores = seen, now, cores_now
            self.stop_event.wait(self.interval_s)


def _affinity(pids: Sequence[int]) -> set[int]:
    """The cores the processes may run on (union)."""
    cores: set[int] = set()
    for pid in pids or [os.getpid()]:
        with contextlib.suppress(OSError):
            cores |= os.sched_getaffinity(pid)
    return cores


def _cores_available(pids: Sequence[int]) -> int:
    return len(_affinity(pids)) or (os.cpu_count() or 1)


def _cores_busy_percent(before: Sequence[Any], after: Sequence[Any], cores: set[int]) -> float:
    """Mean busy share of ``cores`` between two ``psutil.cpu_times(percpu=True)`` readings.

    A client whose own CPU is low while its cores are busy is being starved by a neighbour:
    the load generator cannot run when it should, and the schedule slips."""
    shares: list[float] = []
    for i in sorted(cores):
        if i >= len(before) or i >= len(after):
            continue
        b, a = before[i], after[i]
        total = sum(a) - sum(b)
        idle = (a.idle - b.idle) + (getattr(a, "iowait", 0.0) - getattr(b, "iowait", 0.0))
        if total > 0:
            shares.append(min(max(1.0 - idle / total, 0.0), 1.0) * 100.0)
    return sum(shares) / len(shares) if shares else 0.0


class ClientProbe:
    """CPU of the load-generating processes and the event-loop lag, per window."""

    name = "client"

    def __init__(
        self,
        pids_provider: Callable[[], Sequence[int]],
        generators_provider: Callable[[], list[JSONDict]] | None = None,
    ) -> None:
        self.pids_provider = pids_provider
        # Load workers that measure themselves (Ray actors): their accounts of the window that
        # just ran, filed with it for the client gate.
        self.generators_provider = generators_provider
        self.unavailable: Unavailable | None = None
        self.windows: list[JSONDict] = []
        self._sampler: _CpuSampler | None = None
        self._lag: BoundedSamples[tuple[int, int]] = BoundedSamples(_MAX_LAG_SAMPLES)
        self._lag_task: asyncio.Task[None] | None = None
        self._starts: dict[tuple[str, int], int] = {}

    async def open(self) -> None:
        try:
            import psutil  # noqa: F401
        except ImportError:
            self.unavailable = Unavailable(
                "psutil is not installed: client CPU not sampled", "pip install psutil"
            )
        else:
            self._sampler = _CpuSampler(self.pids_provider, CPU_SAMPLE_INTERVAL_S)
            self._sampler.start()
        self._lag_task = asyncio.create_task(self._measure_lag())

    async def _measure_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + LOOP_LAG_TICK_S
            await asyncio.sleep(LOOP_LAG_TICK_S)
            late_s = loop.time() - expected
            self._lag.append((time.monotonic_ns(), int(max(late_s, 0.0) * 1e9)))

    async def start_window(self, window: Window) -> None:
        self._starts[(window.path, window.step)] = window.start_ns or time.monotonic_ns()
        # Windows run one at a time: what came before this one is no longer needed.
        self._lag = BoundedSamples(_MAX_LAG_SAMPLES)
        if self._sampler is not None:
            self._sampler.samples = BoundedSamples(_MAX_CPU_SAMPLES)

    async def stop_window(self, window: Window) -> JSONDict:
        # The stopped window knows when its measured part really began; the stored start is the
        # session's estimate from before the step ran.
        stored = self._starts.pop((window.path, window.step), None)
        start = window.start_ns or stored or time.monotonic_ns()
        end = window.end_ns or time.monotonic_ns()
        summary: JSONDict = {"path": window.path, "step": window.step}
        pids: list[int] = []
        with contextlib.suppress(Exception):
            pids = list(self.pids_provider())
        summary["pids"] = pids
        summary["cpu_cores_available"] = _cores_available(pids)
        if self._sampler is not None:
            rows = [s for s in self._sampler.samples.values() if start <= s[0] <= end]
            total = np.array([r[1] for r in rows], dtype=np.float64)
            busiest = np.array([r[2] for r in rows], dtype=np.float64)
            cores_busy = np.array([r[3] for r in rows], dtype=np.float64)
            summary["cpu_percent"] = _cpu_stats(total)
            summary["busiest_process_cpu_percent"] = _cpu_stats(busiest)
            summary["cores_busy_percent"] = _cpu_stats(cores_busy)
            summary["timeline"] = _timeline(rows, start)
            if self._sampler.error:
                summary["cpu_error"] = self._sampler.error
        else:
            summary["cpu_percent"] = None
            summary["timeline"] = []
        lag = np.array([v for t, v in self._lag.values() if start <= t <= end], dtype=np.int64)
        summary["loop_lag_ms"] = _pcts_ms(lag, ("p50", "p99", "max"))
        if self.generators_provider is not None:
            generators: list[JSONDict] = []
            with contextlib.suppress(Exception):  # a provider bug must not lose the window
                generators = self.generators_provider()
            if generators:
                summary["load_generators"] = generators
        self.windows.append(summary)
        return summary

    async def close(self) -> JSONDict:
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
            self._lag_task = None
        if self._sampler is not None:
            self._sampler.stop_event.set()
            await asyncio.to_thread(self._sampler.join, 2.0)
        return {
            "available": self.unavailable is None,
            "reason": self.unavailable.reason if self.unavailable else None,
            "how_to_enable": self.unavailable.how_to_enable if self.unavailable else None,
            "cpu_sample_interval_ms": CPU_SAMPLE_INTERVAL_S * 1000,
            "loop_lag_tick_ms": LOOP_LAG_TICK_S * 1000,
            "windows": self.windows,
        }


def _cpu_stats(values: npt.NDArray[np.float64]) -> dict[str, float | int | None]:
    if values.size == 0:
        return {"mean": None, "p90": None, "max": None, "count": 0}
    return {
        "mean": round(float(values.mean()), 2),
        "p90": round(float(np.percentile(values, 90)), 2),
        "max": round(float(values.max()), 2),
        "count": int(values.size),
    }


def _timeline(rows: Sequence[tuple[int, float, float, float]], start_ns: int) -> list[JSONDict]:
    """At most :data:`TIMELINE_MAX_POINTS` points; longer windows are averaged into buckets."""
    if not rows:
        return []
    buckets = np.array_split(np.arange(len(rows)), min(len(rows), TIMELINE_MAX_POINTS))
    out: list[JSONDict] = []
    for idx in buckets:
        chunk = [rows[i] for i in idx]
        t = chunk[len(chunk) // 2][0]
        out.append(
            {
                "t_ms": round((t - start_ns) / 1e6, 1),
                "cpu_percent": round(sum(c[1] for c in chunk) / len(chunk), 2),
            }
        )
    return out
