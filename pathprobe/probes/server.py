"""The server probe: what the model server's processes did during each load window.

For the processes of ``--server-pid`` (and their children, restarted workers included) it records,
per (path, step) window (design.md §3):

* py-spy samples folded into stages by name rules (:mod:`.stages`, :mod:`.pyspy`). By default one
  ``py-spy record --nonblocking`` runs per Python process of the tree, and workers born during
  the window get theirs as the process sampler sees them. ``per_process=False`` runs one
  ``py-spy record --subprocesses`` per root PID instead; that flag makes py-spy rescan every
  process on the host for new children, which on this machine kind costs about 1.5 % of a core by
  itself — several times the cost of sampling (benchmarks/bench_pyspy_overhead.py);
* CPU and memory (RSS, USS) of every worker over time, births and deaths (:mod:`.processes`);
* the cgroup's memory limit, usage maximum, OOM events and CPU throttling, and kernel OOM lines
  (:mod:`.cgroups`).

Each part degrades on its own with a reason: py-spy missing or ptrace refused still leaves the
process sampler and the cgroup; an unreadable cgroup leaves the rest. Only "no process to watch"
makes the whole probe unavailable.

Window summary keys (read by attribution and the report; keep them):
``path``, ``step``, ``samples``, ``stage_samples``, ``stage_share``, ``folded``, ``workers``,
``timeline``, ``worker_deaths``, ``worker_births``, ``cgroup``, ``kernel_oom_lines``,
``busy_workers_mean``, ``cpu_cores_available`` — plus ``t0_ns`` (monotonic_ns of ``t_ms`` 0),
``window_ms``, ``cpu_seconds_total`` (workers), ``profiler_cpu_seconds`` (py-spy itself),
``profile`` (``{"available", "reason", ...}``), ``pids_profiled`` (py-spy got samples from them)
and ``pids_recorded`` (py-spy was started on them).

Without an explicit rate the window's py-spy samples follow the work
(:mod:`.sample_budget`): ``samples`` and ``stage_samples`` are then *effective* samples (weighted
by 1/rate, scaled to Kish's n_eff; the plain counts when every process ran at one rate), with
``samples_recorded`` (counted raw samples), ``samples_dropped`` (scouts'), ``busy_pids``
and ``rates_hz`` (PID → the rate of its last recording) beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from pathprobe.config import ProbeOptions
from pathprobe.probes import cgroups, pyspy, sample_budget, stages
from pathprobe.probes.base import JSONDict, Probe, Unavailable, Window
from pathprobe.probes.processes import ProcessSampler, descendants, is_python_process

NO_TARGET = Unavailable(
    "no server process to observe (no --server-pid and no --agent)",
    "pass --server-pid PID or --agent URL",
)
PY_SPY_MISSING_HOW = "pip install py-spy (a pathprobe dependency) or put py-spy on PATH"
#: Longest a local recording may run before py-spy stops by itself (a safety net only: windows
#: are stopped explicitly).
DEFAULT_MAX_RECORD_S = 900
_KILLED_PID = re.compile(r"(?:Killed process|pid=)\s*(\d+)")


@dataclass
class _Active:
    """What runs during one window."""

    window: Window
    t0_ns: int
    tmpdir: Path
    recordings: list[pyspy.Recording] = field(default_factory=list)
    recorded_pids: set[int] = field(default_factory=set)
    # The live recording of each PID (a promotion replaces it) and the processes found busy.
    current: dict[int, pyspy.Recording] = field(default_factory=dict)
    busy: set[int] = field(default_factory=set)
    planner: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # set when the window stops
    planner_error: str | None = None
    # py-spy starts for workers born during the window, and stops of replaced recordings.
    pending: set[asyncio.Task[Any]] = field(default_factory=set)
    stopping: bool = False
    sampler: ProcessSampler | None = None
    cgroup: cgroups.CgroupWatch | None = None
    kernel: cgroups.KernelOomLog | None = None
    # py-spy samples per second for a new recording: the explicit rate, or the scouts' rate.
    rate_hz: int = sample_budget.DEFAULT_RATE_HZ


class ServerProbe:
    """:class:`~pathprobe.probes.base.Probe` for local server processes (``--server-pid``).

    ``cgroup`` (a cgroup directory) widens the watched set to every process in it; without it the
    cgroup of the first PID is only *read*, never used to pick processes.
    Several windows may be open at once (the agent allows it), keyed by (path, step).
    """

    name = "server"

    def __init__(
        self,
        options: ProbeOptions,
        *,
        cgroup: str | Path | None = None,
        rate_hz: int | None = None,
        sample_hz: float = 5.0,
        max_record_s: int = DEFAULT_MAX_RECORD_S,
        keep_windows: bool = True,
        per_process: bool = True,
    ) -> None:
        self.options = options
        self.rate_hz = rate_hz
        self.sample_hz = sample_hz
        self.max_record_s = max_record_s
        self.keep_windows = keep_windows
        self.per_process = per_process
        self.explicit_cgroup = None if cgroup is None else Path(cgroup)
        self.roots: tuple[int, ...] = tuple(options.server_pids)
        self.unavailable: Unavailable | None = None
        self.profile_unavailable: Unavailable | None = None
        self.cgroup_unavailable: Unavailable | None = None
        self.cgroup_paths: cgroups.CgroupPaths | None = None
        self.py_spy: str | None = None
        self.py_spy_version: str | None = None
        self.rules = stages.compile_rules(options.stage_rules)
        self._active: dict[tuple[str, int], _Active] = {}
        self._windows: list[JSONDict] = []
        self._pids_seen: set[int] = set()

    # -- Probe protocol ---------------------------------------------------------------------

    async def open(self) -> None:
        alive = [pid for pid in self.roots if psutil.pid_exists(pid)]
        if self.explicit_cgroup is not None:
            self.cgroup_paths = cgroups.cgroup_from_path(self.explicit_cgroup)
        if not alive and not (self.cgroup_paths and cgroups.cgroup_pids(self.cgroup_paths)):
            self.unavailable = (
                NO_TARGET
                if not self.roots and self.explicit_cgroup is None
                else Unavailable(
                    f"server process(es) {list(self.roots)} not running",
                    "pass the PID of a running server process with --server-pid",
                )
            )
            return
        self.roots = tuple(alive)
        if self.explicit_cgroup is None and alive:
            self.cgroup_paths = cgroups.cgroup_of(alive[0])
        self.cgroup_unavailable = cgroups.check_cgroup(self.cgroup_paths)
        if self.cgroup_paths is None and self.explicit_cgroup is not None:
            self.cgroup_unavailable = Unavailable(
                f"cgroup {self.explicit_cgroup} not found or not a cgroup directory",
                cgroups.CGROUP_HOW_TO,
            )
        self.profile_unavailable = await self._check_profiler()

    async def start_window(self, window: Window) -> None:
        if self.unavailable is not None:
            return
        key = (window.path, window.step)
        if key in self._active:
            await self._abandon(self._active.pop(key))
        active = _Active(
            window=window,
            t0_ns=time.monotonic_ns(),
            tmpdir=Path(tempfile.mkdtemp(prefix="pathprobe-pyspy-")),
        )
        self._active[key] = active
        if self.cgroup_paths is not None and self.cgroup_unavailable is None:
            active.cgroup = cgroups.CgroupWatch(self.cgroup_paths)
            await asyncio.to_thread(active.cgroup.begin)
        active.kernel = cgroups.KernelOomLog()
        await asyncio.to_thread(active.kernel.begin)
        cgroup_pids = None
        if self.explicit_cgroup is not None and self.cgroup_paths is not None:
            paths = self.cgroup_paths
            cgroup_pids = lambda: cgroups.cgroup_pids(paths)  # noqa: E731
        profiling = self.profile_unavailable is None and self.py_spy is not None
        on_birth = None
        if profiling and self.per_process:
            loop = asyncio.get_running_loop()

            def on_birth(pid: int) -> None:  # sampler thread → event loop
                loop.call_soon_threadsafe(self._follow_birth, active, pid)

        active.sampler = ProcessSampler(
            self.roots,
            cgroup_pids=cgroup_pids,
            on_tick=active.cgroup.memory_usage_bytes if active.cgroup else None,
            on_birth=on_birth,
            sample_hz=self.sample_hz,
        )
        await asyncio.to_thread(active.sampler.start)
        active.t0_ns = active.sampler.t0_ns
        if profiling:
            targets = await asyncio.to_thread(self._profile_targets)
            if self.rate_hz is not None:
                active.rate_hz = self.rate_hz
            elif self.per_process:
                # Every process starts as a scout; the planner gives the budget to those that
                # work (module docstring of sample_budget). A PID born later starts as a scout.
                active.rate_hz = sample_budget.SCOUT_RATE_HZ
                active.planner = asyncio.ensure_future(self._plan_rates(active))
            else:  # one py-spy per root follows its children: the roots share the budget
                active.rate_hz = sample_budget.rate_for(len(targets))
            for pid in targets:
                await self._record(active, pid)

    async def _record(self, active: _Active, pid: int, rate_hz: int | None = None) -> None:
        """Start py-spy on ``pid`` for ``active`` at ``rate_hz`` (default: the window's rate for
        a new recording). Once per PID and window, unless ``rate_hz`` re-records a known PID."""
        if active.stopping or self.py_spy is None:
            return
        if rate_hz is None and pid in active.recorded_pids:
            return
        active.recorded_pids.add(pid)
        rec = pyspy.Recording(
            self.py_spy, pid, active.tmpdir / f"pyspy-{pid}-{len(active.recordings)}.txt",
            rate_hz or active.rate_hz, self.max_record_s, subprocesses=not self.per_process,
        )  # fmt: skip
        rec.scout = active.planner is not None and rate_hz is None
        try:
            await rec.start()
        except OSError as exc:
            rec.error = f"cannot start py-spy: {exc}"
        active.recordings.append(rec)
        previous = active.current.get(pid)
        if previous is not None and rec.error is not None:
            return  # the re-recording failed to start: the one running goes on
        active.current[pid] = rec
        if previous is not None:  # re-recorded at a new rate: stop the old one (it still counts)
            task = asyncio.ensure_future(previous.stop())
            active.pending.add(task)
            task.add_done_callback(active.pending.discard)

    async def _plan_rates(self, active: _Active) -> None:
        """Every REPLAN_S: find the processes that worked and give them the sample budget."""
        sampler = active.sampler
        while sampler is not None and not active.stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(active.wake.wait(), timeout=sample_budget.REPLAN_S)
            if active.stopping:
                return
            # CPU and time since each process was first seen (a worker born mid-window counts
            # from its birth).
            cpu = {p: used for p, used in sampler.cpu_by_pid().items() if p in active.current}
            active.busy |= {p for p, (c, seen_s) in cpu.items() if sample_budget.is_busy(c, seen_s)}
            live_busy = active.busy & set(cpu)
            if not live_busy:
                continue
            rate = sample_budget.plan(len(cpu), len(live_busy))
            for pid in sorted(live_busy):
                if sample_budget.needs_restart(active.current[pid].rate_hz, rate):
                    await self._record(active, pid, rate)
                    await asyncio.sleep(sample_budget.RESTART_STAGGER_S)

    def _follow_birth(self, active: _Active, pid: int) -> None:
        """A worker appeared mid-window (a restart after a kill): profile it too."""
        if active.stopping:
            return

        async def follow() -> None:
            if await asyncio.to_thread(is_python_process, pid):
                await self._record(active, pid)

        task = asyncio.ensure_future(follow())
        active.pending.add(task)
        task.add_done_callback(active.pending.discard)

    async def stop_window(self, window: Window) -> JSONDict:
        key = (window.path, window.step)
        active = self._active.pop(key, None)
        if active is None:
            summary: JSONDict = {"path": window.path, "step": window.step, "available": False}
            summary["reason"] = (
                self.unavailable.reason if self.unavailable else "window was not started"
            )
            self._keep(summary)
            return summary
        try:
            summary = await self._finish(active, window)
        except BaseException:
            # Cancelled (Ctrl-C) or failed half-way: nothing may outlive the window. Kill first
            # (cannot be interrupted), then reap so no transport outlives the event loop.
            self._kill_now(active)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(
                    asyncio.gather(*(rec.kill() for rec in active.recordings)), timeout=10
                )
            raise
        finally:
            shutil.rmtree(active.tmpdir, ignore_errors=True)
        self._keep(summary)
        return summary

    def _keep(self, summary: JSONDict) -> None:
        if self.keep_windows:
            self._windows.append(summary)

    async def close(self) -> JSONDict:
        try:
            for active in list(self._active.values()):
                await self._abandon(active)
        except BaseException:
            for active in self._active.values():
                self._kill_now(active)
            raise
        finally:
            self._active.clear()
        section: JSONDict = {
            "available": self.unavailable is None,
            "reason": None if self.unavailable is None else self.unavailable.reason,
            "how_to_enable": None if self.unavailable is None else self.unavailable.how_to_enable,
            "windows": list(self._windows),
            "profiler": {
                "tool": "py-spy",
                "version": self.py_spy_version,
                # An explicit rate; without one each window's processes share a budget.
                "rate_hz": self.rate_hz,
                "sample_budget_hz": None if self.rate_hz else sample_budget.SAMPLE_BUDGET_HZ,
                **self._part(self.profile_unavailable),
            },
            "cgroup": self._part(self.cgroup_unavailable),
            "pids": sorted(self._pids_seen | set(self.roots)),
        }
        return section

    # -- parts ------------------------------------------------------------------------------

    async def _check_profiler(self) -> Unavailable | None:
        if not self.options.profile:
            return Unavailable("profiling turned off (--no-profile)", "drop --no-profile")
        self.py_spy = pyspy.find_py_spy()
        if self.py_spy is None:
            return Unavailable("py-spy not found", PY_SPY_MISSING_HOW)
        self.py_spy_version = await pyspy.py_spy_version(self.py_spy)
        targets = await asyncio.to_thread(self._profile_targets)
        if not targets:
            return Unavailable(
                "no Python process among the server processes",
                "point --server-pid at the Python server process (e.g. the gunicorn master)",
            )
        for pid in targets[:8]:
            refusal = pyspy.ptrace_refusal(pid)
            if refusal is not None:
                return refusal
        # A root may be a wrapper (a shell, `timeout`): one Python process in the tree is enough.
        complaint = None
        for pid in sorted(await asyncio.to_thread(descendants, targets))[:8]:
            complaint = await pyspy.try_dump(self.py_spy, pid)
            if complaint is None:
                return None
        lowered = (complaint or "").lower()
        if "permission" in lowered or "not permitted" in lowered:
            return Unavailable(
                f"ptrace refused: {complaint}", "run as root or grant CAP_SYS_PTRACE"
            )
        return Unavailable(
            f"py-spy cannot read the server processes: {complaint}",
            "point --server-pid at the Python server process (e.g. the gunicorn master)",
        )

    def _profile_targets(self) -> list[int]:
        """The PIDs to start py-spy on (blocking: run in a thread).

        Per process (the default): every Python process of the watched set. With
        ``per_process=False``: the root PIDs (py-spy follows their children itself); with only a
        cgroup, the top of each process tree inside it.
        """
        if self.per_process:
            watched = descendants(self.roots)
            if self.explicit_cgroup is not None and self.cgroup_paths is not None:
                watched |= cgroups.cgroup_pids(self.cgroup_paths)
            watched.discard(os.getpid())
            return [pid for pid in sorted(watched) if is_python_process(pid)]
        if self.roots:
            return [pid for pid in self.roots if psutil.pid_exists(pid)]
        if self.cgroup_paths is None:
            return []
        pids = cgroups.cgroup_pids(self.cgroup_paths) - {os.getpid()}
        # Top of each tree inside the cgroup: processes whose parent is outside it.
        tops = []
        for pid in sorted(pids):
            with contextlib.suppress(psutil.Error):
                if psutil.Process(pid).ppid() not in pids:
                    tops.append(pid)
        return tops

    async def _finish(self, active: _Active, window: Window) -> JSONDict:
        await self._stop_planner(active)
        # Busy recordings first: when the scouts' samples will be left out, the scouts are
        # discarded instead of waited for (a 2 Hz py-spy takes 0.5-3 s to exit on SIGINT,
        # measured; every window waited for the slowest).
        busy = [rec for rec in active.recordings if not rec.scout]
        await asyncio.gather(*(rec.stop() for rec in busy))
        if sample_budget.scouts_left_out(rec.samples for rec in busy):
            await asyncio.gather(*(rec.discard() for rec in active.recordings if rec.scout))
        if active.pending:
            await asyncio.gather(*active.pending, return_exceptions=True)
        profiles = await asyncio.gather(*(rec.stop() for rec in active.recordings))
        sampler_summary: JSONDict = {}
        if active.sampler is not None:
            sampler = active.sampler
            await asyncio.to_thread(sampler.stop)
            sampler_summary = sampler.summary()
        cgroup_summary: JSONDict
        if active.cgroup is not None:
            cgroup_summary = await asyncio.to_thread(active.cgroup.end)
        else:
            cgroup_summary = (self.cgroup_unavailable or Unavailable(
                "no cgroup found for the server", cgroups.CGROUP_HOW_TO
            )).as_json()  # fmt: skip
        kernel_lines: list[str] = []
        if active.kernel is not None:
            kernel_lines = await asyncio.to_thread(active.kernel.end)

        combined = sample_budget.combine(
            sample_budget.Segment(rec.rate_hz, profile.stacks, rec.scout)
            for rec, profile in zip(active.recordings, profiles, strict=True)
        )
        profiled: set[int] = set()
        for profile in profiles:
            profiled |= profile.pids
        samples = round(combined.effective)
        # Every category, 0 if none; shares from the unrounded weights.
        stage_weights = stages.fold_stage_counts(combined.stacks, self.rules)
        stage_samples = {k: round(v) for k, v in stage_weights.items()}
        errors = [rec.error for rec in active.recordings if rec.error]
        if active.planner_error:
            errors.append(active.planner_error)
        profile_state: JSONDict
        if self.profile_unavailable is not None:
            profile_state = self.profile_unavailable.as_json()
        elif errors and not samples:
            profile_state = Unavailable(
                f"py-spy failed: {errors[0]}", "check that py-spy can attach (run as root)"
            ).as_json()
        else:
            profile_state = {"available": True, "errors": errors}
        profiler_cpu = [rec.cpu_seconds for rec in active.recordings if rec.cpu_seconds]

        deaths = sampler_summary.get("worker_deaths", [])
        killed = {int(m.group(1)) for line in kernel_lines for m in _KILLED_PID.finditer(line)}
        for death in deaths:
            death["oom_killed"] = death["pid"] in killed
        worker_pids = {w["pid"] for w in sampler_summary.get("workers", [])}
        self._pids_seen |= worker_pids
        end_ns = window.end_ns or time.monotonic_ns()
        start_ns = window.start_ns or active.t0_ns
        summary: JSONDict = {
            "path": window.path,
            "step": window.step,
            "available": True,
            "t0_ns": active.t0_ns,
            "window_ms": round(max(0, end_ns - start_ns) / 1e6, 1),
            "samples": samples,
            # py-spy samples per second per process: the explicit rate, else the rate most busy
            # processes ran at last (the scouts' rate while none was busy).
            "rate_hz": _busy_rate(active),
            "samples_recorded": combined.raw,
            "samples_dropped": combined.dropped,
            "busy_pids": sorted(active.busy),
            "rates_hz": {str(pid): rec.rate_hz for pid, rec in sorted(active.current.items())},
            "stage_samples": stage_samples,
            "stage_share": {k: round(v, 4) for k, v in stages.stage_shares(stage_weights).items()},
            "folded": pyspy.folded_top(combined.stacks),
            "profile": profile_state,
            "pids_profiled": sorted(profiled),  # processes py-spy got samples from
            "pids_recorded": sorted(active.recorded_pids),  # processes py-spy was started on
            "profiler_cpu_seconds": round(sum(profiler_cpu), 3) if profiler_cpu else None,
            "workers": sampler_summary.get("workers", []),
            "timeline": sampler_summary.get("timeline", []),
            "worker_deaths": deaths,
            "worker_births": sampler_summary.get("worker_births", []),
            "busy_workers_mean": sampler_summary.get("busy_workers_mean"),
            "cpu_seconds_total": sampler_summary.get("cpu_seconds_total"),
            "runqueue_wait_seconds_total": sampler_summary.get("runqueue_wait_seconds_total"),
            "cgroup": cgroup_summary,
            "kernel_oom_lines": kernel_lines,
            "cpu_cores_available": self._cores_available(cgroup_summary, worker_pids),
        }
        if sampler_summary.get("sampler_error"):
            summary["sampler_error"] = sampler_summary["sampler_error"]
        return summary

    def _cores_available(self, cgroup_summary: JSONDict, pids: set[int]) -> float:
        """Cores the server may use: its CPU affinity, capped by a cgroup CPU quota."""
        cores: float = float(os.cpu_count() or 1)
        for pid in sorted(pids)[:1] or list(self.roots[:1]):
            with contextlib.suppress(OSError):
                cores = float(len(os.sched_getaffinity(pid)))
        limit = cgroup_summary.get("cpu_limit_cores")
        if isinstance(limit, int | float) and limit > 0:
            cores = min(cores, float(limit))
        return cores

    @staticmethod
    async def _stop_planner(active: _Active) -> None:
        """Stop the rate planner, letting a py-spy start it began finish (so it is reaped); a
        planner that failed is named in the profile's errors (its rates froze when it did)."""
        active.stopping = True
        active.wake.set()
        if active.planner is not None:
            (outcome,) = await asyncio.gather(active.planner, return_exceptions=True)
            if isinstance(outcome, Exception):
                active.planner_error = f"sample planner failed: {type(outcome).__name__}: {outcome}"

    @staticmethod
    def _kill_now(active: _Active) -> None:
        active.stopping = True
        if active.planner is not None:
            active.planner.cancel()
        for rec in active.recordings:
            rec.kill_now()
        for task in active.pending:
            task.cancel()
        if active.sampler is not None:
            active.sampler.request_stop()
        if active.cgroup is not None:
            active.cgroup.close()
        if active.kernel is not None:
            active.kernel.close()

    async def _abandon(self, active: _Active) -> None:
        """Stop everything of a window nobody will ask for (reaps py-spy)."""
        await self._stop_planner(active)
        if active.sampler is not None:
            await asyncio.to_thread(active.sampler.stop)  # no more births reported
        if active.pending:
            await asyncio.gather(*active.pending, return_exceptions=True)
        for rec in active.recordings:
            await rec.kill()
        if active.cgroup is not None:
            active.cgroup.close()
        if active.kernel is not None:
            active.kernel.close()
        shutil.rmtree(active.tmpdir, ignore_errors=True)

    @staticmethod
    def _part(unavailable: Unavailable | None) -> JSONDict:
        if unavailable is None:
            return {"available": True, "reason": None, "how_to_enable": None}
        return unavailable.as_json()


def _busy_rate(active: _Active) -> int:
    """The rate most busy processes ran at last (restarts wait for a 1.5× change, so busy
    processes may differ); the window's rate when none was busy."""
    rates = Counter(active.current[pid].rate_hz for pid in active.busy if pid in active.current)
    return rates.most_common(1)[0][0] if rates else active.rate_hz


def make_server_probe(options: ProbeOptions, **kwargs: Any) -> Probe:
    """The server probe for ``options``: remote through ``--agent URL``, else local PIDs."""
    if options.agent_url:
        from pathprobe.probes.remote import AgentServerProbe

        probe: Probe = AgentServerProbe(options.agent_url, options.agent_token)
        return probe
    return ServerProbe(options, **kwargs)
