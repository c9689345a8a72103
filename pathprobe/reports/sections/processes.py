"""The server's processes: workers' CPU and memory, worker deaths and the kernel's OOM lines,
cgroup counters, and a chart of CPU, RSS and live workers over the run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup

from pathprobe.reports import charts
from pathprobe.reports.fields import (
    as_list,
    as_map,
    clip,
    fmt_bytes,
    fmt_ms,
    fmt_pct,
    fmt_value,
    get,
    num,
)
from pathprobe.reports.sections.common import concat_timelines, window_label

_WORKER_MAXIMA = ("cpu_percent_mean", "rss_bytes_max", "uss_bytes_max")


def worker_rows(by_path: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Per path and worker pid, the highest CPU and memory any window saw."""
    rows: list[dict[str, Any]] = []
    for path, ws in by_path.items():
        workers: dict[str, dict[str, float]] = {}
        for w in ws:
            for wk in as_list(w.get("workers")):
                agg = workers.setdefault(clip(get(wk, "pid"), 20), {})
                for key in _WORKER_MAXIMA:
                    v = num(get(wk, key))
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
    report: Mapping[str, Any], by_path: Mapping[str, Sequence[Mapping[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """Per window: worker deaths, the kernel's OOM-killer lines and the cgroup counters."""
    deaths = []
    oom_lines: list[dict[str, str]] = []
    cgroup_rows = []
    for ws in by_path.values():
        for w in ws:
            plabel, step = window_label(report, w)
            for d in as_list(w.get("worker_deaths")):
                t = num(get(d, "t_ms"))
                deaths.append(
                    {
                        "path": plabel,
                        "step": step,
                        "pid": clip(get(d, "pid"), 20),
                        "t": fmt_ms(t) if t is not None else "—",
                        "reason": clip(get(d, "reason"), 200),
                    }
                )
            oom_lines.extend(
                {"path": plabel, "step": step, "line": clip(line, 400)}
                for line in as_list(w.get("kernel_oom_lines"))[:20]
            )
            cg = as_map(w.get("cgroup"))
            if cg:
                cgroup_rows.append({"path": plabel, "step": step, "counters": _counters(cg)})
    return {"deaths": deaths, "cgroup": cgroup_rows, "oom_lines": oom_lines}


def _counters(cgroup: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"key": clip(k, 60), "value": fmt_value(str(k), v), "bad": _is_bad_cgroup(str(k), v)}
        for k, v in list(cgroup.items())[:30]
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


def process_chart(report: Mapping[str, Any], windows: Sequence[Mapping[str, Any]]) -> Markup | None:
    """CPU and RSS of all workers (deaths marked) and the live worker count, or None."""
    panels = []
    events = _death_events(report, windows)
    for key, title, unit, marked in _PANELS:
        lines, seps = concat_timelines(report, windows, key)
        if lines:
            panels.append(
                charts.Panel(title, unit, lines, events=events if marked else [], separators=seps)
            )
    return Markup(charts.series_chart(panels)) if panels else None


def _death_events(
    report: Mapping[str, Any], windows: Sequence[Mapping[str, Any]]
) -> list[tuple[float, str]]:
    """Worker deaths on the time axis of :func:`.common.concat_timelines` (first path only,
    which is the axis the separators belong to; other paths' deaths are listed in the table)."""
    if not windows:
        return []
    first_path = str(windows[0].get("path"))
    events = []
    offset = 0.0
    for w in windows:
        if str(w.get("path")) != first_path:
            continue
        for d in as_list(w.get("worker_deaths")):
            t = num(get(d, "t_ms"))
            if t is not None:
                events.append((offset + t / 1000.0, f"pid {clip(get(d, 'pid'), 12)} died"))
        last = max((num(get(p, "t_ms")) or 0.0 for p in as_list(w.get("timeline"))), default=0.0)
        offset += last / 1000.0 + 0.5
    return events
