"""Reading and showing report.json values: defensive access and display formatting.

Shared by the HTML report (:mod:`pathprobe.reports.render` and its sections), the compare page
and the terminal summary. The report is data from disk, possibly from another version or
hand-edited: every reader here returns None, an empty container or "—" for a missing value or one
of the wrong type, never raises.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pathprobe.model.stages import STAGES as STAGE_TABLE

# Display caps: keep the HTML small and a hostile megabyte-long header from flooding the page.
TEXT_MAX_CHARS = 300
LONG_TEXT_MAX_CHARS = 4000

# The verdict's vocabulary (design.md §2) in plain words, with the typical fix.
STAGES: dict[str, tuple[str, str]] = {s.name: (s.title, s.fix) for s in STAGE_TABLE}


def get(obj: Any, *keys: str | int) -> Any:
    """``obj[k1][k2]…`` or None when any level is missing or of the wrong type."""
    for key in keys:
        if isinstance(key, int):
            if not isinstance(obj, list) or not -len(obj) <= key < len(obj):
                return None
            obj = obj[key]
        elif isinstance(obj, Mapping):
            obj = obj.get(key)
        else:
            return None
    return obj


def num(value: Any) -> float | None:
    """A finite number, or None (bools, strings, NaN and infinities are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def clip(value: Any, max_chars: int = TEXT_MAX_CHARS) -> str:
    """Text for display: None → "", long strings cut with an ellipsis and the cut length noted."""
    if value is None:
        return ""
    s = value if isinstance(value, str) else str(value)
    if len(s) > max_chars:
        return f"{s[:max_chars]}… [{len(s) - max_chars} more characters]"
    return s


def fmt_ms(value: Any) -> str:
    v = num(value)
    if v is None:
        return "—"
    if abs(v) >= 100:
        return f"{v:,.0f} ms"
    if abs(v) >= 10:
        return f"{v:.1f} ms"
    return f"{v:.2f} ms"


def fmt_explains(row: Mapping[str, Any]) -> str:
    """A ranking row's "explains" cell: its ms, plus the failures it explains when it has any."""
    return fmt_explains_ms(row.get("explains_ms"), num(row.get("failures_explained")))


def fmt_explains_ms(explains_ms: Any, failures: float | None) -> str:
    """The "explains" cell from its parts: the ms, plus the failures when there are any."""
    text = fmt_ms(explains_ms)
    if failures:
        text += f" · {failures:,.0f} failures"
    return text


def fmt_num(value: Any, digits: int = 1) -> str:
    v = num(value)
    if v is None:
        return "—"
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:,.{digits}f}"


def fmt_pct(value: Any, already_percent: bool = False) -> str:
    v = num(value)
    if v is None:
        return "—"
    p = v if already_percent else v * 100
    return f"{p:.0f}%" if abs(p) >= 10 else f"{p:.1f}%"


def fmt_bytes(value: Any) -> str:
    v = num(value)
    if v is None:
        return "—"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.1f} {unit}"
    return f"{v:.0f} B"


def fmt_rps(value: Any) -> str:
    v = num(value)
    return "—" if v is None else f"{v:g} rps"


def fmt_value(key: str, value: Any) -> str:
    """Format a loosely-known value by the unit in its key name (``_ms``, ``_bytes``, …)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if num(value) is None:
        return clip(value)
    if key.endswith("_ms"):
        return fmt_ms(value)
    if key.endswith("_bytes"):
        return fmt_bytes(value)
    if key.endswith(("_percent", "_pct")):
        return fmt_pct(value, already_percent=True)
    return fmt_num(value, 2)


def stage_title(stage: Any) -> str:
    return STAGES[stage][0] if isinstance(stage, str) and stage in STAGES else clip(stage, 80)


def headline(stage: Any) -> str:
    """The bottleneck as a sentence start: known stages capitalised, unknown ones verbatim."""
    if stage is None:
        return "No verdict in this report"
    title = stage_title(stage)
    return title[:1].upper() + title[1:] if stage in STAGES else title


def not_observed_text(
    what: str, *, unavailable: bool, reason: Any, how_to_enable: Any, has_data: bool
) -> str | None:
    """None when a probe section holds data, else "Not observed: <reason> — <how to enable>"
    (see :class:`pathprobe.reports.model.ProbeStatus`)."""
    if unavailable:
        why = clip(reason or "the probe was unavailable", 400)
        how = clip(how_to_enable or "", 400)
        return f"Not observed: {why}" + (f" — {how}" if how else "")
    if not has_data:
        return f"Not observed: the report holds no {what} data."
    return None
