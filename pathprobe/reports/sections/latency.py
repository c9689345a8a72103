"""Latency and steps: the per-step table (knee and target marks), errors, and the charts of
latency against rate, latency distributions, latency over time and latency by payload size."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup

from pathprobe.analysis.knee import ACHIEVED_FRACTION, find_knee
from pathprobe.reports import charts
from pathprobe.reports.fields import (
    clip,
    fmt_bytes,
    fmt_ms,
    fmt_num,
    fmt_pct,
    fmt_rps,
)
from pathprobe.reports.model import Step, Verdict
from pathprobe.reports.sections.common import path_names, path_steps

#: (series name, payload-size bin midpoints in bytes, p50 ms, p99 ms)
PayloadSeries = tuple[str, list[float], list[float | None], list[float | None]]


def knee_rate(steps: Sequence[Step]) -> float | None:
    """The knee by the analysis rule (:func:`pathprobe.analysis.knee.find_knee`, the one the
    verdict uses) over the steps' numbers as this renderer reads them: a rate, achieved rate or
    p99 that is not a finite number counts as missing (steps without an offered rate are
    closed-loop and left out), so a hand-edited report cannot make the rule raise."""
    return find_knee(
        [
            {
                "offered_rps": step.offered_rps,
                "achieved_rps": step.achieved_rps,
                "latency_ms": {"p99": step.latency.p99},
            }
            for step in steps
            if step.offered_rps is not None
        ]
    )


def latency_view(report: Mapping[str, Any], targets: Mapping[str, Any]) -> dict[str, Any]:
    """Per path and step: the latency table and errors, and the four charts. ``targets`` is
    :func:`.verdict.targets_view`'s result (pass/fail per rate of the judged path, the p99 line)."""
    paths = path_names(report)
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    series: list[charts.RateSeries] = []
    hists: list[tuple[str, list[charts.Histogram]]] = []
    timelines: list[charts.Timeline] = []
    payload_series: list[PayloadSeries] = []
    payload_rows: list[dict[str, Any]] = []
    all_offered = all(s.offered_rps is not None for p in paths for s in path_steps(report, p))
    knees = Verdict.from_json(report.get("verdict")).knee
    for path in paths:
        steps = path_steps(report, path)
        # The verdict's own knee when it names one for this path, else the same rule here.
        knee = knees[path] if path in knees else knee_rate(steps)
        passed = _passed_by_rate(path, targets)
        rows.extend(_step_row(path, step, knee, passed) for step in steps)
        errors.extend(e for step in steps if (e := _error_row(path, step)) is not None)
        rates = _rate_series(path, steps, all_offered, knee)
        if rates.rates:
            series.append(rates)
        path_hists = [h for step in steps if (h := _histogram(step)) is not None]
        if path_hists:
            hists.append((path, path_hists))
        tl = _timeline(path, steps)
        if tl.t_s:
            timelines.append(tl)
        bins, payload = _payload(path, steps)
        payload_rows.extend(bins)
        if payload is not None:
            payload_series.append(payload)
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


def _passed_by_rate(path: str, targets: Mapping[str, Any]) -> Mapping[float, Any]:
    """{offered rate: (passed, reasons)} of the targets, for the judged path only."""
    return targets["passed_by_rate"] if path == targets.get("judged_on") else {}


def _step_row(
    path: str,
    step: Step,
    knee: float | None,
    passed_by_rate: Mapping[float, Any],
) -> dict[str, Any]:
    lat = step.latency
    offered, achieved = step.offered_rps, step.achieved_rps
    requests, n_err = step.requests, step.errors
    passed = None
    if offered is not None:
        passed = passed_by_rate.get(offered, (None, []))[0]
    return {
        "path": clip(path, 60),
        "step": step.label,
        "offered": fmt_rps(offered),
        "achieved": fmt_rps(achieved),
        "short": achieved is not None
        and offered is not None
        and achieved < ACHIEVED_FRACTION * offered,
        "requests": fmt_num(requests),
        "p50": fmt_ms(lat.p50),
        "p90": fmt_ms(lat.p90),
        "p99": fmt_ms(lat.p99),
        "p999": fmt_ms(lat.p999),
        "max": fmt_ms(lat.max),
        "svc_p99": fmt_ms(step.service.p99),
        "errors": fmt_num(n_err),
        "error_rate": fmt_pct(n_err / requests) if n_err is not None and requests else "—",
        "passed": passed,
        "knee": offered is not None and offered == knee,
    }


def _error_row(path: str, step: Step) -> dict[str, Any] | None:
    """The step's errors by kind and its status codes, or None when every answer was a 2xx."""
    n_err = step.errors
    kinds = step.errors_by_kind
    codes = step.status_codes
    if not ((n_err or kinds) or any(not c.startswith("2") for c, _ in codes)):
        return None
    return {
        "path": clip(path, 60),
        "step": step.label,
        "errors": fmt_num(n_err),
        "kinds": ", ".join(f"{clip(k, 40)}: {fmt_num(n)}" for k, n in kinds.items()),
        "codes": ", ".join(f"{clip(c, 20)}: {fmt_num(n)}" for c, n in codes[:20]),
    }


def _rate_series(
    path: str, steps: Sequence[Step], all_offered: bool, knee: float | None
) -> charts.RateSeries:
    """p50 and p99 against the offered rate (the achieved one when some step has no offered
    rate: closed loop)."""
    rates: list[float] = []
    p50s: list[float | None] = []
    p99s: list[float | None] = []
    for step in steps:
        x = step.offered_rps if all_offered else step.achieved_rps
        if x is not None:
            rates.append(x)
            p50s.append(step.latency.p50)
            p99s.append(step.latency.p99)
    return charts.RateSeries(path, rates, p50s, p99s, knee)


def _histogram(step: Step) -> charts.Histogram | None:
    hist = step.histogram
    if hist is None:
        return None
    return charts.Histogram(step.label, list(hist.edges_ms), list(hist.counts))


def _timeline(path: str, steps: Sequence[Step]) -> charts.Timeline:
    """The path's per-second p50/p99 and errors, its steps laid end to end on one time axis."""
    tl = charts.Timeline(name=path)
    offset_s = 0.0
    for step in steps:
        points = step.timeline
        if not points:
            continue
        tl.step_starts.append((offset_s, step.label))
        last_t = 0.0
        for p in points:
            t, p50, p99 = p.t_s, p.p50_ms, p.p99_ms
            if t is None:
                continue
            last_t = max(last_t, t)
            if p50 is not None and p99 is not None:
                tl.t_s.append(offset_s + t)
                tl.p50_ms.append(p50)
                tl.p99_ms.append(p99)
            e = p.errors
            if e:
                tl.error_t_s.append(offset_s + t)
                tl.error_counts.append(e)
        offset_s += max(step.duration_s or 0.0, last_t + 1.0)
    return tl


def _payload(path: str, steps: Sequence[Step]) -> tuple[list[dict[str, Any]], PayloadSeries | None]:
    """Latency by payload size at the busiest step that binned by size (the effect shows most
    under load): table rows, and a chart series when two or more bins have a size range."""
    for step in reversed(steps):
        bins = step.by_payload_size
        if not bins:
            continue
        rows = []
        mids: list[float] = []
        b50: list[float | None] = []
        b99: list[float | None] = []
        for b in bins:
            lo, hi = b.bytes_min, b.bytes_max
            rows.append(
                {
                    "path": clip(path, 60),
                    "step": step.label,
                    "range": f"{fmt_bytes(lo)} – {fmt_bytes(hi)}",
                    "count": fmt_num(b.count),
                    "p50": fmt_ms(b.p50_ms),
                    "p99": fmt_ms(b.p99_ms),
                }
            )
            if lo is not None and hi is not None and lo + hi > 0:
                mids.append(math.sqrt(max(lo, 1.0) * max(hi, 1.0)))
                b50.append(b.p50_ms)
                b99.append(b.p99_ms)
        series = (f"{path} @ {step.label}", mids, b50, b99) if len(mids) >= 2 else None
        return rows, series
    return [], None
