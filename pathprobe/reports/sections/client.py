"""The client: is the load generator itself the bottleneck? Calibration floor, CPU, event-loop
lag and send-schedule slip per window, and the load generators of a distributed (Ray) run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

from pathprobe.reports import charts
from pathprobe.reports.fields import (
    as_list,
    as_map,
    clip,
    fmt_ms,
    fmt_num,
    fmt_pct,
    get,
    not_observed,
    num,
)
from pathprobe.reports.sections.common import concat_timelines, step_of, window_label


def client_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """probes.client per window (CPU, loop lag, schedule slip — the step's own slip when the
    window has none), the calibration floor, the load generators and their timelines."""
    client = as_map(get(report, "probes", "client"))
    missing = not_observed(client, "client")
    floor = as_map(get(client, "calibration", "floor_ms"))
    windows = [as_map(w) for w in as_list(client.get("windows"))]
    rows = []
    for w in windows:
        path, step = window_label(report, w)
        cpu_max = num(get(w, "cpu_percent", "max"))
        slip = as_map(w.get("slip_ms")) or step_of(report, w).get("slip_ms")
        rows.append(
            {
                "path": path,
                "step": step,
                "cpu_mean": fmt_pct(get(w, "cpu_percent", "mean"), True),
                "cpu_p90": fmt_pct(get(w, "cpu_percent", "p90"), True),
                "cpu_max": fmt_pct(cpu_max, True),
                "cpu_hot": (cpu_max or 0) >= 90,
                "lag_p50": fmt_ms(get(w, "loop_lag_ms", "p50")),
                "lag_p99": fmt_ms(get(w, "loop_lag_ms", "p99")),
                "lag_max": fmt_ms(get(w, "loop_lag_ms", "max")),
                "slip_p50": fmt_ms(get(slip, "p50")),
                "slip_p99": fmt_ms(get(slip, "p99")),
                "slip_max": fmt_ms(get(slip, "max")),
                "busiest": fmt_pct(get(w, "busiest_process_cpu_percent", "max"), True),
            }
        )
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
        "missing": missing if not (rows or floor) else None,
        "floor": {k: fmt_ms(v) for k, v in floor.items() if num(v) is not None},
        "rows": rows,
        "generators": _generators_rows(report),
        "chart": Markup(charts.series_chart(panels)) if panels else None,
    }


def _generators_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """run.load_generators (one row per load worker on Ray): where it ran, what it sent."""
    rows = []
    for g in (as_map(x) for x in as_list(get(report, "run", "load_generators"))[:256]):
        lost = as_map(g.get("lost"))
        offset, spread = num(g.get("clock_offset_ms")), num(g.get("clock_uncertainty_ms"))
        where = f"{clip(lost.get('path'), 40)}, step {fmt_num((num(lost.get('step')) or 0) + 1)}"
        rows.append(
            {
                "worker": fmt_num(g.get("worker")),
                "node": clip(g.get("address"), 60),
                "node_id": clip(g.get("node"), 16),
                "requests": fmt_num(g.get("requests")),
                "cpu": fmt_pct(g.get("cpu_percent"), True),
                "cpu_hot": (num(g.get("cpu_percent")) or 0) >= 90,
                "clock": "—" if offset is None else f"{offset:+.3f} ± {spread or 0:.3f} ms",
                "lost": f"{where}: {fmt_num(lost.get('unsent_requests'))} not sent" if lost else "",
            }
        )
    return rows
