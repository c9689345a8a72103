"""The verdict card and the ranking: the bottleneck in words, confidence, what to do, the targets
and the per-step pass/fail strip of the judged path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pathprobe.reports import charts
from pathprobe.reports.fields import (
    STAGES,
    as_list,
    as_map,
    clip,
    fmt_explains,
    fmt_ms,
    fmt_pct,
    fmt_rps,
    get,
    headline,
    num,
    stage_title,
)
from pathprobe.reports.sections.common import path_names, path_steps

EVIDENCE_MAX = 6


def targets_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """The targets: met / missed / unknown / none, their text, and per step of the judged path
    (``targets.judged_on``, else the last path) whether it passed and why not."""
    targets = as_map(report.get("targets"))
    p99 = num(targets.get("p99_ms"))
    rps = num(targets.get("rps"))
    err = num(targets.get("error_rate"))
    parts = []
    if p99 is not None:
        parts.append(f"p99 ≤ {fmt_ms(p99)}")
    if rps is not None:
        parts.append(f"≥ {fmt_rps(rps)}")
    if err is not None:
        parts.append(f"errors ≤ {fmt_pct(err)}")
    met = get(report, "verdict", "targets_met")
    if targets.get("given") is False:
        state = "none"
    elif not parts and not targets:
        state = "met" if met is True else ("missed" if met is False else "none")
    elif not parts:
        state = "none"
    else:
        state = "met" if met is True else ("missed" if met is False else "unknown")
    judged_on = targets.get("judged_on")
    if judged_on is None and report.get("paths"):
        judged_on = path_names(report)[-1]
    passed_by_rate = {}
    for s in as_list(targets.get("steps")):
        rate = num(get(s, "offered_rps"))
        if rate is not None:
            passed_by_rate[rate] = (
                get(s, "passed"),
                [clip(r, 200) for r in as_list(get(s, "reasons"))],
            )
    strip = []
    for step in path_steps(report, str(judged_on)) if judged_on is not None else []:
        rate = step.offered_rps
        passed, reasons = passed_by_rate.get(rate, (None, [])) if rate is not None else (None, [])
        strip.append(
            {
                "label": step.label,
                "p99": fmt_ms(step.latency_ms.get("p99")),
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
    v = as_map(report.get("verdict"))
    stage = v.get("bottleneck")
    conf = as_map(v.get("confidence"))
    level = conf.get("level")
    ranking = []
    for row in as_list(v.get("ranking"))[:20]:
        r = as_map(row)
        ranking.append(
            {
                "stage": clip(r.get("stage"), 60),
                "title": stage_title(r.get("stage")),
                "color": charts.stage_color(str(r.get("stage"))),
                "explains": fmt_explains(r),
                "below_bar": r.get("clears_bar") is False,
                "evidence": [clip(e) for e in as_list(r.get("evidence"))[:EVIDENCE_MAX]],
            }
        )
    fix = STAGES[stage][1] if isinstance(stage, str) and stage in STAGES else ""
    return {
        "stage": clip(stage, 60) or "unknown",
        "title": headline(stage),
        "known_stage": isinstance(stage, str) and stage in STAGES,
        "summary": clip(v.get("summary"), 600),
        "advice": clip(v.get("advice"), 600) or fix,
        "confidence": clip(level, 20) if level in ("high", "medium", "low") else "",
        "confidence_reasons": [clip(r, 200) for r in as_list(conf.get("reasons"))[:8]],
        "trustworthy": v.get("trustworthy") is not False,
        "interrupted": report.get("interrupted") is True,
        "ranking": ranking,
        "next_steps": [clip(s, 600) for s in as_list(v.get("next_steps"))[:10]],
    }
