"""Readers shared by the typed report: display text, flags, intervals, percentile sets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pathprobe.reports.fields import as_list, as_map, get, num


def text(value: Any) -> str | None:
    """A display string: None stays None, anything else becomes ``str`` (as :func:`.fields.clip`
    would show it)."""
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def texts(value: Any) -> tuple[str, ...]:
    """A list of display strings ("" for a null item); not a list: empty."""
    return tuple(text(v) or "" for v in as_list(value))


def flag(value: Any) -> bool | None:
    """True or False when the value is that bool, else None (``1`` and ``"yes"`` are not flags)."""
    return value if isinstance(value, bool) else None


def interval(value: Any) -> tuple[float, float] | None:
    """A ``[low, high]`` pair of finite numbers, or None."""
    lo, hi = num(get(value, 0)), num(get(value, 1))
    return None if lo is None or hi is None else (lo, hi)


def stage_ms(value: Any) -> Mapping[str, float]:
    """``{stage: ms}`` with the entries that are finite numbers; not a mapping: empty."""
    return {str(s): n for s, v in as_map(value).items() if (n := num(v)) is not None}


@dataclass(frozen=True)
class Percentiles:
    """A ``latency_ms``-shaped mapping (also ``service_ms``): finite numbers or None."""

    p50: float | None
    p90: float | None
    p99: float | None
    p999: float | None  # stored under "p99.9"
    max: float | None

    @classmethod
    def from_json(cls, raw: Any) -> Percentiles:
        m = as_map(raw)
        return cls(
            p50=num(m.get("p50")),
            p90=num(m.get("p90")),
            p99=num(m.get("p99")),
            p999=num(m.get("p99.9")),
            max=num(m.get("max")),
        )
