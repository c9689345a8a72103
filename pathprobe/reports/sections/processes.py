"""The server's processes: workers' CPU and memory, worker deaths and the kernel's OOM lines,
cgroup counters, and a chart of CPU, RSS and live workers over the run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup

from pathprobe.reports import charts
from pathprobe.reports.fields import (
    clip,
    fmt_bytes,
    fmt_ms,
    fmt_pct,
    fmt_value,
    num,
)
from pathprobe.reports.model import ServerWindow
from pathprobe.reports.sections.common import concat_timelines, window_label


def worker_rows(by_path: Mapping[str, Sequence[ServerWindow]]) -> list[dict[str, Any]]:
    """Per path and worker pid, the highest CPU and memory any window saw."""
    rows: list[dict[str, Any]] = []
    for path, ws in by_path.items():
        workers: dict[str, dict[str, float]] = {}
        for w in ws:
            for wk in w.workers:
                agg = workers.setdefault(clip(wk.pid, 20), {})
                for key, v in (
                    ("cpu_percent_mean", wk.cpu_percent_mean),
                    ("rss_bytes_max", wk.rss_bytes_max),
                    ("uss_bytes_max", wk.uss_bytes_max),
                ):
                    if v is not None:
                        agg[key] = max(agg.get(key, v), v)
        rows.extend(
            {
                "path": clip(path, 60),
                "pid": pid,
                "cpu": fmt_pct(agg.get("cpu_percent_mean"), True),
                "rss": fmt_bytes(agg.get("rss_bytes_max")),
                "uss": fmt_bytes(agg.get("uss_bytes_max")),
            }
            for pid, agg in workers.items()
        )
    return rows


def memory_rows(
    report: Mapping[str, Any], by_path: Mapping[str, Sequence[ServerWindow]]
) -> dict[str, list[dict[str, Any]]]:
    """Per window: worker deaths, the kernel's OOM-killer lines and the cgroup counters."""
    deaths: list[dict[str, str]] = []
    oom_lines: list[dict[str, str]] = []
    cgroup_rows = []
    for ws in by_path.values():
        for w in ws:
            plabel, step = window_label(report, w.raw)
            deaths.extend(
                {
                    "path": plabel,
                    "step": step,
                    "pid": clip(d.pid, 20),
                    "t": fmt_ms(d.t_ms) if d.t_ms is not None else "—",
                    "reason": clip(d.reason, 200),
                }
                for d in w.worker_deaths
            )
            oom_lines.extend(
                {"path": plabel, "step": step, "line": clip(line, 400)}
                for line in w.kernel_oom_lines[:20]
            )
            if w.cgroup:
                cgroup_rows.append({"path": plabel, "step": step, "counters": _counters(w.cgroup)})
    return {"deaths": deaths, "cgroup": cgroup_rows, "oom_lines": oom_lines}


def _counters(cgroup: Sequence[tuple[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"key": clip(k, 60), "value": fmt_value(k, v), "bad": _is_bad_cgroup(k, v)}
        for k, v in cgroup[:30]
    ]


def _is_bad_cgroup(key: str, value: Any) -> bool:
    k = key.lower()
    return ("oom" in k or "failcnt" in k or "throttl" in k) and (num(value) or 0) > 0


#: (timeline key, panel title, unit, worker deaths marked on it)
_PANELS = (
    ("cpu_percent_total", "server CPU, all workers (% of one core)", "%", True),
    ("rss_bytes_total", "server memory, all workers (RSS)", "bytes", True),
    ("workers", "live worker processes", "", False),
)


def process_chart(report: Mapping[str, Any], windows: Sequence[ServerWindow]) -> Markup | None:
    """CPU and RSS of all workers (deaths marked) and the live worker count, or None."""
    panels = []
    events = _death_events(windows)
    raw_windows = [w.raw for w in windows]
    for key, title, unit, marked in _PANELS:
        lines, seps = concat_timelines(report, raw_windows, key)
        if lines:
            panels.append(
                charts.Panel(title, unit, lines, events=events if marked else [], separators=seps)
            )
    return Markup(charts.series_chart(panels)) if panels else None


def _death_events(windows: Sequence[ServerWindow]) -> list[tuple[float, str]]:
    """Worker deaths on the time axis of :func:`.common.concat_timelines` (first path only,
    which is the axis the separators belong to; other paths' deaths are listed in the table)."""
    if not windows:
        return []
    first_path = windows[0].path
    events: list[tuple[float, str]] = []
    offset = 0.0
    for w in windows:
        if w.path != first_path:
            continue
        events.extend(
            (offset + d.t_ms / 1000.0, f"pid {clip(d.pid, 12)} died")
            for d in w.worker_deaths
            if d.t_ms is not None
        )
        offset += w.timeline_end_ms / 1000.0 + 0.5
    return events
