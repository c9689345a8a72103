"""``probes.server`` of report.json, typed: per window, the workers, their deaths, the kernel's
OOM lines and the cgroup counters (the profile is still read from ``raw``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pathprobe.reports.fields import as_list, as_map, num
from pathprobe.reports.model.probes import ProbeStatus
from pathprobe.reports.model.values import text, texts


@dataclass(frozen=True)
class Worker:
    """One server worker process as a window saw it."""

    pid: str | None
    cpu_percent_mean: float | None
    rss_bytes_max: float | None
    uss_bytes_max: float | None

    @classmethod
    def from_json(cls, raw: Any) -> Worker:
        w = as_map(raw)
        return cls(
            pid=text(w.get("pid")),
            cpu_percent_mean=num(w.get("cpu_percent_mean")),
            rss_bytes_max=num(w.get("rss_bytes_max")),
            uss_bytes_max=num(w.get("uss_bytes_max")),
        )


@dataclass(frozen=True)
class WorkerDeath:
    """A worker that died during a window: when (ms into the window) and why."""

    pid: str | None
    t_ms: float | None
    reason: str | None

    @classmethod
    def from_json(cls, raw: Any) -> WorkerDeath:
        d = as_map(raw)
        return cls(pid=text(d.get("pid")), t_ms=num(d.get("t_ms")), reason=text(d.get("reason")))


@dataclass(frozen=True)
class ServerWindow:
    """One window of ``probes.server`` (an item that is not a mapping reads as an empty one).
    ``path`` is the window's path as a grouping key (``str`` of whatever is stored); ``raw``
    locates the window and holds its profile and timeline. ``cgroup`` keeps the counters' values
    as stored: they are shown by their key's unit. ``timeline_end_ms`` is the latest ``t_ms`` of
    its timeline (0 without one)."""

    raw: Mapping[str, Any]
    path: str
    workers: tuple[Worker, ...]
    worker_deaths: tuple[WorkerDeath, ...]
    kernel_oom_lines: tuple[str, ...]
    cgroup: tuple[tuple[str, Any], ...]
    timeline_end_ms: float

    @classmethod
    def from_json(cls, raw: Any) -> ServerWindow:
        w = as_map(raw)
        return cls(
            raw=w,
            path=str(w.get("path")),
            workers=tuple(Worker.from_json(wk) for wk in as_list(w.get("workers"))),
            worker_deaths=tuple(WorkerDeath.from_json(d) for d in as_list(w.get("worker_deaths"))),
            kernel_oom_lines=texts(w.get("kernel_oom_lines")),
            cgroup=tuple((str(k), v) for k, v in as_map(w.get("cgroup")).items()),
            timeline_end_ms=max(
                (num(as_map(p).get("t_ms")) or 0.0 for p in as_list(w.get("timeline"))),
                default=0.0,
            ),
        )


@dataclass(frozen=True)
class ServerProbe:
    """``probes.server``: its status and windows."""

    status: ProbeStatus
    windows: tuple[ServerWindow, ...]

    @classmethod
    def from_json(cls, raw: Any) -> ServerProbe:
        server = as_map(raw)
        return cls(
            status=ProbeStatus.from_json(server),
            windows=tuple(ServerWindow.from_json(w) for w in as_list(server.get("windows"))),
        )
