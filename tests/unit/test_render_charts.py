"""Pure pieces of the renderer: downsampling, label clipping, flame tree, knee, chart SVG."""

from __future__ import annotations

import re

import pytest

from pathprobe.reports import charts
from pathprobe.reports.fields import clip, fmt_ms, num
from pathprobe.reports.sections.common import Step
from pathprobe.reports.sections.latency import knee_rate
from pathprobe.reports.sections.profile import folded_to_tree


def test_downsample_keeps_spikes_and_caps_points() -> None:
    xs = [float(i) for i in range(10_000)]
    ys = [1.0] * 10_000
    ys[7_777] = 500.0
    dx, dy = charts.downsample_max(xs, ys, max_points=100)
    assert len(dx) == len(dy) == 100
    assert max(dy) == 500.0
    assert dx == sorted(dx)
    short_x, short_y = charts.downsample_max([1.0, 2.0], [3.0, 4.0], max_points=100)
    assert (short_x, short_y) == ([1.0, 2.0], [3.0, 4.0])


def test_clip_label_is_one_short_line_and_stays_in_the_legend() -> None:
    assert charts.clip_label("a\nb\x00c") == "a b c"
    assert len(charts.clip_label("x" * 500)) == charts.LABEL_MAX_CHARS
    assert not charts.clip_label("_hidden").startswith("_")


def test_clip_notes_the_cut() -> None:
    assert clip("abc", 10) == "abc"
    assert clip("a" * 20, 10) == "a" * 10 + "… [10 more characters]"
    assert clip(None) == ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.123, "0.12 ms"),
        (12.34, "12.3 ms"),
        (1234.5, "1,234 ms"),
        (None, "—"),
        ("7", "—"),
        (True, "—"),
        (float("nan"), "—"),
    ],
)
def test_fmt_ms(value: object, expected: str) -> None:
    assert fmt_ms(value) == expected


def test_num_rejects_non_numbers() -> None:
    assert num(3) == 3.0
    assert num(float("inf")) is None
    assert num(False) is None
    assert num("1") is None


def test_folded_to_tree_sums_inclusive_values_and_caps_stacks() -> None:
    folded = {"a;b;c": 5, "a;b;d": 3, "a;e": 2, "z": 1, "bad": "x", "neg": -4}
    tree = folded_to_tree(folded, max_stacks=3)
    assert tree["name"] == "all"
    assert tree["value"] == 11
    a = next(c for c in tree["children"] if c["name"] == "a")
    assert a["value"] == 10
    b = next(c for c in a["children"] if c["name"] == "b")
    assert sorted((c["name"], c["value"]) for c in b["children"]) == [("c", 5), ("d", 3)]
    other = next(c for c in tree["children"] if c["name"] == "[other stacks]")
    assert other["value"] == 1  # "z" fell beyond the cap


def test_knee_is_the_analysis_rule_on_what_the_report_holds() -> None:
    def step(rate: object, achieved: object, p99: object) -> dict[str, object]:
        return {"offered_rps": rate, "achieved_rps": achieved, "latency_ms": {"p99": p99}}

    def knee(*steps: dict[str, object]) -> float | None:
        return knee_rate([Step.read(s, i) for i, s in enumerate(steps)])

    assert knee(step(10, 10, 20), step(20, 20, 22), step(40, 39.5, 25)) is None
    assert knee(step(10, 10, 20), step(20, 18, 22)) == 20  # achieved < 95 % of offered
    assert knee(step(10, 10, 20), step(20, 20, 30), step(40, 40, 90)) == 40  # p99 > 3×
    # 3× but only 4 ms above the lowest step: a fast service wobbling (analysis/knee.py), no knee.
    assert knee(step(10, 10, 1), step(20, 20, 5)) is None
    assert knee(step(40, 40, 90), step(10, 10, 20)) == 40  # steps in any order
    assert knee({"offered_rps": None}) is None
    # Values of the wrong type are missing, never an exception; a missing achieved rate is
    # nothing achieved, as in the rule the verdict applied.
    assert knee(step("10", 10, 20), step(20, "x", float("nan"))) == 20
    assert knee({"offered_rps": 10, "latency_ms": "x"}) == 10


def test_chart_svg_is_inline_ready_and_escaped() -> None:
    hostile = "<script>alert(1)</script>"
    svg = charts.rate_chart(
        [charts.RateSeries(hostile, [10, 20], [5.0, 6.0], [9.0, 30.0], knee_rate=20)],
        target_p99_ms=25.0,
        x_label="offered rate",
    )
    assert svg.startswith("<svg")
    assert svg.rstrip().endswith("</svg>")
    assert "<?xml" not in svg
    assert "<!DOCTYPE" not in svg
    assert 'class="chart-svg"' in svg
    assert 'width="' not in svg.split(">", 1)[0]
    assert "<script" not in svg
    assert "&lt;script&gt;" in svg
    assert "matplotlib.org" not in svg  # no creator metadata
    assert "$\\mathdefault" not in svg  # math text is off: tick labels are plain


def test_chart_ids_are_unique_across_charts() -> None:
    a = charts.series_chart([charts.Panel("cpu", "%", [("x", [0.0, 1.0], [1.0, 2.0])])])
    b = charts.series_chart([charts.Panel("cpu", "%", [("x", [0.0, 1.0], [1.0, 2.0])])])
    ids_a = set(re.findall(r'id="([^"]+)"', a))
    ids_b = set(re.findall(r'id="([^"]+)"', b))
    generated = {i for i in ids_a if re.fullmatch(r"[a-z]+[0-9a-f]{8,}", i)}
    assert generated
    assert not generated & ids_b


def test_empty_inputs_still_give_valid_svg() -> None:
    for svg in (
        charts.attribution_chart([]),
        charts.rate_chart([], None, "rate"),
        charts.distribution_chart([]),
        charts.timeline_chart([]),
        charts.payload_chart([]),
        charts.series_chart([]),
        charts.compare_chart([], "p99"),
    ):
        assert svg.startswith("<svg")
        assert "</svg>" in svg


def test_folded_to_tree_leaves_out_sub_pixel_frames() -> None:
    folded = {"a;big": 9_990, "a;tiny;deeper": 1, "b": 9}
    tree = folded_to_tree(folded, min_fraction=1 / 5000)
    a = next(c for c in tree["children"] if c["name"] == "a")
    assert [c["name"] for c in a["children"]] == ["big"]  # "tiny" (1 of 10,000) is dropped
    assert a["value"] == 9_991  # its time still counts in the parent's width
    assert tree["value"] == 10_000
