"""What several sections read alike: the paths, their steps, the step a probe window measured,
and probe timelines laid end to end on one time axis."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pathprobe.reports.fields import as_list, as_map, clip, get, num
from pathprobe.reports.model import Step


def path_names(report: Mapping[str, Any]) -> list[str]:
    """The paths in the report's order (the order of the page's tables and charts)."""
    return [str(p) for p in as_map(report.get("paths"))]


def path_steps(report: Mapping[str, Any], path: str) -> list[Step]:
    """The path's steps in the report's order (a missing path or a malformed list: none)."""
    return [
        Step.read(as_map(s), i) for i, s in enumerate(as_list(get(report, "paths", path, "steps")))
    ]


def window_label(report: Mapping[str, Any], window: Mapping[str, Any]) -> tuple[str, str]:
    """(path, step label) of a probe window; ``step`` is an index into the path's steps when it
    resolves to one, else shown as it is."""
    step = window_step(report, window)
    path = clip(window.get("path"), 60)
    return path, step.label if step is not None else clip(window.get("step"), 40)


def window_step(report: Mapping[str, Any], window: Mapping[str, Any]) -> Step | None:
    """The step of the window's path that its ``step`` indexes, or None."""
    step = window.get("step")
    steps = path_steps(report, str(window.get("path")))
    if isinstance(step, int) and not isinstance(step, bool) and 0 <= step < len(steps):
        return steps[step]
    return None


def concat_timelines(
    report: Mapping[str, Any],
    windows: Sequence[Mapping[str, Any]],
    key: str,
    t_key: str = "t_ms",
    scale: float = 1.0,
) -> tuple[list[tuple[str, list[float], list[float]]], list[tuple[float, str]]]:
    """Lines per path (windows of one path laid end to end, in seconds) and step separators."""
    lines: dict[str, tuple[list[float], list[float]]] = {}
    offsets: dict[str, float] = {}
    separators: list[tuple[float, str]] = []
    for w in windows:
        points = [as_map(p) for p in as_list(w.get("timeline"))]
        path_raw = str(w.get("path"))
        path, step = window_label(report, w)
        xs, ys = lines.setdefault(path_raw, ([], []))
        offset = offsets.get(path_raw, 0.0)
        last = 0.0
        added = False
        for p in points:
            t, y = num(p.get(t_key)), num(p.get(key))
            if t is None:
                continue
            last = max(last, t / 1000.0)
            if y is None:
                continue
            xs.append(offset + t / 1000.0)
            ys.append(y * scale)
            added = True
        # Step separators belong to the first path's time axis (the paths' steps line up).
        if added and path_raw == next(iter(lines)):
            separators.append((offset, step))
        offsets[path_raw] = offset + last + 0.5
    return [(clip(p, 40), xs, ys) for p, (xs, ys) in lines.items() if xs], separators
