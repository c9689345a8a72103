"""The server section: what the server probe saw, per path (its windows grouped by path, in the
order the paths first appear): the profile and the processes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pathprobe.reports.fields import as_list, as_map, get, not_observed
from pathprobe.reports.sections.processes import memory_rows, process_chart, worker_rows
from pathprobe.reports.sections.profile import flame_entries, stage_shares


def server_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """probes.server: flame graphs and stage shares, workers, deaths, OOM lines, cgroup
    counters and the CPU/memory chart."""
    server = as_map(get(report, "probes", "server"))
    windows = [as_map(w) for w in as_list(server.get("windows"))]
    by_path: dict[str, list[Mapping[str, Any]]] = {}
    for w in windows:
        by_path.setdefault(str(w.get("path")), []).append(w)
    return {
        "missing": not_observed(server, "server"),
        "flames": flame_entries(by_path),
        **stage_shares(report, by_path),
        "workers": worker_rows(by_path),
        **memory_rows(report, by_path),
        "chart": process_chart(report, windows),
    }
