"""The verdict card and the ranking: the bottleneck in words, confidence, what to do, the targets
and the per-step pass/fail strip of the judged path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pathprobe.reports import charts
from pathprobe.reports.fields import (
    STAGES,
    clip,
    fmt_explains_ms,
    fmt_ms,
    fmt_pct,
    fmt_rps,
    headline,
    stage_title,
)
from pathprobe.reports.model import Targets, Verdict
from pathprobe.reports.sections.common import path_names, path_steps

EVIDENCE_MAX = 6


def targets_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """The targets: met / missed / unknown / none, their text, and per step of the judged path
    (``targets.judged_on``, else the last path) whether it passed and why not."""
    targets = Targets.from_json(report.get("targets"))
    p99, rps, err = targets.p99_ms, targets.rps, targets.error_rate
    parts = []
    if p99 is not None:
        parts.append(f"p99 ≤ {fmt_ms(p99)}")
    if rps is not None:
        parts.append(f"≥ {fmt_rps(rps)}")
    if err is not None:
        parts.append(f"errors ≤ {fmt_pct(err)}")
    met = Verdict.from_json(report.get("verdict")).targets_met
    if targets.given is False:
        state = "none"
    elif not parts and not targets.present:
        state = "met" if met is True else ("missed" if met is False else "none")
    elif not parts:
        state = "none"
    else:
        state = "met" if met is True else ("missed" if met is False else "unknown")
    judged_on = targets.judged_on
    if judged_on is None and report.get("paths"):
        judged_on = path_names(report)[-1]
    passed_by_rate = {
        s.offered_rps: (s.passed, [clip(r, 200) for r in s.reasons])
        for s in targets.steps
        if s.offered_rps is not None
    }
    strip = []
    for step in path_steps(report, judged_on) if judged_on is not None else []:
        rate = step.offered_rps
        passed, reasons = passed_by_rate.get(rate, (None, [])) if rate is not None else (None, [])
        strip.append(
            {
                "label": step.label,
                "p99": fmt_ms(step.latency.p99),
                "achieved": fmt_rps(step.achieved_rps),
                "passed": passed,
                "reasons": reasons,
            }
        )
    return {
        "state": state,
        "text": ", ".join(parts),
        "judged_on": clip(judged_on, 60),
        "p99_ms": p99,
        "strip": strip,
        "passed_by_rate": passed_by_rate,
    }


def verdict_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """The verdict card: bottleneck, summary, advice (the stage's fix when none), confidence,
    banners (interrupted, untrustworthy), the ranking (20 rows at most) and next steps."""
    v = Verdict.from_json(report.get("verdict"))
    stage = v.bottleneck
    ranking = [
        {
            "stage": clip(r.stage, 60),
            "title": stage_title(r.stage),
            "color": charts.stage_color(str(r.stage)),
            "explains": fmt_explains_ms(r.explains_ms, r.failures_explained),
            "below_bar": r.clears_bar is False,
            "evidence": [clip(e) for e in r.evidence[:EVIDENCE_MAX]],
        }
        for r in v.ranking[:20]
    ]
    fix = STAGES[stage][1] if stage is not None and stage in STAGES else ""
    return {
        "stage": clip(stage, 60) or "unknown",
        "title": headline(stage),
        "known_stage": stage is not None and stage in STAGES,
        "summary": clip(v.summary, 600),
        "advice": clip(v.advice, 600) or fix,
        "confidence": clip(v.confidence_level, 20) if v.confidence_level else "",
        "confidence_reasons": [clip(r, 200) for r in v.confidence_reasons[:8]],
        "trustworthy": v.trustworthy,
        "interrupted": report.get("interrupted") is True,
        "ranking": ranking,
        "next_steps": [clip(s, 600) for s in v.next_steps[:10]],
    }
