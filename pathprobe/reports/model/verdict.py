"""``verdict`` and ``targets`` of report.json, typed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pathprobe.reports.fields import as_list, as_map, num
from pathprobe.reports.model.values import flag, interval, stage_ms, text, texts


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
