"""Charts for the HTML report, drawn by matplotlib and returned as inline SVG strings.

Contract: every function takes plain, already-extracted numbers (never the report dict), returns
one ``<svg …>…</svg>`` string that is safe to place into HTML as it is, and never raises on empty
input (callers check for data first; an empty chart is still valid SVG). Safe because matplotlib's
SVG writer escapes every text it draws (``&``, ``<``, ``>``, quotes), math-text parsing is switched
off (a ``$`` in a hostile replica name must not reach the TeX parser), and labels are clipped.

Why matplotlib and not a JS chart library: the charts read without JavaScript, print, and need no
network; the SVG text uses the page's font through CSS (``svg.fonttype = none``), so no font is
embedded or fetched. Figures are built with :class:`matplotlib.figure.Figure` directly — pyplot's
global figure registry and backend selection are never touched.
"""

from __future__ import annotations

import io
import itertools
import math
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from pathprobe.model.stages import CATEGORY_COLOURS, STAGES

LABEL_MAX_CHARS = 40
TIMELINE_MAX_POINTS = 400
LEGEND_MAX_CHARS = 30

# Colours: the same stage always gets the same colour across charts (and in the HTML legend).
STAGE_COLORS: dict[str, str] = {
    **{s.name: s.colour for s in STAGES if s.ranked},
    **CATEGORY_COLOURS,
}
_EXTRA_COLORS = ["#14b8a6", "#e879f9", "#84cc16", "#f97316", "#64748b", "#a855f7"]
PATH_COLORS = ["#2563eb", "#f59e0b", "#8b5cf6", "#10b981", "#ef4444", "#0ea5e9"]
BEFORE_COLOR = "#94a3b8"
AFTER_COLOR = "#2563eb"
ERROR_COLOR = "#dc2626"

_RC: dict[str, Any] = {
    "svg.fonttype": "none",
    "text.parse_math": False,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#9ca3af",
    "axes.labelcolor": "#374151",
    "axes.grid": True,
    "grid.color": "#e5e7eb",
    "grid.linewidth": 0.6,
    "xtick.color": "#4b5563",
    "ytick.color": "#4b5563",
    "legend.frameon": False,
    "legend.fontsize": 8,
    "path.simplify": True,
}
_SVG_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}
_chart_ids = itertools.count()


def stage_color(stage: str) -> str:
    """A stable colour for a stage or profile category (unknown names hash into a spare palette)."""
    if stage in STAGE_COLORS:
        return STAGE_COLORS[stage]
    return _EXTRA_COLORS[sum(stage.encode()) % len(_EXTRA_COLORS)]


def path_color(index: int) -> str:
    return PATH_COLORS[index % len(PATH_COLORS)]


def clip_label(text: object, max_chars: int = LABEL_MAX_CHARS) -> str:
    """A label fit for a chart: one line, clipped, and never starting with ``_`` (which
    matplotlib treats as "leave out of the legend")."""
    s = re.sub(r"[\x00-\x1f\x7f]", " ", str(text))
    if len(s) > max_chars:
        s = s[: max_chars - 1] + "…"
    if s.startswith("_"):
        s = " " + s
    return s


@dataclass(frozen=True)
class Margins:
    """Fixed margins in inches. Cheaper than matplotlib's constrained layout (which measures
    every text twice and was half the render time) and predictable: legends sit in ``right``."""

    left: float = 0.8
    right: float = 0.2
    top: float = 0.3
    bottom: float = 0.5
    gap: float = 0.6  # between stacked panels


def legend_width_in(labels: Sequence[str]) -> float:
    """Room for a legend to the right of the axes, from its longest label (~0.07 in a char)."""
    longest = max((len(label) for label in labels), default=0)
    return 0.6 + 0.068 * min(longest, LEGEND_MAX_CHARS)


@contextmanager
def _figure(
    width_in: float, height_in: float, nrows: int = 1, margins: Margins | None = None
) -> Iterator[tuple[Figure, list[Axes]]]:
    m = margins or Margins()
    # A distinct hash salt per chart keeps matplotlib's generated ids (clip paths, markers)
    # unique across the many SVGs inlined into one HTML document.
    salt = f"pp{next(_chart_ids)}"
    with matplotlib.rc_context(cast(Any, _RC | {"svg.hashsalt": salt})):
        fig = Figure(figsize=(width_in, height_in))
        axes = fig.subplots(nrows=nrows, ncols=1, squeeze=False)
        panel_in = max((height_in - m.top - m.bottom - m.gap * (nrows - 1)) / nrows, 0.2)
        fig.subplots_adjust(
            left=min(m.left / width_in, 0.6),
            right=max(1 - m.right / width_in, 0.65),
            top=1 - m.top / height_in,
            bottom=m.bottom / height_in,
            hspace=m.gap / panel_in,
        )
        yield fig, [ax for row in axes for ax in row]


def _to_svg(fig: Figure) -> str:
    buf = io.StringIO()
    with warnings.catch_warnings():
        # Very long labels (hostile or not) can leave no room for the axes; the chart is then
        # drawn without the layout pass rather than warning on the user's terminal.
        warnings.filterwarnings("ignore", message="constrained_layout not applied")
        fig.savefig(buf, format="svg", metadata=_SVG_METADATA)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    # Drop the fixed size so CSS can scale the chart; the viewBox keeps the aspect ratio.
    pattern = r'<svg([^>]*?) width="[^"]*" height="[^"]*"'
    return re.sub(pattern, r'<svg\1 class="chart-svg"', svg, count=1)


def _ms_formatter(value: float, _pos: object) -> str:
    if value >= 1000:
        return f"{value / 1000:g} s"
    return f"{value:g} ms"


def _bytes_formatter(value: float, _pos: object) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= size:
            return f"{value / size:g} {unit}"
    return f"{value:g} B"


def _log_axis(axis: Axis, formatter: Any) -> None:
    """Label a log axis with our units. Minor ticks get labels (at 2× and 5×) only when the
    axis spans less than ~1.5 decades; matplotlib's own minor labels are math text, which is
    switched off here and would print raw."""
    axis.set_major_formatter(FuncFormatter(formatter))
    lo, hi = axis.get_view_interval()
    lo, hi = min(lo, hi), max(lo, hi)
    if lo > 0 and hi / lo < 30:

        def minor(value: float, pos: object) -> str:
            if value <= 0:
                return ""
            mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
            return formatter(value, pos) if mantissa in (2.0, 5.0) else ""

        axis.set_minor_formatter(FuncFormatter(minor))
    else:
        axis.set_minor_formatter(NullFormatter())


def _legend(ax: Axes, **kwargs: Any) -> None:
    """A legend only when something is labelled (matplotlib warns on an empty one)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _mark_boundary(ax: Axes, x: float, label: str) -> None:
    """A thin grey vertical line at ``x`` labelled at its top, just right of it: where one step
    (or phase) of a time axis ends and the next begins."""
    ax.axvline(x, color="#9ca3af", linewidth=0.6)
    ax.annotate(
        label,
        (x, 1.0),
        xycoords=("data", "axes fraction"),
        fontsize=7,
        color="#6b7280",
        va="top",
        ha="left",
        xytext=(2, 0),
        textcoords="offset points",
    )


def downsample_max(
    xs: Sequence[float], ys: Sequence[float], max_points: int = TIMELINE_MAX_POINTS
) -> tuple[list[float], list[float]]:
    """At most ``max_points`` points: the series is cut into equal buckets and each bucket keeps
    its first x and its largest y (a latency or CPU spike must survive downsampling)."""
    n = min(len(xs), len(ys))
    if n <= max_points:
        return list(xs[:n]), list(ys[:n])
    x = np.asarray(xs[:n], dtype=float)
    y = np.asarray(ys[:n], dtype=float)
    bounds = np.linspace(0, n, max_points + 1).astype(int)
    starts = bounds[:-1]
    return x[starts].tolist(), np.fmax.reduceat(y, starts).tolist()


def attribution_chart(bars: Sequence[tuple[str, Mapping[str, float]]]) -> str:
    """Horizontal stacked bars, one per ``(label, {stage: ms})``, top to bottom in given order."""
    stages: list[str] = []
    for _, parts in bars:
        stages.extend(s for s in parts if s not in stages)
    labels = [clip_label(label) for label, _ in bars]
    height = max(0.8 + 0.32 * len(bars), 0.45 + 0.17 * len(stages))
    margins = Margins(
        left=0.25 + 0.068 * max((len(x) for x in labels), default=4),
        right=legend_width_in([clip_label(s, LEGEND_MAX_CHARS) for s in stages]),
        top=0.15,
        bottom=0.35,
    )
    with _figure(7.2, height, margins=margins) as (fig, (ax,)):
        ys = np.arange(len(bars))[::-1]
        left = np.zeros(len(bars))
        for stage in stages:
            widths = np.array([max(float(parts.get(stage, 0.0)), 0.0) for _, parts in bars])
            ax.barh(
                ys,
                widths,
                left=left,
                height=0.62,
                color=stage_color(stage),
                label=clip_label(stage, LEGEND_MAX_CHARS),
                edgecolor="white",
                linewidth=0.6,
            )
            left += widths
        for y, total in zip(ys, left, strict=True):
            ax.text(total, y, f"  {total:.1f} ms", va="center", fontsize=8, color="#374151")
        ax.set_yticks(ys, labels)
        ax.xaxis.set_major_formatter(FuncFormatter(_ms_formatter))
        ax.set_xlim(0, max(float(left.max()) if len(left) else 1.0, 1e-3) * 1.15)
        ax.grid(axis="y", visible=False)
        _legend(ax, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _to_svg(fig)


@dataclass(frozen=True)
class RateSeries:
    """Latency percentiles of one path at each step, by offered (or achieved) rate."""

    name: str
    rates: Sequence[float]
    p50_ms: Sequence[float | None]
    p99_ms: Sequence[float | None]
    knee_rate: float | None = None


def _nan(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def rate_chart(series: Sequence[RateSeries], target_p99_ms: float | None, x_label: str) -> str:
    """p50 (dashed) and p99 (solid) against rate per path, log latency axis, knee marked."""
    legend = [f"{clip_label(s.name, LEGEND_MAX_CHARS - 4)} p99" for s in series]
    margins = Margins(left=0.95, right=legend_width_in(legend), bottom=0.55, top=0.15)
    with _figure(7.2, 3.0, margins=margins) as (fig, (ax,)):
        knees: dict[float, list[str]] = {}
        for i, s in enumerate(series):
            color = path_color(i)
            ax.plot(
                s.rates,
                _nan(s.p99_ms),
                "-o",
                color=color,
                markersize=4,
                label=f"{clip_label(s.name, LEGEND_MAX_CHARS - 4)} p99",
            )
            ax.plot(
                s.rates,
                _nan(s.p50_ms),
                "--",
                color=color,
                alpha=0.7,
                linewidth=1.2,
                label=f"{clip_label(s.name, LEGEND_MAX_CHARS - 4)} p50",
            )
            if s.knee_rate is not None:
                knees.setdefault(s.knee_rate, []).append(clip_label(s.name, 16))
        for rate, names in knees.items():
            ax.axvline(rate, color="#6b7280", linestyle=":", linewidth=1)
            ax.annotate(
                f"knee: {', '.join(names)}",
                (rate, 0.02),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                color="#374151",
                rotation=90,
                va="bottom",
                ha="right",
                xytext=(-2, 0),
                textcoords="offset points",
            )
        if target_p99_ms is not None:
            ax.axhline(target_p99_ms, color=ERROR_COLOR, linewidth=1, linestyle="-.")
            ax.annotate(
                f"target p99 {target_p99_ms:g} ms",
                (0.0, target_p99_ms),
                xycoords=("axes fraction", "data"),
                fontsize=7,
                color=ERROR_COLOR,
                va="bottom",
            )
        ax.set_yscale("log")
        _log_axis(ax.yaxis, _ms_formatter)
        ax.set_xlabel(x_label)
        ax.set_ylabel("latency")
        _legend(ax, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _to_svg(fig)


@dataclass(frozen=True)
class Histogram:
    label: str
    edges_ms: Sequence[float]
    counts: Sequence[float]


def distribution_chart(per_path: Sequence[tuple[str, Sequence[Histogram]]]) -> str:
    """One panel per path; one line per step: share of requests per log-spaced latency bin."""
    rows = max(len(per_path), 1)
    legend = [clip_label(h.label, LEGEND_MAX_CHARS) for _, hs in per_path for h in hs]
    margins = Margins(left=0.7, right=legend_width_in(legend), bottom=0.55, top=0.3, gap=0.55)
    with _figure(7.2, 0.35 + 1.75 * rows, nrows=rows, margins=margins) as (fig, axes):
        # One latency range for every panel (paths compare at a glance), trimmed to the
        # occupied bins: histograms carry fixed edges out to tens of seconds.
        lo, hi = math.inf, 0.0
        for _, hists in per_path:
            for h in hists:
                counts = np.asarray(h.counts, dtype=float)
                nz = np.flatnonzero(counts > 0)
                if len(nz) and len(h.edges_ms) == len(counts) + 1:
                    lo = min(lo, float(h.edges_ms[nz[0]]))
                    hi = max(hi, float(h.edges_ms[nz[-1] + 1]))
        for ax, (path, hists) in zip(axes, per_path, strict=False):
            for j, h in enumerate(hists):
                edges = np.asarray(h.edges_ms, dtype=float)
                counts = np.asarray(h.counts, dtype=float)
                if len(edges) != len(counts) + 1 or counts.sum() <= 0 or edges.min() <= 0:
                    continue
                share = counts / counts.sum()
                ax.stairs(
                    share,
                    edges,
                    color=path_color(j),
                    linewidth=1.3,
                    label=clip_label(h.label, LEGEND_MAX_CHARS),
                )
            ax.set_xscale("log")
            if 0 < lo < hi:
                ax.set_xlim(lo / 1.5, hi * 1.5)
            _log_axis(ax.xaxis, _ms_formatter)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.0%}"))
            ax.set_title(clip_label(path, 80), fontsize=9)
            _legend(ax, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        axes[-1].set_xlabel("latency (log scale)")
        return _to_svg(fig)


@dataclass
class Timeline:
    """A path's latency over the whole run: steps laid end to end on one time axis."""

    name: str
    t_s: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    error_t_s: list[float] = field(default_factory=list)
    error_counts: list[float] = field(default_factory=list)
    step_starts: list[tuple[float, str]] = field(default_factory=list)


def timeline_chart(timelines: Sequence[Timeline]) -> str:
    """p50/p99 over time per path, step boundaries labelled, seconds with errors marked in red."""
    rows = max(len(timelines), 1)
    margins = Margins(left=0.85, right=legend_width_in(["errors (10000)"]), gap=0.55)
    with _figure(7.2, 0.35 + 1.8 * rows, nrows=rows, margins=margins) as (fig, axes):
        for ax, tl in zip(axes, timelines, strict=False):
            t99, p99 = downsample_max(tl.t_s, tl.p99_ms)
            t50, p50 = downsample_max(tl.t_s, tl.p50_ms)
            ax.plot(t99, p99, color="#1d4ed8", linewidth=1.2, label="p99")
            ax.plot(t50, p50, color="#93c5fd", linewidth=1.2, label="p50")
            for start, label in tl.step_starts:
                _mark_boundary(ax, start, clip_label(label, 20))
            if tl.error_t_s:
                ex, ey = downsample_max(tl.error_t_s, tl.error_counts)
                top = max(p99) if p99 else 1.0
                ax.scatter(
                    ex,
                    [top] * len(ex),
                    marker="v",
                    color=ERROR_COLOR,
                    s=14,
                    zorder=3,
                    label=f"errors ({int(sum(tl.error_counts))})",
                )
            ax.set_yscale("log")
            _log_axis(ax.yaxis, _ms_formatter)
            ax.set_title(clip_label(tl.name, 80), fontsize=9)
            _legend(ax, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        axes[-1].set_xlabel("time since the path's first step (s)")
        return _to_svg(fig)


def payload_chart(
    per_path: Sequence[tuple[str, Sequence[float], Sequence[float | None], Sequence[float | None]]],
) -> str:
    """p50/p99 against request body size (bin midpoints), one colour per path."""
    legend = [f"{clip_label(p[0], LEGEND_MAX_CHARS - 4)} p99" for p in per_path]
    margins = Margins(left=0.95, right=legend_width_in(legend), bottom=0.55, top=0.15)
    with _figure(7.2, 2.6, margins=margins) as (fig, (ax,)):
        for i, (name, sizes, p50, p99) in enumerate(per_path):
            ax.plot(
                sizes,
                _nan(p99),
                "-o",
                color=path_color(i),
                markersize=4,
                label=f"{clip_label(name, LEGEND_MAX_CHARS - 4)} p99",
            )
            ax.plot(
                sizes,
                _nan(p50),
                "--",
                color=path_color(i),
                alpha=0.7,
                label=f"{clip_label(name, LEGEND_MAX_CHARS - 4)} p50",
            )
        ax.set_xscale("log")
        _log_axis(ax.xaxis, _bytes_formatter)
        ax.yaxis.set_major_formatter(FuncFormatter(_ms_formatter))
        ax.set_xlabel("request body size")
        ax.set_ylabel("latency")
        _legend(ax, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _to_svg(fig)


@dataclass
class Panel:
    """One panel of a time-series chart: lines plus optional event markers (e.g. worker deaths)."""

    title: str
    y_unit: str  # "%", "bytes", "ms" or "" — picks the tick formatter
    lines: list[tuple[str, list[float], list[float]]] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    separators: list[tuple[float, str]] = field(default_factory=list)
    x_label: str = "time (s)"


def series_chart(panels: Sequence[Panel]) -> str:
    """Stacked time-series panels (client CPU, worker CPU and memory, …)."""
    rows = max(len(panels), 1)
    legend = [clip_label(label, LEGEND_MAX_CHARS) for p in panels for label, _, _ in p.lines]
    margins = Margins(left=0.85, right=legend_width_in(legend), gap=0.75)
    with _figure(7.2, 0.45 + 1.9 * rows, nrows=rows, margins=margins) as (fig, axes):
        for ax, panel in zip(axes, panels, strict=False):
            for i, (label, xs, ys) in enumerate(panel.lines):
                dx, dy = downsample_max(xs, ys)
                ax.plot(
                    dx,
                    dy,
                    color=path_color(i),
                    linewidth=1.2,
                    label=clip_label(label, LEGEND_MAX_CHARS),
                )
            for x, label in panel.separators:
                _mark_boundary(ax, x, clip_label(label, 24))
            for x, label in panel.events:
                ax.axvline(x, color=ERROR_COLOR, linewidth=1, linestyle="--")
                ax.annotate(
                    clip_label(label, 24),
                    (x, 0.5),
                    xycoords=("data", "axes fraction"),
                    fontsize=7,
                    color=ERROR_COLOR,
                    rotation=90,
                    va="center",
                    ha="right",
                )
            if panel.y_unit == "bytes":
                ax.yaxis.set_major_formatter(FuncFormatter(_bytes_formatter))
            elif panel.y_unit == "ms":
                ax.yaxis.set_major_formatter(FuncFormatter(_ms_formatter))
            elif panel.y_unit == "%":
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}%"))
            ax.set_ylim(bottom=0)
            ax.set_title(clip_label(panel.title, 80), fontsize=9)
            ax.set_xlabel(panel.x_label)
            if len(panel.lines) > 1:
                _legend(ax, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _to_svg(fig)


def compare_chart(rows: Sequence[tuple[str, float | None, float | None]], metric: str) -> str:
    """Grouped horizontal bars: ``metric`` before (grey) and after (blue) per row label."""
    height = 0.8 + 0.36 * max(len(rows), 1)
    labels = [clip_label(r[0]) for r in rows]
    margins = Margins(
        left=0.25 + 0.068 * max((len(x) for x in labels), default=4),
        right=legend_width_in([f"before {metric}"]),
        top=0.15,
        bottom=0.35,
    )
    with _figure(7.2, height, margins=margins) as (fig, (ax,)):
        ys = np.arange(len(rows))[::-1].astype(float)
        before = _nan([r[1] for r in rows])
        after = _nan([r[2] for r in rows])
        ax.barh(ys + 0.18, before, height=0.34, color=BEFORE_COLOR, label=f"before {metric}")
        ax.barh(ys - 0.18, after, height=0.34, color=AFTER_COLOR, label=f"after {metric}")
        ax.set_yticks(ys, labels)
        ax.xaxis.set_major_formatter(FuncFormatter(_ms_formatter))
        ax.grid(axis="y", visible=False)
        _legend(ax, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _to_svg(fig)
