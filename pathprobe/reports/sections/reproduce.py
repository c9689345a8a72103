"""The run itself: how to reproduce it (command, resolved configuration, versions, host), the
paths it measured and the notes it left."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pathprobe.reports.fields import LONG_TEXT_MAX_CHARS, as_list, clip, fmt_value, get
from pathprobe.reports.model import RunInfo
from pathprobe.reports.sections.common import path_names


def reproduce_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """report.run: the command, the resolved configuration as JSON, versions, host, times."""
    run = RunInfo.from_json(report.get("run"))
    argv = [clip(a, 400) for a in run.argv]
    command = clip(run.command, LONG_TEXT_MAX_CHARS) or " ".join(argv)
    config = run.config
    try:
        config_text = json.dumps(config, indent=2, sort_keys=True, default=str)
    except (TypeError, ValueError):
        config_text = str(config)
    return {
        "command": command,
        "config": clip(config_text, 20 * LONG_TEXT_MAX_CHARS) if config else "",
        "versions": [(clip(k, 60), clip(v, 200)) for k, v in run.versions],
        "host": [(clip(k, 60), fmt_value(k, v)) for k, v in run.host],
        "started_at": clip(run.started_at, 60),
        "ended_at": clip(run.ended_at, 60),
    }


def path_rows(report: Mapping[str, Any]) -> list[dict[str, str]]:
    """Each path's name and URL (the page header and the reproduce list)."""
    return [
        {"name": clip(p, 60), "url": clip(get(report, "paths", p, "url"), 400)}
        for p in path_names(report)
    ]


def run_notes(report: Mapping[str, Any]) -> list[str]:
    """The run's notes, then one per path that could not be reached."""
    notes = [clip(n, 600) for n in as_list(report.get("notes"))[:30]]
    for p in path_names(report):
        unreachable = get(report, "paths", p, "unreachable")
        if unreachable:
            notes.append(f"path {clip(p, 60)} was not reachable: {clip(unreachable, 400)}")
    return notes
