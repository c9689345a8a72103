"""The client: is the load generator itself the bottleneck? Calibration floor, CPU, event-loop
lag and send-schedule slip per window, and the load generators of a distributed (Ray) run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

from pathprobe.reports import charts
from pathprobe.reports.fields import (
    clip,
    fmt_ms,
    fmt_num,
    fmt_pct,
    get,
)
from pathprobe.reports.model import ClientProbe, Percentiles, RunInfo
from pathprobe.reports.sections.common import concat_timelines, window_label, window_step


def client_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """probes.client per window (CPU, loop lag, schedule slip — the step's own slip when the
    window has none), the calibration floor, the load generators and their timelines."""
    client = ClientProbe.from_json(get(report, "probes", "client"))
    missing = client.status.not_observed("client")
    rows = []
    for w in client.windows:
        path, step = window_label(report, w.raw)
        cpu, lag = w.cpu_percent, w.loop_lag
        slip = w.slip if w.slip is not None else _step_slip(report, w.raw)
        rows.append(
            {
                "path": path,
                "step": step,
                "cpu_mean": fmt_pct(cpu.mean, True),
                "cpu_p90": fmt_pct(cpu.p90, True),
                "cpu_max": fmt_pct(cpu.max, True),
                "cpu_hot": (cpu.max or 0) >= 90,
                "lag_p50": fmt_ms(lag.p50),
                "lag_p99": fmt_ms(lag.p99),
                "lag_max": fmt_ms(lag.max),
                "slip_p50": fmt_ms(slip.p50),
                "slip_p99": fmt_ms(slip.p99),
                "slip_max": fmt_ms(slip.max),
                "busiest": fmt_pct(w.busiest_process_cpu_max, True),
            }
        )
    windows = [w.raw for w in client.windows]
    panels = []
    for key, title, unit in (
        ("cpu_percent", "client process CPU (% of one core)", "%"),
        ("loop_lag_ms", "event-loop lag", "ms"),
        ("slip_ms", "send-schedule slip", "ms"),
    ):
        lines, seps = concat_timelines(report, windows, key)
        if lines:
            panels.append(charts.Panel(title, unit, lines, separators=seps))
    return {
        "missing": missing if not (rows or client.has_floor) else None,
        "floor": {k: fmt_ms(v) for k, v in client.floor_ms.items()},
        "rows": rows,
        "generators": _generators_rows(report),
        "chart": Markup(charts.series_chart(panels)) if panels else None,
    }


def _step_slip(report: Mapping[str, Any], window: Mapping[str, Any]) -> Percentiles:
    """The slip of the step a window measured (none: all None)."""
    step = window_step(report, window)
    return step.slip if step is not None else Percentiles.from_json(None)


def _generators_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """run.load_generators (one row per load worker on Ray): where it ran, what it sent."""
    rows = []
    for g in RunInfo.from_json(report.get("run")).load_generators[:256]:
        lost = g.lost
        offset, spread = g.clock_offset_ms, g.clock_uncertainty_ms
        rows.append(
            {
                "worker": fmt_num(g.worker),
                "node": clip(g.address, 60),
                "node_id": clip(g.node, 16),
                "requests": fmt_num(g.requests),
                "cpu": fmt_pct(g.cpu_percent, True),
                "cpu_hot": (g.cpu_percent or 0) >= 90,
                "clock": "—" if offset is None else f"{offset:+.3f} ± {spread or 0:.3f} ms",
                "lost": f"{clip(lost.path, 40)}, step {fmt_num((lost.step or 0) + 1)}: "
                f"{fmt_num(lost.unsent_requests)} not sent"
                if lost
                else "",
            }
        )
    return rows
