"""Where the time went: per-path stage split (median and tail) with its ledger, hop deltas with
their confidence intervals, per-replica latency and the hops' own timing headers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup

from pathprobe.reports import charts
from pathprobe.reports.fields import as_list, as_map, clip, fmt_ms, fmt_num, fmt_pct, get, num
from pathprobe.reports.sections.common import path_names, path_steps

#: (stage, path) -> [median ms, tail ms]
_Values = dict[tuple[str, str], list[float | None]]


def attribution_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """verdict.attribution as a stacked-bar chart and a stage × path table (median · tail), the
    ledger row, hop deltas, and the per-step replica and hop-header tables."""
    attribution = as_map(get(report, "verdict", "attribution"))
    bars, stages, columns, values = _stage_split(attribution)
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
    return {
        "chart": Markup(charts.attribution_chart(bars)) if bars else None,
        "columns": [clip(c, 40) for c in columns],
        "table": table,
        "ledger": _ledger_row(attribution, columns),
        "deltas": _delta_rows(report),
        "replicas": _replica_rows(report),
        "hop_headers": _hop_header_rows(report),
    }


def _stage_split(
    attribution: Mapping[str, Any],
) -> tuple[list[tuple[str, Mapping[str, float]]], list[str], list[str], _Values]:
    """(chart bars, stages in first-seen order, paths with a split, values by (stage, path)).
    One column per path keeps the table narrow."""
    bars: list[tuple[str, Mapping[str, float]]] = []
    stages: list[str] = []
    columns: list[str] = []
    values: _Values = {}
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
    return bars, stages, columns, values


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


def _delta_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """verdict.hop_deltas: what each hop adds, median and tail, with bootstrap intervals."""
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
    return deltas


def _ci(value: Any) -> str:
    lo, hi = num(get(value, 0)), num(get(value, 1))
    if lo is None or hi is None:
        return ""
    return f"[{fmt_ms(lo)}, {fmt_ms(hi)}]"


def _ci_excludes_zero(value: Any) -> bool:
    lo, hi = num(get(value, 0)), num(get(value, 1))
    return lo is not None and hi is not None and (lo > 0 or hi < 0)


def _replica_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per path and step, each replica's share of the requests and its latency."""
    replicas = []
    for path in path_names(report):
        for step in path_steps(report, path):
            reps = as_map(step.raw.get("by_replica"))
            total = sum(num(get(r, "count")) or 0 for r in reps.values())
            for name, r in reps.items():
                count = num(get(r, "count"))
                replicas.append(
                    {
                        "path": clip(path, 60),
                        "step": step.label,
                        "replica": clip(name, 120),
                        "count": fmt_num(count),
                        "share": fmt_pct(count / total) if count is not None and total else "—",
                        "p50": fmt_ms(get(r, "p50_ms")),
                        "p99": fmt_ms(get(r, "p99_ms")),
                    }
                )
    return replicas


def _hop_header_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per path and step, the timings the hops reported in their own headers."""
    hop_headers = []
    for path in path_names(report):
        for step in path_steps(report, path):
            for header, metrics in as_map(step.raw.get("hop_headers")).items():
                for metric, stats in as_map(metrics).items():
                    # Only {header: {metric: {p50: …}}}; counters beside them are not timings.
                    if not isinstance(stats, Mapping):
                        continue
                    st = stats
                    hop_headers.append(
                        {
                            "path": clip(path, 60),
                            "step": step.label,
                            "header": clip(header, 80),
                            "metric": clip(metric, 80),
                            "p50": fmt_ms(st.get("p50")),
                            "p90": fmt_ms(st.get("p90")),
                            "p99": fmt_ms(st.get("p99")),
                            "mean": fmt_ms(st.get("mean")),
                            "count": fmt_num(st.get("count")),
                        }
                    )
    return hop_headers
