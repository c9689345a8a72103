"""Render a report.json dict (schema ``pathprobe.report/v1``) into one self-contained HTML page.

Contract:
* :func:`render_html` needs nothing but the dict — it works on a report.json read from disk weeks
  after the run, without the run, the tool's config or the network.
* Every field beyond the §5 contract is optional: a missing field, a probe section that is empty or
  ``available: false``, or a value of the wrong type degrades to a "not observed" note, never to an
  exception.
* All text from the report is untrusted (a hostile server chooses status lines, header values,
  replica names, stack frames, URLs): the Jinja environment autoescapes, data for scripts goes in
  only through ``|tojson`` (which escapes ``<``, ``>``, ``&`` and ``'``), chart SVG comes from
  matplotlib's escaping writer, and long strings are clipped for display.
* The page makes no network request: CSS, JS and SVG are inlined, no fonts or images are linked.

The work is split in two: ``build_view`` turns the loosely-typed report into plain display data
(numbers formatted, tables as rows, charts as SVG strings), and the templates only lay it out.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jinja2
from markupsafe import Markup

from pathprobe.model.stages import STAGES as STAGE_TABLE
from pathprobe.reports import charts

SCHEMA = "pathprobe.report/v1"
# Display caps: keep the HTML small and a hostile megabyte-long header from flooding the page.
TEXT_MAX_CHARS = 300
LONG_TEXT_MAX_CHARS = 4000
FLAME_MAX_STACKS = 2000
FLAME_MAX_DEPTH = 96
FLAME_MIN_FRACTION = 1 / 5000  # narrower than 0.2 px at 1000 px: not drawn
FRAME_MAX_CHARS = 200
TOP_STACKS = 12
EVIDENCE_MAX = 6
_PCT_KEYS = ("p50", "p90", "p99", "p99.9", "max")

# The verdict's vocabulary (design.md §2) in plain words, with the typical fix.
STAGES: dict[str, tuple[str, str]] = {s.name: (s.title, s.fix) for s in STAGE_TABLE}


# ---------------------------------------------------------------------------------------------
# Defensive access: the report is data from disk, possibly from another version or hand-edited.


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
    text = fmt_ms(row.get("explains_ms"))
    failures = num(row.get("failures_explained"))
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


def not_observed(section: Any, what: str) -> str | None:
    """None when a probe section holds data, else "Not observed: <reason> — <how to enable>"."""
    sec = as_map(section)
    if sec.get("available") is False:
        reason = clip(sec.get("reason") or "the probe was unavailable", 400)
        how = clip(sec.get("how_to_enable") or "", 400)
        return f"Not observed: {reason}" + (f" — {how}" if how else "")
    if not sec or not as_list(sec.get("windows")):
        return f"Not observed: the report holds no {what} data."
    return None


# ---------------------------------------------------------------------------------------------
# Sections


def _path_names(report: Mapping[str, Any]) -> list[str]:
    return [str(p) for p in as_map(report.get("paths"))]


def _steps(report: Mapping[str, Any], path: str) -> list[Mapping[str, Any]]:
    return [as_map(s) for s in as_list(get(report, "paths", path, "steps"))]


def _step_label(step: Mapping[str, Any], index: int) -> str:
    offered = num(step.get("offered_rps"))
    if offered is not None:
        return f"{offered:g} rps"
    conc = num(step.get("concurrency"))
    return f"concurrency {conc:g}" if conc is not None else f"step {index + 1}"


def _window_label(report: Mapping[str, Any], window: Mapping[str, Any]) -> tuple[str, str]:
    """(path, step label) of a probe window; ``step`` is an index into the path's steps when it
    resolves to one, else shown as it is."""
    path = clip(window.get("path"), 60)
    step = window.get("step")
    steps = _steps(report, str(window.get("path")))
    if isinstance(step, int) and not isinstance(step, bool) and 0 <= step < len(steps):
        return path, _step_label(steps[step], step)
    return path, clip(step, 40)


def _step_of(report: Mapping[str, Any], window: Mapping[str, Any]) -> Mapping[str, Any]:
    """The path step a probe window measured (``step`` is an index), or an empty mapping."""
    step = window.get("step")
    steps = _steps(report, str(window.get("path")))
    if isinstance(step, int) and not isinstance(step, bool) and 0 <= step < len(steps):
        return steps[step]
    return {}


def find_knee(steps: Sequence[Mapping[str, Any]]) -> float | None:
    """The first offered rate where achieved < 0.95 × offered or p99 exceeds 3× the p99 of the
    lowest step (design.md §4.2); None when no step qualifies or rates are unknown."""
    first_p99: float | None = None
    for step in steps:
        offered = num(step.get("offered_rps"))
        achieved = num(step.get("achieved_rps"))
        p99 = num(get(step, "latency_ms", "p99"))
        if offered is None:
            continue
        if achieved is not None and offered > 0 and achieved < 0.95 * offered:
            return offered
        if p99 is not None:
            if first_p99 is None:
                first_p99 = p99
            elif first_p99 > 0 and p99 > 3 * first_p99:
                return offered
    return None


def _targets_view(report: Mapping[str, Any]) -> dict[str, Any]:
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
        judged_on = _path_names(report)[-1]
    passed_by_rate = {}
    for s in as_list(targets.get("steps")):
        rate = num(get(s, "offered_rps"))
        if rate is not None:
            passed_by_rate[rate] = (
                get(s, "passed"),
                [clip(r, 200) for r in as_list(get(s, "reasons"))],
            )
    strip = []
    for i, step in enumerate(_steps(report, str(judged_on)) if judged_on is not None else []):
        rate = num(step.get("offered_rps"))
        passed, reasons = passed_by_rate.get(rate, (None, [])) if rate is not None else (None, [])
        strip.append(
            {
                "label": _step_label(step, i),
                "p99": fmt_ms(get(step, "latency_ms", "p99")),
                "achieved": fmt_rps(step.get("achieved_rps")),
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


def _verdict_view(report: Mapping[str, Any]) -> dict[str, Any]:
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


def _attribution_view(report: Mapping[str, Any]) -> dict[str, Any]:
    attribution = as_map(get(report, "verdict", "attribution"))
    bars: list[tuple[str, Mapping[str, float]]] = []
    stages: list[str] = []
    columns: list[str] = []
    # (stage, path) -> (median ms, tail ms): one column per path keeps the table narrow.
    values: dict[tuple[str, str], list[float | None]] = {}
    for path, entry in attribution.items():
        e = as_map(entry)
        # The tail is stored under its percentile's own key ("p99", or "p90" on short runs).
        label_raw = e.get("percentile_label")
        tail_key = label_raw if isinstance(label_raw, str) and label_raw in e else "p99"
        label = clip(tail_key, 12)
        rate = num(e.get("offered_rps"))
        where = f"{clip(path, 40)} @ {rate:g} rps" if rate is not None else clip(path, 40)
        shown = False
        for idx, (key, name) in enumerate((("p50", "median"), (tail_key, f"tail ({label})"))):
            parts = {str(s): n for s, v in as_map(e.get(key)).items() if (n := num(v)) is not None}
            if not parts:
                continue
            shown = True
            bars.append((f"{where} · {name}", parts))
            for s, n in parts.items():
                if s not in stages:
                    stages.append(s)
                values.setdefault((s, str(path)), [None, None])[idx] = n
        if shown:
            columns.append(str(path))
    table = [
        {
            "stage": clip(s, 60),
            "color": charts.stage_color(s),
            "cells": [
                f"{fmt_ms(values.get((s, c), [None, None])[0])} · "
                f"{fmt_ms(values.get((s, c), [None, None])[1])}"
                for c in columns
            ],
        }
        for s in stages
    ]
    ledger = _ledger_row(attribution, columns)
    columns = [clip(c, 40) for c in columns]

    deltas = []
    for d in as_list(get(report, "verdict", "hop_deltas")):
        dm = as_map(d)
        deltas.append(
            {
                "hop": clip(dm.get("hop"), 60),
                "from": clip(dm.get("from"), 60),
                "to": clip(dm.get("to"), 60),
                "p50": fmt_ms(dm.get("p50_ms")),
                "p50_ci": _ci(dm.get("p50_ci_ms")),
                "tail": fmt_ms(dm.get("tail_ms")),
                "tail_ci": _ci(dm.get("tail_ci_ms")),
                "tail_label": clip(dm.get("tail_label") or "p99", 12),
                "significant": _ci_excludes_zero(dm.get("tail_ci_ms")),
            }
        )

    replicas = []
    hop_headers = []
    for path in _path_names(report):
        for i, step in enumerate(_steps(report, path)):
            reps = as_map(step.get("by_replica"))
            total = sum(num(get(r, "count")) or 0 for r in reps.values())
            for name, r in reps.items():
                count = num(get(r, "count"))
                replicas.append(
                    {
                        "path": clip(path, 60),
                        "step": _step_label(step, i),
                        "replica": clip(name, 120),
                        "count": fmt_num(count),
                        "share": fmt_pct(count / total) if count is not None and total else "—",
                        "p50": fmt_ms(get(r, "p50_ms")),
                        "p99": fmt_ms(get(r, "p99_ms")),
                    }
                )
            for header, metrics in as_map(step.get("hop_headers")).items():
                for metric, stats in as_map(metrics).items():
                    # Only {header: {metric: {p50: …}}}; counters beside them are not timings.
                    if not isinstance(stats, Mapping):
                        continue
                    st = stats
                    hop_headers.append(
                        {
                            "path": clip(path, 60),
                            "step": _step_label(step, i),
                            "header": clip(header, 80),
                            "metric": clip(metric, 80),
                            "p50": fmt_ms(st.get("p50")),
                            "p90": fmt_ms(st.get("p90")),
                            "p99": fmt_ms(st.get("p99")),
                            "mean": fmt_ms(st.get("mean")),
                            "count": fmt_num(st.get("count")),
                        }
                    )
    return {
        "chart": Markup(charts.attribution_chart(bars)) if bars else None,
        "columns": columns,
        "table": table,
        "ledger": ledger,
        "deltas": deltas,
        "replicas": replicas,
        "hop_headers": hop_headers,
    }


def _ledger_row(attribution: Mapping[str, Any], columns: Sequence[str]) -> list[str] | None:
    """Per path, "sum of parts / measured" for the median and tail sets (None when no path has
    a ledger: reports from before it existed)."""
    cells: list[str] = []
    found = False
    for path in columns:
        entry = as_map(attribution.get(path))
        ledger = as_map(entry.get("ledger"))
        label = entry.get("percentile_label")
        halves = []
        for key in ("p50", label if isinstance(label, str) else "p99"):
            part = as_map(ledger.get(key))
            found = found or bool(part)
            halves.append(f"{fmt_ms(part.get('sum_ms'))} / {fmt_ms(part.get('measured_ms'))}")
        cells.append(" · ".join(halves))
    return cells if found else None


def _ci(value: Any) -> str:
    lo, hi = num(get(value, 0)), num(get(value, 1))
    if lo is None or hi is None:
        return ""
    return f"[{fmt_ms(lo)}, {fmt_ms(hi)}]"


def _ci_excludes_zero(value: Any) -> bool:
    lo, hi = num(get(value, 0)), num(get(value, 1))
    return lo is not None and hi is not None and (lo > 0 or hi < 0)


def _latency_view(report: Mapping[str, Any], targets: Mapping[str, Any]) -> dict[str, Any]:
    paths = _path_names(report)
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    series: list[charts.RateSeries] = []
    hists: list[tuple[str, list[charts.Histogram]]] = []
    timelines: list[charts.Timeline] = []
    payload_series: list[tuple[str, list[float], list[float | None], list[float | None]]] = []
    payload_rows: list[dict[str, Any]] = []
    all_offered = all(
        num(s.get("offered_rps")) is not None for p in paths for s in _steps(report, p)
    )
    judged_on = targets.get("judged_on")
    knees = as_map(get(report, "verdict", "knee"))
    for path in paths:
        steps = _steps(report, path)
        # The verdict's own knee when it names one for this path, else the §4.2 rule here.
        knee = num(knees[path]) if path in knees else find_knee(steps)
        rates: list[float] = []
        p50s: list[float | None] = []
        p99s: list[float | None] = []
        path_hists: list[charts.Histogram] = []
        tl = charts.Timeline(name=path)
        offset_s = 0.0
        for i, step in enumerate(steps):
            lat = as_map(step.get("latency_ms"))
            svc = as_map(step.get("service_ms"))
            offered = num(step.get("offered_rps"))
            achieved = num(step.get("achieved_rps"))
            requests = num(step.get("requests"))
            n_err = num(step.get("errors"))
            passed = None
            if path == judged_on and offered is not None:
                passed = targets["passed_by_rate"].get(offered, (None, []))[0]
            rows.append(
                {
                    "path": clip(path, 60),
                    "step": _step_label(step, i),
                    "offered": fmt_rps(offered),
                    "achieved": fmt_rps(achieved),
                    "short": achieved is not None
                    and offered is not None
                    and achieved < 0.95 * offered,
                    "requests": fmt_num(requests),
                    "p50": fmt_ms(lat.get("p50")),
                    "p90": fmt_ms(lat.get("p90")),
                    "p99": fmt_ms(lat.get("p99")),
                    "p999": fmt_ms(lat.get("p99.9")),
                    "max": fmt_ms(lat.get("max")),
                    "svc_p99": fmt_ms(svc.get("p99")),
                    "errors": fmt_num(n_err),
                    "error_rate": fmt_pct(n_err / requests)
                    if n_err is not None and requests
                    else "—",
                    "passed": passed,
                    "knee": offered is not None and offered == knee,
                }
            )
            kinds = {
                str(k): n for k, v in as_map(step.get("errors_by_kind")).items() if (n := num(v))
            }
            codes = as_map(step.get("status_codes"))
            if (n_err or kinds) or any(not str(c).startswith("2") for c in codes):
                errors.append(
                    {
                        "path": clip(path, 60),
                        "step": _step_label(step, i),
                        "errors": fmt_num(n_err),
                        "kinds": ", ".join(
                            f"{clip(k, 40)}: {fmt_num(n)}" for k, n in kinds.items()
                        ),
                        "codes": ", ".join(
                            f"{clip(c, 20)}: {fmt_num(num(n))}" for c, n in list(codes.items())[:20]
                        ),
                    }
                )
            x = offered if all_offered else achieved
            if x is not None:
                rates.append(x)
                p50s.append(num(lat.get("p50")))
                p99s.append(num(lat.get("p99")))
            hist = as_map(step.get("histogram"))
            edges, counts = as_list(hist.get("edges_ms")), as_list(hist.get("counts"))
            edge_nums = [num(e) for e in edges]
            count_nums = [num(c) for c in counts]
            if edges and None not in edge_nums and None not in count_nums:
                path_hists.append(
                    charts.Histogram(
                        _step_label(step, i),
                        [e for e in edge_nums if e is not None],
                        [c for c in count_nums if c is not None],
                    )
                )
            points = [as_map(p) for p in as_list(step.get("timeline"))]
            if points:
                tl.step_starts.append((offset_s, _step_label(step, i)))
                last_t = 0.0
                for p in points:
                    t = num(p.get("t_s"))
                    p50, p99 = num(p.get("p50_ms")), num(p.get("p99_ms"))
                    if t is None:
                        continue
                    last_t = max(last_t, t)
                    if p50 is not None and p99 is not None:
                        tl.t_s.append(offset_s + t)
                        tl.p50_ms.append(p50)
                        tl.p99_ms.append(p99)
                    e = num(p.get("errors"))
                    if e:
                        tl.error_t_s.append(offset_s + t)
                        tl.error_counts.append(e)
                offset_s += max(num(step.get("duration_s")) or 0.0, last_t + 1.0)
        if rates:
            series.append(charts.RateSeries(path, rates, p50s, p99s, knee))
        if path_hists:
            hists.append((path, path_hists))
        if tl.t_s:
            timelines.append(tl)
        # Payload size: the busiest step that binned by size (the effect shows most under load).
        for i, step in reversed(list(enumerate(steps))):
            bins = [as_map(b) for b in as_list(step.get("by_payload_size"))]
            if not bins:
                continue
            mids, b50, b99 = [], [], []
            for b in bins:
                lo, hi = num(b.get("bytes_min")), num(b.get("bytes_max"))
                payload_rows.append(
                    {
                        "path": clip(path, 60),
                        "step": _step_label(step, i),
                        "range": f"{fmt_bytes(lo)} – {fmt_bytes(hi)}",
                        "count": fmt_num(b.get("count")),
                        "p50": fmt_ms(b.get("p50_ms")),
                        "p99": fmt_ms(b.get("p99_ms")),
                    }
                )
                if lo is not None and hi is not None and lo + hi > 0:
                    mids.append(math.sqrt(max(lo, 1.0) * max(hi, 1.0)))
                    b50.append(num(b.get("p50_ms")))
                    b99.append(num(b.get("p99_ms")))
            if len(mids) >= 2:
                payload_series.append((f"{path} @ {_step_label(step, i)}", mids, b50, b99))
            break
    x_label = "offered rate (requests/s)" if all_offered else "achieved rate (requests/s)"
    return {
        "rows": rows,
        "errors": errors,
        "rate_chart": Markup(charts.rate_chart(series, targets.get("p99_ms"), x_label))
        if any(len(s.rates) >= 2 for s in series)
        else None,
        "dist_chart": Markup(charts.distribution_chart(hists)) if hists else None,
        "timeline_chart": Markup(charts.timeline_chart(timelines)) if timelines else None,
        "payload_chart": Markup(charts.payload_chart(payload_series)) if payload_series else None,
        "payload_rows": payload_rows,
    }


def _concat_timelines(
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
        path, step = _window_label(report, w)
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


def _client_view(report: Mapping[str, Any]) -> dict[str, Any]:
    client = as_map(get(report, "probes", "client"))
    missing = not_observed(client, "client")
    floor = as_map(get(client, "calibration", "floor_ms"))
    windows = [as_map(w) for w in as_list(client.get("windows"))]
    rows = []
    for w in windows:
        path, step = _window_label(report, w)
        cpu_max = num(get(w, "cpu_percent", "max"))
        slip = as_map(w.get("slip_ms")) or _step_of(report, w).get("slip_ms")
        rows.append(
            {
                "path": path,
                "step": step,
                "cpu_mean": fmt_pct(get(w, "cpu_percent", "mean"), True),
                "cpu_p90": fmt_pct(get(w, "cpu_percent", "p90"), True),
                "cpu_max": fmt_pct(cpu_max, True),
                "cpu_hot": (cpu_max or 0) >= 90,
                "lag_p50": fmt_ms(get(w, "loop_lag_ms", "p50")),
                "lag_p99": fmt_ms(get(w, "loop_lag_ms", "p99")),
                "lag_max": fmt_ms(get(w, "loop_lag_ms", "max")),
                "slip_p50": fmt_ms(get(slip, "p50")),
                "slip_p99": fmt_ms(get(slip, "p99")),
                "slip_max": fmt_ms(get(slip, "max")),
                "busiest": fmt_pct(get(w, "busiest_process_cpu_percent", "max"), True),
            }
        )
    panels = []
    for key, title, unit in (
        ("cpu_percent", "client process CPU (% of one core)", "%"),
        ("loop_lag_ms", "event-loop lag", "ms"),
        ("slip_ms", "send-schedule slip", "ms"),
    ):
        lines, seps = _concat_timelines(report, windows, key)
        if lines:
            panels.append(charts.Panel(title, unit, lines, separators=seps))
    return {
        "missing": missing if not (rows or floor) else None,
        "floor": {k: fmt_ms(v) for k, v in floor.items() if num(v) is not None},
        "rows": rows,
        "generators": _generators_rows(report),
        "chart": Markup(charts.series_chart(panels)) if panels else None,
    }


def _generators_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """run.load_generators (one row per load worker on Ray): where it ran, what it sent."""
    rows = []
    for g in (as_map(x) for x in as_list(get(report, "run", "load_generators"))[:256]):
        lost = as_map(g.get("lost"))
        offset, spread = num(g.get("clock_offset_ms")), num(g.get("clock_uncertainty_ms"))
        where = f"{clip(lost.get('path'), 40)}, step {fmt_num((num(lost.get('step')) or 0) + 1)}"
        rows.append(
            {
                "worker": fmt_num(g.get("worker")),
                "node": clip(g.get("address"), 60),
                "node_id": clip(g.get("node"), 16),
                "requests": fmt_num(g.get("requests")),
                "cpu": fmt_pct(g.get("cpu_percent"), True),
                "cpu_hot": (num(g.get("cpu_percent")) or 0) >= 90,
                "clock": "—" if offset is None else f"{offset:+.3f} ± {spread or 0:.3f} ms",
                "lost": f"{where}: {fmt_num(lost.get('unsent_requests'))} not sent" if lost else "",
            }
        )
    return rows


def _network_view(report: Mapping[str, Any]) -> dict[str, Any]:
    net = as_map(get(report, "probes", "network"))
    rows: list[dict[str, Any]] = []
    for w in (as_map(x) for x in as_list(net.get("windows"))):
        path, step = _window_label(report, w)
        if w.get("available") is False:
            rows.append({"path": path, "step": step, "unavailable": clip(w.get("reason"), 300)})
            continue
        rows.append(
            {
                "path": path,
                "step": step,
                "unavailable": None,
                "rtt_p50": fmt_ms(get(w, "rtt_ms", "p50")),
                "rtt_p99": fmt_ms(get(w, "rtt_ms", "p99")),
                "retrans": fmt_num(w.get("retransmissions")),
                "retrans_rate": fmt_pct(w.get("retransmission_rate")),
                "stalls": _stalls_text(as_map(w.get("retrans_stalls"))),
                "bad_stalls": (num(as_map(w.get("retrans_stalls")).get("stalled")) or 0) > 0,
                "resets": fmt_num(w.get("resets")),
                "zero_windows": fmt_num(w.get("zero_windows")),
                "to_server": fmt_bytes(w.get("bytes_to_server")),
                "from_server": fmt_bytes(w.get("bytes_from_server")),
                "drops": fmt_num(w.get("capture_drops")),
                "ttfb_p50": fmt_ms(get(w, "wire_ttfb_ms", "p50")),
                "ttfb_p99": fmt_ms(get(w, "wire_ttfb_ms", "p99")),
                "bad_retrans": (num(w.get("retransmissions")) or 0) > 0,
                "bad_resets": (num(w.get("resets")) or 0) > 0,
                "bad_drops": (num(w.get("capture_drops")) or 0) > 0,
            }
        )
    # Idle RTT baseline: one distribution, or one per path ({path: {p50: …}}).
    idle_raw = as_map(net.get("idle_rtt_ms"))
    per_path = (
        idle_raw if all(isinstance(v, Mapping) for v in idle_raw.values()) else {"": idle_raw}
    )
    idle = []
    for name, dist in per_path.items():
        parts = [
            f"{k} {fmt_ms(v)}"
            for k, v in as_map(dist).items()
            if k in _PCT_KEYS and num(v) is not None
        ]
        if parts:
            idle.append({"path": clip(name, 60), "text": " · ".join(parts)})
    return {"missing": not_observed(net, "network"), "rows": rows, "idle": idle}


def _stalls_text(stalls: Mapping[str, Any]) -> str:
    """ "3 of 500, up to 412 ms": exchanges a lost segment held up (tcpflows), or "—"."""
    stalled, total = num(stalls.get("stalled")), num(stalls.get("exchanges"))
    if stalled is None or total is None:
        return "—"
    if not stalled:
        return f"0 of {fmt_num(total)}"
    longest = [num(v) for v in stalls.get("stalls_ms") or []]
    peak = max((v for v in longest if v is not None), default=None)
    tail = f", up to {fmt_ms(peak)}" if peak is not None else ""
    return f"{fmt_num(stalled)} of {fmt_num(total)}{tail}"


def folded_to_tree(
    folded: Mapping[str, Any],
    max_stacks: int = FLAME_MAX_STACKS,
    min_fraction: float = FLAME_MIN_FRACTION,
) -> dict[str, Any]:
    """d3-flame-graph's input (``{name, value, children}``, values inclusive) from folded stacks
    ``{"a;b;c": samples}``. Kept small on purpose: only the ``max_stacks`` heaviest stacks (the
    rest become one "[other stacks]" node), and frames lighter than ``min_fraction`` of all
    samples are left out (their time stays in the parent's width) — they would be narrower than
    a pixel, and deep, distinct stacks would otherwise make the page megabytes long."""
    items = sorted(
        ((str(k), n) for k, v in folded.items() if (n := num(v)) and n > 0),
        key=lambda kv: -kv[1],
    )
    kept = items[:max_stacks]
    rest = sum(n for _, n in items[max_stacks:])
    root: dict[str, Any] = {"name": "all", "value": 0.0, "children": {}}
    names: dict[str, str] = {}  # frame → display name; frames repeat across stacks
    for stack, n in kept:
        node = root
        node["value"] += n
        for frame in stack.split(";")[:FLAME_MAX_DEPTH]:
            name = names.get(frame)
            if name is None:
                name = names[frame] = clip(frame, FRAME_MAX_CHARS)
            children = node["children"]
            child = children.get(name)
            if child is None:
                child = children[name] = {"name": name, "value": 0.0, "children": {}}
            node = child
            node["value"] += n
    if rest:
        root["value"] += rest
        root["children"]["[other stacks]"] = {
            "name": "[other stacks]",
            "value": rest,
            "children": {},
        }
    threshold = root["value"] * min_fraction

    def finish(node: dict[str, Any]) -> dict[str, Any]:
        value = node["value"]
        out: dict[str, Any] = {
            "name": node["name"],
            "value": int(value) if value == int(value) else value,
        }
        kids = [finish(c) for c in node["children"].values() if c["value"] >= threshold]
        if kids:
            out["children"] = kids
        return out

    return finish(root)


def _stack_text(stack: str, frames_shown: int = 6) -> str:
    """Leaf first, the callers that matter most next; the root end of a deep stack is elided."""
    frames = [clip(f, 120) for f in reversed(stack.split(";"))]
    text = " ← ".join(frames[:frames_shown])
    if len(frames) > frames_shown:
        text += f" ← … ({len(frames) - frames_shown} more frames)"
    return text


def _top_stacks(
    folded: Mapping[str, float], total: float
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    stacks = sorted(folded.items(), key=lambda kv: -kv[1])[:TOP_STACKS]
    top = [
        {
            "share": fmt_pct(n / total) if total else "—",
            "samples": fmt_num(n),
            "leaf": clip(stack.split(";")[-1], 160),
            "stack": _stack_text(stack),
        }
        for stack, n in stacks
    ]
    self_samples: dict[str, float] = {}
    for stack, n in folded.items():
        leaf = stack.split(";")[-1]
        self_samples[leaf] = self_samples.get(leaf, 0.0) + n
    leaves = [
        {
            "share": fmt_pct(n / total) if total else "—",
            "samples": fmt_num(n),
            "frame": clip(name, 200),
        }
        for name, n in sorted(self_samples.items(), key=lambda kv: -kv[1])[:TOP_STACKS]
    ]
    return top, leaves


def _server_view(report: Mapping[str, Any]) -> dict[str, Any]:
    server = as_map(get(report, "probes", "server"))
    windows = [as_map(w) for w in as_list(server.get("windows"))]
    by_path: dict[str, list[Mapping[str, Any]]] = {}
    for w in windows:
        by_path.setdefault(str(w.get("path")), []).append(w)
    flames = []
    share_rows: list[dict[str, Any]] = []
    share_stages: list[str] = []
    worker_rows = []
    deaths = []
    cgroup_rows = []
    oom_lines: list[dict[str, str]] = []
    for path, ws in by_path.items():
        folded: dict[str, float] = {}
        for w in ws:
            for stack, v in as_map(w.get("folded")).items():
                if (n := num(v)) and n > 0:
                    folded[str(stack)] = folded.get(str(stack), 0.0) + n
        total = sum(folded.values())
        if folded:
            top, leaves = _top_stacks(folded, total)
            flames.append(
                {
                    "path": clip(path, 60),
                    "samples": fmt_num(total),
                    "distinct": fmt_num(len(folded)),
                    "capped": len(folded) > FLAME_MAX_STACKS,
                    "tree": folded_to_tree(folded),
                    "top": top,
                    "leaves": leaves,
                }
            )
        workers: dict[str, dict[str, float]] = {}
        for w in ws:
            plabel, step = _window_label(report, w)
            shares = as_map(w.get("stage_share"))
            if shares:
                for s in shares:
                    if str(s) not in share_stages:
                        share_stages.append(str(s))
                share_rows.append(
                    {
                        "path": plabel,
                        "step": step,
                        "samples": fmt_num(w.get("samples")),
                        "shares": {str(s): num(v) for s, v in shares.items()},
                    }
                )
            for wk in as_list(w.get("workers")):
                pid = clip(get(wk, "pid"), 20)
                agg = workers.setdefault(pid, {})
                for key in ("cpu_percent_mean", "rss_bytes_max", "uss_bytes_max"):
                    v = num(get(wk, key))
                    if v is not None:
                        agg[key] = max(agg.get(key, v), v)
            for d in as_list(w.get("worker_deaths")):
                t = num(get(d, "t_ms"))
                deaths.append(
                    {
                        "path": plabel,
                        "step": step,
                        "pid": clip(get(d, "pid"), 20),
                        "t": fmt_ms(t) if t is not None else "—",
                        "reason": clip(get(d, "reason"), 200),
                    }
                )
            oom_lines.extend(
                {"path": plabel, "step": step, "line": clip(line, 400)}
                for line in as_list(w.get("kernel_oom_lines"))[:20]
            )
            cg = as_map(w.get("cgroup"))
            if cg:
                cgroup_rows.append(
                    {
                        "path": plabel,
                        "step": step,
                        "counters": [
                            {
                                "key": clip(k, 60),
                                "value": fmt_value(str(k), v),
                                "bad": _is_bad_cgroup(str(k), v),
                            }
                            for k, v in list(cg.items())[:30]
                        ],
                    }
                )
        for pid, agg in workers.items():
            worker_rows.append(
                {
                    "path": clip(path, 60),
                    "pid": pid,
                    "cpu": fmt_pct(agg.get("cpu_percent_mean"), True),
                    "rss": fmt_bytes(agg.get("rss_bytes_max")),
                    "uss": fmt_bytes(agg.get("uss_bytes_max")),
                }
            )
    share_table = [
        {
            "path": r["path"],
            "step": r["step"],
            "samples": r["samples"],
            "cells": [fmt_pct(r["shares"].get(s)) for s in share_stages],
        }
        for r in share_rows
    ]
    panels = []
    cpu_lines, seps = _concat_timelines(report, windows, "cpu_percent_total")
    events = _death_events(report, windows)
    if cpu_lines:
        panels.append(
            charts.Panel(
                "server CPU, all workers (% of one core)",
                "%",
                cpu_lines,
                events=events,
                separators=seps,
            )
        )
    rss_lines, seps = _concat_timelines(report, windows, "rss_bytes_total")
    if rss_lines:
        panels.append(
            charts.Panel(
                "server memory, all workers (RSS)",
                "bytes",
                rss_lines,
                events=events,
                separators=seps,
            )
        )
    count_lines, seps = _concat_timelines(report, windows, "workers")
    if count_lines:
        panels.append(charts.Panel("live worker processes", "", count_lines, separators=seps))
    return {
        "missing": not_observed(server, "server"),
        "flames": flames,
        "share_stages": [
            {"name": clip(s, 40), "color": charts.stage_color(s)} for s in share_stages
        ],
        "share_rows": share_table,
        "workers": worker_rows,
        "deaths": deaths,
        "cgroup": cgroup_rows,
        "oom_lines": oom_lines,
        "chart": Markup(charts.series_chart(panels)) if panels else None,
    }


def _is_bad_cgroup(key: str, value: Any) -> bool:
    k = key.lower()
    return ("oom" in k or "failcnt" in k or "throttl" in k) and (num(value) or 0) > 0


def _death_events(
    report: Mapping[str, Any], windows: Sequence[Mapping[str, Any]]
) -> list[tuple[float, str]]:
    """Worker deaths on the time axis of :func:`_concat_timelines` (first path only, which is the
    axis the separators belong to; other paths' deaths are listed in the table)."""
    if not windows:
        return []
    first_path = str(windows[0].get("path"))
    events = []
    offset = 0.0
    for w in windows:
        if str(w.get("path")) != first_path:
            continue
        for d in as_list(w.get("worker_deaths")):
            t = num(get(d, "t_ms"))
            if t is not None:
                events.append((offset + t / 1000.0, f"pid {clip(get(d, 'pid'), 12)} died"))
        last = max((num(get(p, "t_ms")) or 0.0 for p in as_list(w.get("timeline"))), default=0.0)
        offset += last / 1000.0 + 0.5
    return events


def _reproduce_view(report: Mapping[str, Any]) -> dict[str, Any]:
    run = as_map(report.get("run"))
    argv = [clip(a, 400) for a in as_list(run.get("argv"))]
    command = clip(run.get("command"), LONG_TEXT_MAX_CHARS) or " ".join(argv)
    config = run.get("config")
    try:
        config_text = json.dumps(config, indent=2, sort_keys=True, default=str)
    except (TypeError, ValueError):
        config_text = str(config)
    return {
        "command": command,
        "config": clip(config_text, 20 * LONG_TEXT_MAX_CHARS) if config else "",
        "versions": [(clip(k, 60), clip(v, 200)) for k, v in as_map(run.get("versions")).items()],
        "host": [(clip(k, 60), fmt_value(str(k), v)) for k, v in as_map(run.get("host")).items()],
        "started_at": clip(run.get("started_at"), 60),
        "ended_at": clip(run.get("ended_at"), 60),
    }


def build_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the template shows, as display-ready data (see the module docstring)."""
    targets = _targets_view(report)
    paths = [
        {"name": clip(p, 60), "url": clip(get(report, "paths", p, "url"), 400)}
        for p in _path_names(report)
    ]
    notes = [clip(n, 600) for n in as_list(report.get("notes"))[:30]]
    for p in _path_names(report):
        unreachable = get(report, "paths", p, "unreachable")
        if unreachable:
            notes.append(f"path {clip(p, 60)} was not reachable: {clip(unreachable, 400)}")
    schema = report.get("schema")
    return {
        "schema": clip(schema, 60),
        "schema_ok": schema == SCHEMA,
        "verdict": _verdict_view(report),
        "targets": targets,
        "paths": paths,
        "attribution": _attribution_view(report),
        "latency": _latency_view(report, targets),
        "client": _client_view(report),
        "network": _network_view(report),
        "server": _server_view(report),
        "reproduce": _reproduce_view(report),
        "notes": notes,
        "stage_legend": [{"name": s, "color": charts.stage_color(s)} for s in STAGES],
    }


# ---------------------------------------------------------------------------------------------
# Jinja


def _asset(name: str) -> str:
    return (importlib.resources.files("pathprobe.reports") / "assets" / name).read_text("utf-8")


@functools.cache
def environment() -> jinja2.Environment:
    """The report's Jinja environment: package templates, autoescape always on (whatever the
    template's file name), undefined variables are errors, assets available as ``asset(name)``."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pathprobe.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    filters: dict[str, Callable[..., str]] = {
        "ms": fmt_ms,
        "pct": fmt_pct,
        "bytes": fmt_bytes,
        "rps": fmt_rps,
        "clip": clip,
        "n": fmt_num,
    }
    env.filters.update(filters)
    # |tojson: compact, and in the data's own order (sorting 40k flame nodes' keys is wasted work).
    env.policies["json.dumps_kwargs"] = {"sort_keys": False, "separators": (",", ":")}
    # Assets are our own files, inlined verbatim; Markup keeps autoescape from mangling them.
    env.globals["asset"] = lambda name: Markup(_asset(name))
    return env


def render_html(report: Mapping[str, Any]) -> str:
    """The complete, self-contained report page for one report.json dict."""
    view = build_view(report)
    scripts = _flame_scripts() if view["server"]["flames"] else []
    return (
        environment()
        .get_template("report.html.j2")
        .render(view=view, scripts=scripts, script_hashes=[_csp_hash(s) for s in scripts])
    )


def _flame_scripts() -> list[Markup]:
    return [
        Markup(_asset(name))
        for name in (
            "vendor/d3/d3.min.js",
            "vendor/d3-flame-graph/d3-flamegraph.umd.min.js",
            "report.js",
        )
    ]


def _csp_hash(script: str) -> str:
    """The CSP source hash of an inline script's exact text (``'sha256-…'`` without quotes)."""
    return base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
