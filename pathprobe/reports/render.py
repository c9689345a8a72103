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

The work is split in two: :func:`build_view` turns the loosely-typed report into plain display
data (numbers formatted, tables as rows, charts as SVG strings), one module of
:mod:`pathprobe.reports.sections` per section of the page, and the templates only lay it out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pathprobe.reports import charts
from pathprobe.reports.fields import STAGES, clip
from pathprobe.reports.sections.attribution import attribution_view
from pathprobe.reports.sections.client import client_view
from pathprobe.reports.sections.latency import latency_view
from pathprobe.reports.sections.network import network_view
from pathprobe.reports.sections.reproduce import path_rows, reproduce_view, run_notes
from pathprobe.reports.sections.server import server_view
from pathprobe.reports.sections.verdict import targets_view, verdict_view
from pathprobe.reports.templating import csp_hash, environment, flame_scripts

SCHEMA = "pathprobe.report/v1"


def build_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the template shows, as display-ready data (see the module docstring). The
    sections are built in page order: charts number their SVG ids in the order they are drawn."""
    targets = targets_view(report)
    schema = report.get("schema")
    return {
        "schema": clip(schema, 60),
        "schema_ok": schema == SCHEMA,
        "verdict": verdict_view(report),
        "targets": targets,
        "paths": path_rows(report),
        "attribution": attribution_view(report),
        "latency": latency_view(report, targets),
        "client": client_view(report),
        "network": network_view(report),
        "server": server_view(report),
        "reproduce": reproduce_view(report),
        "notes": run_notes(report),
        "stage_legend": [{"name": s, "color": charts.stage_color(s)} for s in STAGES],
    }


def render_html(report: Mapping[str, Any]) -> str:
    """The complete, self-contained report page for one report.json dict."""
    view = build_view(report)
    scripts = flame_scripts() if view["server"]["flames"] else []
    return (
        environment()
        .get_template("report.html.j2")
        .render(view=view, scripts=scripts, script_hashes=[csp_hash(s) for s in scripts])
    )
