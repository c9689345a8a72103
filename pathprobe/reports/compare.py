"""Before/after comparison of two report.json dicts: what changed per path, step and stage.

:func:`compare_reports` is pure (dicts in, dict out, no formatting) so that scripts and tests can
use the numbers; :func:`render_compare` lays them out as one self-contained HTML page with the same
rules as the report (autoescape, inlined CSS, no network, no script at all).

Steps are matched by offered rate, else by concurrency, else by position; a path or step that only
one report has is kept with the other side empty, never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

from pathprobe.reports import charts
from pathprobe.reports.fields import (
    as_list,
    as_map,
    clip,
    fmt_ms,
    fmt_num,
    fmt_pct,
    fmt_rps,
    get,
    headline,
    num,
    stage_title,
)
from pathprobe.reports.templating import environment

COMPARE_SCHEMA = "pathprobe.compare/v1"
_STEP_FIELDS = ("p50", "p90", "p99")


def _step_key(step: Mapping[str, Any], index: int) -> tuple[str, float]:
    offered = num(step.get("offered_rps"))
    if offered is not None:
        return ("rps", offered)
    conc = num(step.get("concurrency"))
    if conc is not None:
        return ("concurrency", conc)
    return ("index", float(index))


def _key_label(key: tuple[str, float]) -> str:
    kind, value = key
    if kind == "rps":
        return f"{value:g} rps"
    if kind == "concurrency":
        return f"concurrency {value:g}"
    return f"step {int(value) + 1}"


def _step_numbers(step: Mapping[str, Any] | None) -> dict[str, float | None] | None:
    if step is None:
        return None
    out: dict[str, float | None] = {
        f"{k}_ms": num(get(step, "latency_ms", k)) for k in _STEP_FIELDS
    }
    out["achieved_rps"] = num(step.get("achieved_rps"))
    out["errors"] = num(step.get("errors"))
    return out


def _change(before: float | None, after: float | None) -> tuple[float | None, float | None]:
    """(after − before, relative change) — None where a side is missing."""
    if before is None or after is None:
        return None, None
    delta = after - before
    return delta, (delta / before if before else None)


def _verdict(report: Mapping[str, Any]) -> dict[str, Any]:
    v = as_map(report.get("verdict"))
    return {
        "bottleneck": v.get("bottleneck"),
        "targets_met": v.get("targets_met"),
        "summary": v.get("summary"),
        "confidence": get(v, "confidence", "level"),
    }


def _steps_by_key(report: Mapping[str, Any], path: str) -> dict[tuple[str, float], Any]:
    steps = [as_map(s) for s in as_list(get(report, "paths", path, "steps"))]
    return {_step_key(s, i): s for i, s in enumerate(steps)}


def compare_reports(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Per path and step: p50/p90/p99 before → after with the change; the verdict before and after;
    per stage the change of ``explains_ms``. Plain numbers (ms, rps), None where unknown."""
    path_names: list[str] = []
    for report in (before, after):
        path_names.extend(str(p) for p in as_map(report.get("paths")) if p not in path_names)
    paths = []
    for name in path_names:
        b_steps = _steps_by_key(before, name)
        a_steps = _steps_by_key(after, name)
        keys = list(b_steps) + [k for k in a_steps if k not in b_steps]
        steps = []
        for key in sorted(keys, key=lambda k: (k[0], k[1])):
            b = _step_numbers(b_steps.get(key))
            a = _step_numbers(a_steps.get(key))
            change: dict[str, float | None] = {}
            for field in ("p50_ms", "p90_ms", "p99_ms", "achieved_rps", "errors"):
                delta, rel = _change(b[field] if b else None, a[field] if a else None)
                change[field] = delta
                change[f"{field}_rel"] = rel
            steps.append(
                {
                    "step": _key_label(key),
                    "offered_rps": key[1] if key[0] == "rps" else None,
                    "before": b,
                    "after": a,
                    "change": change,
                }
            )
        in_before = name in as_map(before.get("paths"))
        in_after = name in as_map(after.get("paths"))
        only_in = None if in_before and in_after else ("before" if in_before else "after")
        paths.append({"path": name, "only_in": only_in, "steps": steps})

    stages: dict[str, dict[str, float | None]] = {}
    for side, report in (("before_ms", before), ("after_ms", after)):
        for row in as_list(get(report, "verdict", "ranking")):
            stage = get(row, "stage")
            if stage is None:
                continue
            entry = stages.setdefault(str(stage), {"before_ms": None, "after_ms": None})
            entry[side] = num(get(row, "explains_ms"))
    stage_rows: list[dict[str, Any]] = []
    for stage, entry in stages.items():
        delta, rel = _change(entry["before_ms"], entry["after_ms"])
        stage_rows.append({"stage": stage, **entry, "change_ms": delta, "change_rel": rel})
    stage_rows.sort(key=lambda r: -max(r["before_ms"] or 0.0, r["after_ms"] or 0.0))

    vb, va = _verdict(before), _verdict(after)
    return {
        "schema": COMPARE_SCHEMA,
        "verdict": {
            "before": vb,
            "after": va,
            "bottleneck_changed": vb["bottleneck"] != va["bottleneck"],
            "targets_changed": vb["targets_met"] != va["targets_met"],
        },
        "paths": paths,
        "stages": stage_rows,
        "runs": {
            side: {
                "started_at": get(report, "run", "started_at"),
                "command": get(report, "run", "command")
                or " ".join(str(a) for a in as_list(get(report, "run", "argv"))),
            }
            for side, report in (("before", before), ("after", after))
        },
    }


def _fmt_change_ms(delta: float | None, rel: float | None) -> str:
    if delta is None:
        return "—"
    sign = "+" if delta > 0 else ""
    text = f"{sign}{fmt_ms(delta)}"
    if rel is not None:
        text += f" ({'+' if rel > 0 else ''}{fmt_pct(rel)})"
    return text


def _tone(delta: float | None, rel: float | None, floor_ms: float = 0.5) -> str:
    """ "better"/"worse" for latency (lower is better) when the change is more than noise."""
    if delta is None or abs(delta) < floor_ms or (rel is not None and abs(rel) < 0.05):
        return ""
    return "worse" if delta > 0 else "better"


def _targets_word(met: Any) -> str:
    return "met" if met is True else ("missed" if met is False else "none given")


def build_compare_view(result: Mapping[str, Any]) -> dict[str, Any]:
    """Display data for the compare template from :func:`compare_reports`'s result."""
    rows = []
    chart_rows: list[tuple[str, float | None, float | None]] = []
    for p in result["paths"]:
        for s in p["steps"]:
            b, a, c = s["before"] or {}, s["after"] or {}, s["change"]
            rows.append(
                {
                    "path": clip(p["path"], 60),
                    "step": s["step"],
                    "only_in": p["only_in"] or ("before" if not a else "after" if not b else None),
                    "p50": f"{fmt_ms(b.get('p50_ms'))} → {fmt_ms(a.get('p50_ms'))}",
                    "p50_change": _fmt_change_ms(c["p50_ms"], c["p50_ms_rel"]),
                    "p50_tone": _tone(c["p50_ms"], c["p50_ms_rel"]),
                    "p99": f"{fmt_ms(b.get('p99_ms'))} → {fmt_ms(a.get('p99_ms'))}",
                    "p99_change": _fmt_change_ms(c["p99_ms"], c["p99_ms_rel"]),
                    "p99_tone": _tone(c["p99_ms"], c["p99_ms_rel"]),
                    "achieved": f"{fmt_rps(b.get('achieved_rps'))} → "
                    f"{fmt_rps(a.get('achieved_rps'))}",
                    "errors": f"{fmt_num(b.get('errors'))} → {fmt_num(a.get('errors'))}",
                }
            )
            chart_rows.append((f"{p['path']} · {s['step']}", b.get("p99_ms"), a.get("p99_ms")))
    stages = [
        {
            "stage": clip(r["stage"], 60),
            "title": stage_title(r["stage"]),
            "color": charts.stage_color(r["stage"]),
            "before": fmt_ms(r["before_ms"]),
            "after": fmt_ms(r["after_ms"]),
            "change": _fmt_change_ms(r["change_ms"], r["change_rel"]),
            "tone": _tone(r["change_ms"], r["change_rel"]),
        }
        for r in result["stages"]
    ]
    verdict = {}
    for side in ("before", "after"):
        v = result["verdict"][side]
        verdict[side] = {
            "stage": clip(v["bottleneck"], 60) or "unknown",
            "title": headline(v["bottleneck"]),
            "targets": _targets_word(v["targets_met"]),
            "summary": clip(v["summary"], 600),
            "confidence": clip(v["confidence"], 20),
        }
    has_chart = any(b is not None or a is not None for _, b, a in chart_rows)
    return {
        "verdict": verdict,
        "bottleneck_changed": result["verdict"]["bottleneck_changed"],
        "rows": rows,
        "stages": stages,
        "chart": Markup(charts.compare_chart(chart_rows[:60], "p99")) if has_chart else None,
        "runs": {
            side: {
                "started_at": clip(info["started_at"], 60),
                "command": clip(info["command"], 4000),
            }
            for side, info in result["runs"].items()
        },
    }


def render_compare(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """The before/after page for two report.json dicts."""
    view = build_compare_view(compare_reports(before, after))
    return environment().get_template("compare.html.j2").render(view=view)
