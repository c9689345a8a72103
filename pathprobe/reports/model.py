"""The report as the HTML sections read it: frozen dataclasses built from report.json.

Each ``from_json(raw)`` reads defensively, like the readers in :mod:`pathprobe.reports.fields`:
a missing key or one of the wrong type gives None, an empty tuple or the documented fallback,
numbers are finite floats or None (bools, strings, NaN and infinities are not numbers), and
nothing raises. Text is kept whole; display caps (:func:`.fields.clip`) are the sections' business.
Only the reading side: report.json is written by :mod:`pathprobe.reports.payload` as before.
"""

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
class RankedStage:
    """One row of ``verdict.ranking``."""

    stage: str | None
    explains_ms: float | None
    failures_explained: float | None
    clears_bar: bool | None
    evidence: tuple[str, ...]

    @classmethod
    def from_json(cls, raw: Any) -> RankedStage:
        r = as_map(raw)
        return cls(
            stage=text(r.get("stage")),
            explains_ms=num(r.get("explains_ms")),
            failures_explained=num(r.get("failures_explained")),
            clears_bar=flag(r.get("clears_bar")),
            evidence=texts(r.get("evidence")),
        )


@dataclass(frozen=True)
class LedgerHalf:
    """One set of a path's ledger: the stages' sum against the measured percentile."""

    sum_ms: float | None
    measured_ms: float | None

    @classmethod
    def from_json(cls, raw: Any) -> LedgerHalf | None:
        """None when the set is missing or empty (reports from before the ledger)."""
        m = as_map(raw)
        if not m:
            return None
        return cls(sum_ms=num(m.get("sum_ms")), measured_ms=num(m.get("measured_ms")))


@dataclass(frozen=True)
class PathAttribution:
    """``verdict.attribution[path]``: the stage split at the median and at the tail.

    ``tail_key`` is the tail's own key ("p99", or "p90" on short runs): ``percentile_label`` when
    the entry holds that key, else "p99". The ledger's tail set is looked up under the label
    whenever it is a string.
    """

    path: str
    offered_rps: float | None
    tail_key: str
    median: Mapping[str, float]
    tail: Mapping[str, float]
    ledger_median: LedgerHalf | None
    ledger_tail: LedgerHalf | None

    @classmethod
    def from_json(cls, path: str, raw: Any) -> PathAttribution:
        e = as_map(raw)
        label = e.get("percentile_label")
        tail_key = label if isinstance(label, str) and label in e else "p99"
        ledger = as_map(e.get("ledger"))
        ledger_tail_key = label if isinstance(label, str) else "p99"
        return cls(
            path=path,
            offered_rps=num(e.get("offered_rps")),
            tail_key=tail_key,
            median=stage_ms(e.get("p50")),
            tail=stage_ms(e.get(tail_key)),
            ledger_median=LedgerHalf.from_json(ledger.get("p50")),
            ledger_tail=LedgerHalf.from_json(ledger.get(ledger_tail_key)),
        )


@dataclass(frozen=True)
class HopDelta:
    """One row of ``verdict.hop_deltas``: what a hop adds, with bootstrap intervals."""

    hop: str | None
    from_path: str | None
    to_path: str | None
    p50_ms: float | None
    p50_ci_ms: tuple[float, float] | None
    tail_ms: float | None
    tail_ci_ms: tuple[float, float] | None
    tail_label: str  # "p99" when missing or empty

    @classmethod
    def from_json(cls, raw: Any) -> HopDelta:
        d = as_map(raw)
        return cls(
            hop=text(d.get("hop")),
            from_path=text(d.get("from")),
            to_path=text(d.get("to")),
            p50_ms=num(d.get("p50_ms")),
            p50_ci_ms=interval(d.get("p50_ci_ms")),
            tail_ms=num(d.get("tail_ms")),
            tail_ci_ms=interval(d.get("tail_ci_ms")),
            tail_label=text(d.get("tail_label") or "p99") or "p99",
        )


@dataclass(frozen=True)
class Verdict:
    """``verdict``: the bottleneck, what it rests on and what to do."""

    bottleneck: str | None
    summary: str | None
    advice: str | None
    confidence_level: str | None  # "high", "medium" or "low"; anything else: None
    confidence_reasons: tuple[str, ...]
    trustworthy: bool  # only an explicit false makes a verdict untrustworthy
    targets_met: bool | None
    ranking: tuple[RankedStage, ...]
    next_steps: tuple[str, ...]
    attribution: tuple[PathAttribution, ...]  # in the report's path order
    hop_deltas: tuple[HopDelta, ...]
    knee: Mapping[str, float | None]  # per path that the verdict names a knee for

    @classmethod
    def from_json(cls, raw: Any) -> Verdict:
        v = as_map(raw)
        conf = as_map(v.get("confidence"))
        level = conf.get("level")
        return cls(
            bottleneck=text(v.get("bottleneck")),
            summary=text(v.get("summary")),
            advice=text(v.get("advice")),
            confidence_level=level if level in ("high", "medium", "low") else None,
            confidence_reasons=texts(conf.get("reasons")),
            trustworthy=v.get("trustworthy") is not False,
            targets_met=flag(v.get("targets_met")),
            ranking=tuple(RankedStage.from_json(r) for r in as_list(v.get("ranking"))),
            next_steps=texts(v.get("next_steps")),
            attribution=tuple(
                PathAttribution.from_json(str(p), e)
                for p, e in as_map(v.get("attribution")).items()
            ),
            hop_deltas=tuple(HopDelta.from_json(d) for d in as_list(v.get("hop_deltas"))),
            knee={str(p): num(k) for p, k in as_map(v.get("knee")).items()},
        )


@dataclass(frozen=True)
class TargetStep:
    """One row of ``targets.steps``: whether the step at that offered rate passed, and why not."""

    offered_rps: float | None
    passed: bool | None
    reasons: tuple[str, ...]

    @classmethod
    def from_json(cls, raw: Any) -> TargetStep:
        s = as_map(raw)
        return cls(
            offered_rps=num(s.get("offered_rps")),
            passed=flag(s.get("passed")),
            reasons=texts(s.get("reasons")),
        )


@dataclass(frozen=True)
class Targets:
    """``targets``: what was asked for, and on which path it was judged."""

    present: bool  # the report holds a non-empty ``targets`` mapping
    given: bool | None
    p99_ms: float | None
    rps: float | None
    error_rate: float | None
    judged_on: str | None
    steps: tuple[TargetStep, ...]

    @classmethod
    def from_json(cls, raw: Any) -> Targets:
        t = as_map(raw)
        return cls(
            present=bool(t),
            given=flag(t.get("given")),
            p99_ms=num(t.get("p99_ms")),
            rps=num(t.get("rps")),
            error_rate=num(t.get("error_rate")),
            judged_on=text(t.get("judged_on")),
            steps=tuple(TargetStep.from_json(s) for s in as_list(t.get("steps"))),
        )


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
            raw=raw,
        )
