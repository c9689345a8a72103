"""Per-worker accounts of the load: what each load generator sent, where, and at what cost.

When the load comes from several workers (Ray actors on several machines), the client gate must
hold per node, and the report must say who sent what. Each window an engine of workers runs yields
one :class:`GeneratorWindow` per worker (:func:`generator_window` builds it from the worker's own
part of the result); the client probe files them with its window (``load_generators``), the gate
checks each (:func:`pathprobe.analysis.client_gate.generator_reasons`), and
:class:`GeneratorLedger` adds them up over the run for ``report.json`` ``run.load_generators``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pathprobe.model.lateness import lateness
from pathprobe.model.results import StepResult, tally_of


@dataclass(frozen=True)
class WorkerIdentity:
    """Where a worker runs: its index, node (Ray node id, or host name), address and PID."""

    worker: int
    node: str
    address: str
    hostname: str
    pid: int


@dataclass(frozen=True)
class GeneratorWindow:
    """One worker in one (path, step) window.

    ``requests``: requests of the measured window it sent (its share of the step's
    ``requests``). ``cpu_percent``: its process's CPU over the measured window, % of one core.
    ``lost``: the worker died (or stopped answering) during the window; ``unsent_requests`` then
    counts the scheduled requests of the measured window that have no result (never sent, or sent
    and their results lost with the worker); ``None`` under closed loop, which schedules none.
    """

    who: WorkerIdentity
    requests: int
    cpu_s: float | None
    cpu_percent: float | None
    loop_lag_p90_ms: float | None
    loop_lag_max_ms: float | None
    slip_p99_ms: float | None
    late_fraction: float | None
    clock: dict[str, float | int]
    lost: bool = False
    unsent_requests: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "worker": self.who.worker,
            "node": self.who.node,
            "address": self.who.address,
            "hostname": self.who.hostname,
            "pid": self.who.pid,
            "requests": self.requests,
            "cpu_s": _round(self.cpu_s, 4),
            "cpu_percent": _round(self.cpu_percent, 2),
            "loop_lag_p90_ms": _round(self.loop_lag_p90_ms, 3),
            "loop_lag_max_ms": _round(self.loop_lag_max_ms, 3),
            "slip_p99_ms": _round(self.slip_p99_ms, 3),
            "late_fraction": _round(self.late_fraction, 6),
            **self.clock,
            "lost": self.lost,
            "unsent_requests": self.unsent_requests,
        }


def generator_window(
    who: WorkerIdentity,
    part: StepResult,
    count: int,
    window_cpu: tuple[float, float] | None,
    clock: dict[str, float | int],
) -> GeneratorWindow:
    """The account of worker ``who`` from its own part of the window (before the merge).

    ``count``: how many workers shared the window (a worker's slice holds one in ``count`` of the
    schedule, so one schedule gap is ``count`` of its own gaps). ``window_cpu``: (CPU seconds,
    wall seconds) of its process over the measured window.
    """
    recs = part.records[part.records["seq"] >= part.first_measured_seq]
    slip_p99: float | None = None
    late: float | None = None
    late_rule = lateness(recs["intended_ns"], recs["actual_ns"], count * part.sample_stride)
    if late_rule.slip_ms.size:
        slip_p99 = float(np.percentile(late_rule.slip_ms, 99))
        # Closed loop: sent when the user was free, nothing to be late for.
        late = late_rule.late_fraction if part.offered_rps is not None else 0.0
    lag = part.loop_lag_ns
    cpu_s = cpu_pct = None
    if window_cpu is not None and window_cpu[1] > 0:
        cpu_s = window_cpu[0]
        cpu_pct = window_cpu[0] / window_cpu[1] * 100.0
    return GeneratorWindow(
        who=who,
        requests=tally_of(part).requests,
        cpu_s=cpu_s,
        cpu_percent=cpu_pct,
        loop_lag_p90_ms=float(np.percentile(lag, 90)) / 1e6 if len(lag) else None,
        loop_lag_max_ms=float(lag.max()) / 1e6 if len(lag) else None,
        slip_p99_ms=slip_p99,
        late_fraction=late,
        clock=clock,
    )


def lost_window(
    who: WorkerIdentity, slice_records: int | None, clock: dict[str, float | int]
) -> GeneratorWindow:
    """The account of a worker lost during the window: nothing sent that we know of."""
    return GeneratorWindow(
        who=who,
        requests=0,
        cpu_s=None,
        cpu_percent=None,
        loop_lag_p90_ms=None,
        loop_lag_max_ms=None,
        slip_p99_ms=None,
        late_fraction=None,
        clock=clock,
        lost=True,
        unsent_requests=slice_records,
    )


@dataclass
class _Totals:
    who: WorkerIdentity
    requests: int = 0
    cpu_s: float = 0.0
    cpu_wall_s: float = 0.0
    windows: int = 0
    clock: dict[str, float | int] = field(default_factory=dict)
    lost_in: dict[str, Any] | None = None


class GeneratorLedger:
    """The run's per-worker totals (``run.load_generators``), window by window."""

    def __init__(self) -> None:
        self._totals: dict[int, _Totals] = {}

    def add(self, path: str, step: int, windows: list[GeneratorWindow]) -> list[str]:
        """File one window's accounts; returns a note for each worker lost in it."""
        notes: list[str] = []
        for w in windows:
            t = self._totals.setdefault(w.who.worker, _Totals(w.who))
            t.windows += 1
            t.requests += w.requests
            t.clock = w.clock
            if w.cpu_s is not None and w.cpu_percent:
                t.cpu_s += w.cpu_s
                t.cpu_wall_s += w.cpu_s / (w.cpu_percent / 100.0)
            if w.lost and t.lost_in is None:
                t.lost_in = {"path": path, "step": step, "unsent_requests": w.unsent_requests}
                unsent = (
                    "an unknown number of"
                    if w.unsent_requests is None
                    else f"{w.unsent_requests:,}"
                )
                notes.append(
                    f"{path}, step {step + 1}: load worker {w.who.worker} on node "
                    f"{describe_node(w.who)} was lost; {unsent} scheduled requests of the "
                    "measured window were not sent (or their results were lost with it); "
                    "the run went on with the other workers"
                )
        return notes

    def entries(self) -> list[dict[str, Any]]:
        """One JSON entry per worker, by worker index."""
        out: list[dict[str, Any]] = []
        for index in sorted(self._totals):
            t = self._totals[index]
            out.append(
                {
                    "worker": t.who.worker,
                    "node": t.who.node,
                    "address": t.who.address,
                    "hostname": t.who.hostname,
                    "pid": t.who.pid,
                    "requests": t.requests,
                    "cpu_s": round(t.cpu_s, 4),
                    "cpu_percent": (
                        round(t.cpu_s / t.cpu_wall_s * 100.0, 2) if t.cpu_wall_s > 0 else None
                    ),
                    "windows": t.windows,
                    **t.clock,
                    "lost": t.lost_in,
                }
            )
        return out


def describe_node(who: WorkerIdentity) -> str:
    """A node as people read it: its address, with the start of its Ray node id."""
    if who.node and who.node != who.address:
        return f"{who.address} ({who.node[:12]})"
    return who.address


class WindowCpu:
    """The CPU a process spends between two instants (the measured window), read by a thread.

    Two readings of ``time.process_time_ns()`` (all threads of the process) taken as close to the
    window's bounds as a sleeping thread gets; :meth:`finish` ends it early when the step ends
    before the window does (interrupted).
    """

    def __init__(self, start_ns: int, end_ns: int) -> None:
        self._start_ns = start_ns
        self._end_ns = end_ns
        self._done = threading.Event()
        self._readings: list[tuple[int, int]] = []
        self._thread = threading.Thread(target=self._run, name="pathprobe-window-cpu", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for at in (self._start_ns, self._end_ns):
            wait_s = (at - time.monotonic_ns()) / 1e9
            if wait_s > 0 and self._done.wait(wait_s):
                if self._readings:  # ended inside the window: close it now
                    self._readings.append((time.monotonic_ns(), time.process_time_ns()))
                return
            self._readings.append((time.monotonic_ns(), time.process_time_ns()))

    def finish(self) -> tuple[float, float] | None:
        """(CPU seconds, wall seconds) over the window; None if it never began."""
        self._done.set()
        self._thread.join(5.0)
        if len(self._readings) < 2:
            return None
        (t0, c0), (t1, c1) = self._readings[0], self._readings[-1]
        return (c1 - c0) / 1e9, (t1 - t0) / 1e9


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)
