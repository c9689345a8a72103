"""compare_reports: per path and step before → after, verdicts, and stage changes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pathprobe.reports.compare import compare_reports, render_compare

FIXTURES = Path(__file__).parent.parent / "fixtures"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


@pytest.fixture
def before_after() -> tuple[dict[str, Any], dict[str, Any]]:
    before = load("report_full.json")
    after = copy.deepcopy(before)
    after["verdict"]["bottleneck"] = "inference"
    after["verdict"]["targets_met"] = True
    for step in after["paths"]["lb"]["steps"]:
        step["latency_ms"]["p99"] = step["latency_ms"]["p99"] / 2
    after["paths"]["lb"]["steps"].append(
        {"offered_rps": 200, "achieved_rps": 190, "latency_ms": {"p50": 90, "p99": 180}}
    )
    del after["paths"]["direct"]
    after["verdict"]["ranking"] = [
        {"stage": "proxy", "explains_ms": 11.0},
        {"stage": "network", "explains_ms": 2.0},
    ]
    return before, after


def test_steps_matched_by_rate_with_changes(
    before_after: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    before, after = before_after
    result = compare_reports(before, after)
    lb = next(p for p in result["paths"] if p["path"] == "lb")
    assert lb["only_in"] is None
    at_100 = next(s for s in lb["steps"] if s["offered_rps"] == 100)
    p99_before = before["paths"]["lb"]["steps"][2]["latency_ms"]["p99"]
    assert at_100["before"]["p99_ms"] == p99_before
    assert at_100["after"]["p99_ms"] == pytest.approx(p99_before / 2)
    assert at_100["change"]["p99_ms"] == pytest.approx(-p99_before / 2)
    assert at_100["change"]["p99_ms_rel"] == pytest.approx(-0.5)
    assert at_100["change"]["p50_ms"] == 0
    new_step = next(s for s in lb["steps"] if s["offered_rps"] == 200)
    assert new_step["before"] is None
    assert new_step["change"]["p99_ms"] is None
    direct = next(p for p in result["paths"] if p["path"] == "direct")
    assert direct["only_in"] == "before"
    assert all(s["after"] is None for s in direct["steps"])


def test_verdict_and_stage_changes(before_after: tuple[dict[str, Any], dict[str, Any]]) -> None:
    result = compare_reports(*before_after)
    v = result["verdict"]
    assert v["before"]["bottleneck"] == "proxy"
    assert v["after"]["bottleneck"] == "inference"
    assert v["bottleneck_changed"]
    assert v["targets_changed"]
    stages = {s["stage"]: s for s in result["stages"]}
    assert stages["proxy"]["change_ms"] == pytest.approx(11.0 - 41.0)
    assert stages["network"]["before_ms"] is None
    assert stages["network"]["change_ms"] is None
    assert stages["load_balancer"]["after_ms"] is None
    assert result["stages"][0]["stage"] == "proxy"  # ordered by the larger side
    json.dumps(result)  # plain data


def test_steps_without_rates_match_by_position() -> None:
    a = load("report_minimal.json")
    b = copy.deepcopy(a)
    for r in (a, b):
        r["paths"]["direct"]["steps"][0]["offered_rps"] = None
    b["paths"]["direct"]["steps"][0]["latency_ms"]["p50"] = 46.0
    result = compare_reports(a, b)
    (step,) = result["paths"][0]["steps"]
    assert step["step"] == "step 1"
    assert step["change"]["p50_ms"] == -46.0


def test_render_compare_shows_the_changes(
    before_after: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    html = render_compare(*before_after)
    assert "proxy → inference" in html
    assert "(-50%)" in html
    assert "(only before)" in html
    assert "<script" not in html


def test_compare_of_empty_reports() -> None:
    result = compare_reports({}, {})
    assert result["paths"] == []
    assert result["stages"] == []
    assert "Neither report" in render_compare({}, {})
