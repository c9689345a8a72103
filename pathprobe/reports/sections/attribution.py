"""Where the time went: per-path stage split (median and tail) with its ledger, hop deltas with
their confidence intervals, per-replica latency and the hops' own timing headers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup

from pathprobe.reports import charts
from pathprobe.reports.fields import as_map, clip, fmt_ms, fmt_num, fmt_pct, get, num
from pathprobe.reports.model import HopDelta, PathAttribution, Verdict
from pathprobe.reports.sections.common import path_names, path_steps

#: (stage, path) -> [median ms, tail ms]
_Values = dict[tuple[str, str], list[float | None]]


def attribution_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """verdict.attribution as a stacked-bar chart and a stage × path table (median · tail), the
    ledger row, hop deltas, and the per-step replica and hop-header tables."""
    verdict = Verdict.from_json(report.get("verdict"))
    bars, stages, shown, values = _stage_split(verdict.attribution)
    columns = [a.path for a in shown]
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
        "ledger": _ledger_row(shown),
        "deltas": _delta_rows(verdict.hop_deltas),
        "replicas": _replica_rows(report),
        "hop_headers": _hop_header_rows(report),
    }


def _stage_split(
    attribution: Sequence[PathAttribution],
) -> tuple[list[tuple[str, Mapping[str, float]]], list[str], list[PathAttribution], _Values]:
    """(chart bars, stages in first-seen order, paths with a split, values by (stage, path)).
    One column per path keeps the table narrow."""
    bars: list[tuple[str, Mapping[str, float]]] = []
    stages: list[str] = []
    shown: list[PathAttribution] = []
    values: _Values = {}
    for a in attribution:
        rate = a.offered_rps
        where = f"{clip(a.path, 40)} @ {rate:g} rps" if rate is not None else clip(a.path, 40)
        tail_name = f"tail ({clip(a.tail_key, 12)})"
        for idx, (parts, name) in enumerate(((a.median, "median"), (a.tail, tail_name))):
            if not parts:
                continue
            bars.append((f"{where} · {name}", parts))
            for s, n in parts.items():
                if s not in stages:
                    stages.append(s)
                values.setdefault((s, a.path), [None, None])[idx] = n
        if a.median or a.tail:
            shown.append(a)
    return bars, stages, shown, values


def _ledger_row(shown: Sequence[PathAttribution]) -> list[str] | None:
    """Per path, "sum of parts / measured" for the median and tail sets (None when no path has
    a ledger: reports from before it existed)."""
    cells: list[str] = []
    found = False
    for a in shown:
        halves = []
        for half in (a.ledger_median, a.ledger_tail):
            found = found or half is not None
            sum_ms, measured_ms = (half.sum_ms, half.measured_ms) if half else (None, None)
            halves.append(f"{fmt_ms(sum_ms)} / {fmt_ms(measured_ms)}")
        cells.append(" · ".join(halves))
    return cells if found else None


def _delta_rows(hop_deltas: Sequence[HopDelta]) -> list[dict[str, Any]]:
    """verdict.hop_deltas: what each hop adds, median and tail, with bootstrap intervals."""
    return [
        {
            "hop": clip(d.hop, 60),
            "from": clip(d.from_path, 60),
            "to": clip(d.to_path, 60),
            "p50": fmt_ms(d.p50_ms),
            "p50_ci": _ci(d.p50_ci_ms),
            "tail": fmt_ms(d.tail_ms),
            "tail_ci": _ci(d.tail_ci_ms),
            "tail_label": clip(d.tail_label, 12),
            "significant": _excludes_zero(d.tail_ci_ms),
        }
        for d in hop_deltas
    ]


def _excludes_zero(value: tuple[float, float] | None) -> bool:
    return value is not None and (value[0] > 0 or value[1] < 0)


def _ci(value: tuple[float, float] | None) -> str:
    return "" if value is None else f"[{fmt_ms(value[0])}, {fmt_ms(value[1])}]"


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
