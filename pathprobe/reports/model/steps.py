"""A path's steps (``paths.<name>.steps[]``) of report.json, typed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pathprobe.reports.fields import as_list, as_map, num
from pathprobe.reports.model.values import Percentiles


@dataclass(frozen=True)
class Histogram:
    """A step's latency histogram: bin edges (ms) and counts."""

    edges_ms: tuple[float, ...]
    counts: tuple[float, ...]

    @classmethod
    def from_json(cls, raw: Any) -> Histogram | None:
        """None without edges or when an edge or a count is not a finite number."""
        h = as_map(raw)
        edges = [num(e) for e in as_list(h.get("edges_ms"))]
        counts = [num(c) for c in as_list(h.get("counts"))]
        if not edges or None in edges or None in counts:
            return None
        return cls(
            tuple(e for e in edges if e is not None), tuple(c for c in counts if c is not None)
        )


@dataclass(frozen=True)
class TimelinePoint:
    """One second of a step's latency timeline (an item that is not a mapping: all None)."""

    t_s: float | None
    p50_ms: float | None
    p99_ms: float | None
    errors: float | None

    @classmethod
    def from_json(cls, raw: Any) -> TimelinePoint:
        p = as_map(raw)
        return cls(
            t_s=num(p.get("t_s")),
            p50_ms=num(p.get("p50_ms")),
            p99_ms=num(p.get("p99_ms")),
            errors=num(p.get("errors")),
        )


@dataclass(frozen=True)
class PayloadBin:
    """One payload-size bin of a step: its byte range, count and latency."""

    bytes_min: float | None
    bytes_max: float | None
    count: float | None
    p50_ms: float | None
    p99_ms: float | None

    @classmethod
    def from_json(cls, raw: Any) -> PayloadBin:
        b = as_map(raw)
        return cls(
            bytes_min=num(b.get("bytes_min")),
            bytes_max=num(b.get("bytes_max")),
            count=num(b.get("count")),
            p50_ms=num(b.get("p50_ms")),
            p99_ms=num(b.get("p99_ms")),
        )


@dataclass(frozen=True)
class Step:
    """One step of a path as the sections read it, read once: its numbers (None when missing or
    not a finite number), its label, and the raw mapping for what is not typed yet."""

    index: int
    label: str
    offered_rps: float | None
    achieved_rps: float | None
    requests: float | None
    errors: float | None
    duration_s: float | None
    latency: Percentiles
    service: Percentiles
    errors_by_kind: Mapping[str, float]  # the kinds with a non-zero count
    status_codes: tuple[tuple[str, float | None], ...]
    histogram: Histogram | None
    timeline: tuple[TimelinePoint, ...]
    by_payload_size: tuple[PayloadBin, ...]
    slip: Percentiles
    raw: Mapping[str, Any]

    @classmethod
    def read(cls, raw: Mapping[str, Any], index: int) -> Step:
        offered = num(raw.get("offered_rps"))
        if offered is not None:
            label = f"{offered:g} rps"
        else:
            conc = num(raw.get("concurrency"))
            label = f"concurrency {conc:g}" if conc is not None else f"step {index + 1}"
        kinds = as_map(raw.get("errors_by_kind"))
        return cls(
            index=index,
            label=label,
            offered_rps=offered,
            achieved_rps=num(raw.get("achieved_rps")),
            requests=num(raw.get("requests")),
            errors=num(raw.get("errors")),
            duration_s=num(raw.get("duration_s")),
            latency=Percentiles.from_json(raw.get("latency_ms")),
            service=Percentiles.from_json(raw.get("service_ms")),
            errors_by_kind={str(k): n for k, v in kinds.items() if (n := num(v))},
            status_codes=tuple(
                (str(c), num(n)) for c, n in as_map(raw.get("status_codes")).items()
            ),
            histogram=Histogram.from_json(raw.get("histogram")),
            timeline=tuple(TimelinePoint.from_json(p) for p in as_list(raw.get("timeline"))),
            by_payload_size=tuple(
                PayloadBin.from_json(b) for b in as_list(raw.get("by_payload_size"))
            ),
            slip=Percentiles.from_json(raw.get("slip_ms")),
            raw=raw,
        )
