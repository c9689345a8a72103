"""The server section: what the server probe saw, per path (its windows grouped by path, in the
order the paths first appear): the profile and the processes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pathprobe.reports.fields import get
from pathprobe.reports.model import ServerProbe, ServerWindow
from pathprobe.reports.sections.processes import memory_rows, process_chart, worker_rows
from pathprobe.reports.sections.profile import flame_entries, stage_shares


def server_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """probes.server: flame graphs and stage shares, workers, deaths, OOM lines, cgroup
    counters and the CPU/memory chart."""
    server = ServerProbe.from_json(get(report, "probes", "server"))
    by_path: dict[str, list[ServerWindow]] = {}
    for w in server.windows:
        by_path.setdefault(w.path, []).append(w)
    # The profile is read from the raw windows (not typed yet).
    raw_by_path = {path: [w.raw for w in ws] for path, ws in by_path.items()}
    return {
        "missing": server.status.not_observed("server"),
        "flames": flame_entries(raw_by_path),
        **stage_shares(report, raw_by_path),
        "workers": worker_rows(by_path),
        **memory_rows(report, by_path),
        "chart": process_chart(report, server.windows),
    }
