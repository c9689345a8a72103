"""The terminal summary printed at the end of diagnose."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from pathprobe.reports.terminal import print_summary

FIXTURES = Path(__file__).parent.parent / "fixtures"


def render(report: dict[str, Any], report_path: str | None = None) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=140, color_system=None, force_terminal=False)
    print_summary(report, console, report_path=report_path)
    return buf.getvalue()


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def test_summary_mirrors_the_verdict() -> None:
    out = render(load("report_full.json"), "out/run1/report.html")
    lines = out.splitlines()
    assert lines[0].startswith("Bottleneck: proxy — the proxy hop")
    assert "Targets: missed" in out
    assert "Confidence: high" in out
    # Top three ranking rows only, with explains_ms.
    assert "41.0 ms" in out
    assert "preprocessing" in out
    assert "inference" in out
    assert "Δlb p99" not in out  # the fourth row's evidence
    # Per path and step p50/p99.
    lb_rows = [line for line in lines if line.startswith("lb ")]
    assert len(lb_rows) == 3
    assert "398 ms" in lb_rows[-1]
    assert lines[-1] == "Report: out/run1/report.html"


def test_summary_of_a_minimal_report_and_banners() -> None:
    report = load("report_minimal.json")
    report["interrupted"] = True
    report["verdict"]["trustworthy"] = False
    out = render(report)
    assert "Interrupted: partial report." in out
    assert "not trustworthy" in out
    assert "Bottleneck: inference" in out
    assert "180 ms" in out


def test_markup_in_report_strings_is_printed_verbatim() -> None:
    report = load("report_minimal.json")
    hostile = "[bold red]boom[/bold red] [link=http://x]click[/link]"
    report["verdict"]["summary"] = hostile
    report["verdict"]["bottleneck"] = "[blink]x[/blink]"
    report["paths"] = {hostile: report["paths"]["direct"]}
    out = render(report)
    assert hostile in out
    assert "[blink]x[/blink]" in out


def test_empty_report_does_not_raise() -> None:
    out = render({})
    assert "Bottleneck: none reported" in out
