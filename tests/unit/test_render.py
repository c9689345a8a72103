"""The HTML report: structure without JS, graceful degradation, and hostile input.

Pages are parsed with the standard library's HTML parser (what a browser without JavaScript
sees); the browser test in tests/integration checks the same page in real Chromium.
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from pathprobe.reports.compare import render_compare
from pathprobe.reports.render import render_html

FIXTURES = Path(__file__).parent.parent / "fixtures"
SECTION_ORDER = [
    "verdict",
    "ranking",
    "attribution",
    "latency",
    "client",
    "network",
    "server",
    "reproduce",
]
HOSTILE = [
    "<script>alert(1)</script>",
    "</script><img src=x onerror=alert(2)>",
    "{{7*7}}",
    "\"'><svg onload=alert(3)>",
    "[bold red]rich[/] $x^2$ ]]></text><script>alert(4)</script>",
]


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


class Dom(HTMLParser):
    """Elements as (tag, attrs) in document order, ids, text, and the body of each <script>."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.ids: list[str] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._script: dict[str, str | None] | None = None
        self._script_text: list[str] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.elements.append((tag, a))
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if tag == "script":
            self._script, self._script_text = a, []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script, "".join(self._script_text)))
            self._script = None

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._script_text.append(data)
        else:
            self.text.append(data)

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def section_text(html: str, element_id: str) -> str:
    match = re.search(rf'<section id="{element_id}".*?</section>', html, re.S)
    assert match, f"no section #{element_id}"
    return " ".join(" ".join(Dom(match.group(0)).text).split())


@pytest.fixture(scope="module")
def full_html() -> str:
    return render_html(load("report_full.json"))


def test_sections_in_order_and_verdict_first(full_html: str) -> None:
    dom = Dom(full_html)
    positions = [dom.ids.index(s) for s in SECTION_ORDER]
    assert positions == sorted(positions)
    verdict = section_text(full_html, "verdict")
    assert "The proxy hop" in verdict
    assert "Targets missed" in verdict
    assert "Confidence: high" in verdict
    assert "capture drops 0" in verdict
    assert "What to do:" in verdict
    assert "p99 398 ms" in verdict  # the failing step of the judged path, in the step strip


def test_tables_and_numbers_read_without_js(full_html: str) -> None:
    latency = section_text(full_html, "latency")
    # direct @ 20 rps, p99 from the fixture, formatted as the table shows it.
    assert "50.4 ms" in latency
    assert "fail" in latency
    assert "pass" in latency
    assert "(knee)" in latency
    attribution = section_text(full_html, "attribution")
    assert "[35.2 ms, 46.8 ms]" in attribution  # the tail CI of the proxy hop delta
    assert "replica-a" in attribution
    server = section_text(full_html, "server")
    # The static fallback for the flame graph: the heaviest stack's leaf frame.
    assert "numpy/core/multiarray.py:dot" in server
    assert "needs JavaScript" in full_html  # inside <noscript>
    reproduce = section_text(full_html, "reproduce")
    assert "pathprobe diagnose" in reproduce
    assert "[redacted]" in full_html


def test_page_is_self_contained(full_html: str) -> None:
    dom = Dom(full_html)
    for tag, attrs in dom.elements:
        for name in ("src", "href", "xlink:href", "action", "data", "poster", "srcset"):
            value = attrs.get(name)
            if value is None:
                continue
            assert value.startswith(("#", "data:")), f"<{tag} {name}={value!r}> would load"
        assert not (tag == "link" and attrs.get("rel") == "stylesheet")
        assert not (tag == "meta" and attrs.get("http-equiv", "").lower() == "refresh")
    assert "@import" not in full_html
    assert not re.search(r"url\(\s*['\"]?(?!data:|#)", full_html)
    csp = [
        a
        for t, a in dom.elements
        if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert csp
    assert "default-src 'none'" in str(csp[0]["content"])


def test_minimal_contract_report_renders_with_not_observed_notes() -> None:
    html = render_html(load("report_minimal.json"))
    verdict = section_text(html, "verdict")
    assert "Model inference on the server" in verdict
    for section in ("client", "network", "server"):
        assert "Not observed" in section_text(html, section)
    assert "180 ms" in section_text(html, "latency")
    assert "<script>" not in html  # no flame graph, so no script at all


def test_unavailable_probe_says_why_and_how() -> None:
    report = load("report_full.json")
    report["probes"]["server"] = {
        "available": False,
        "reason": "py-spy cannot attach: ptrace not permitted",
        "how_to_enable": "run as root or grant CAP_SYS_PTRACE",
    }
    html = render_html(report)
    text = section_text(html, "server")
    assert "Not observed: py-spy cannot attach: ptrace not permitted — run as root" in text


def test_banners_for_interrupted_and_untrustworthy() -> None:
    report = load("report_minimal.json")
    html = render_html(report)
    assert "banner-interrupted" not in html
    assert "banner-untrustworthy" not in html
    report["interrupted"] = True
    report["verdict"]["trustworthy"] = False
    html = render_html(report)
    verdict = section_text(html, "verdict")
    assert "partial report" in verdict
    assert "not trustworthy" in verdict


def _key_paths(obj: Any, prefix: tuple[Any, ...] = (), depth: int = 5) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    if depth == 0:
        return out
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((*prefix, k))
            out.extend(_key_paths(v, (*prefix, k), depth - 1))
    elif isinstance(obj, list) and obj:
        out.append((*prefix, 0))
        out.extend(_key_paths(obj[0], (*prefix, 0), depth - 1))
    return out


def _small_report() -> dict[str, Any]:
    """The full fixture cut to two paths and one step each: every section present, cheap to draw."""
    report = load("report_full.json")
    report["paths"] = {
        p: {**v, "steps": v["steps"][-1:]} for p, v in list(report["paths"].items())[:2]
    }
    for probe in report["probes"].values():
        probe["windows"] = [w for w in probe.get("windows", []) if w["step"] == 2][:2]
        for w in probe["windows"]:
            w["step"] = 0
    return report


@pytest.mark.parametrize("seed", range(4))
def test_any_field_missing_or_of_the_wrong_type_degrades(seed: int) -> None:
    base = _small_report()
    paths = _key_paths(base)
    rng = random.Random(seed)
    garbage: list[Any] = [None, "x", 7, -1.5, [], {}, [1, "a"], True, float("nan")]
    for key_path in rng.sample(paths, 6):
        report = copy.deepcopy(base)
        parent: Any = report
        for k in key_path[:-1]:
            parent = parent[k]
        if rng.random() < 0.5 and isinstance(parent, dict):
            del parent[key_path[-1]]
        else:
            parent[key_path[-1]] = rng.choice(garbage)
        html = render_html(report)
        assert 'id="verdict"' in html, key_path


def _hostile_copy(report: Any, payload: str) -> Any:
    """Every string value replaced by ``payload`` + value; the keys of data maps (paths, replicas,
    stacks, status codes, header names, stages, config) prefixed with ``payload`` too."""
    data_maps = {
        "paths",
        "by_replica",
        "folded",
        "status_codes",
        "errors_by_kind",
        "hop_headers",
        "server-timing",
        "stage_share",
        "stage_samples",
        "attribution",
        "p50",
        "p99",
        "cgroup",
        "versions",
        "host",
        "config",
        "headers",
        "floor_ms",
    }

    def walk(obj: Any, parent_key: str | None) -> Any:
        if isinstance(obj, str):
            return payload + obj
        if isinstance(obj, list):
            return [walk(v, parent_key) for v in obj]
        if isinstance(obj, dict):
            rename = parent_key in data_maps
            return {(payload + k if rename else k): walk(v, k) for k, v in obj.items()}
        return obj

    hostile = walk(report, None)
    hostile["schema"] = report["schema"]
    return hostile


@pytest.mark.parametrize("payload", HOSTILE)
def test_hostile_strings_come_out_escaped(payload: str) -> None:
    report = _hostile_copy(_small_report(), payload)
    report["verdict"]["summary"] = payload * 3
    html = render_html(report)
    dom = Dom(html)
    scripts = [(a, body) for a, body in dom.scripts]
    executable = [b for a, b in scripts if a.get("type") != "application/json"]
    # Only our three inlined scripts (d3, d3-flame-graph, report.js) — nothing injected.
    assert len(executable) == 3
    assert all("alert(" not in b for b in executable)
    for _, body in scripts:
        assert "</script" not in body.lower()
    for tag, attrs in dom.elements:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert tag != "img"
        if tag == "svg":
            assert "onload" not in attrs
    # The JSON data still parses back to the hostile frame names, verbatim.
    data = [json.loads(b) for a, b in scripts if a.get("type") == "application/json"]
    assert any(payload in json.dumps(d, ensure_ascii=False) for d in data)
    # The text is there for the reader, as text.
    assert payload in dom.all_text


def test_hostile_strings_in_compare_page() -> None:
    before = _hostile_copy(_small_report(), HOSTILE[1])
    after = _hostile_copy(_small_report(), HOSTILE[0])
    html = render_compare(before, after)
    dom = Dom(html)
    assert dom.scripts == []
    assert not any(t == "img" or any(n.startswith("on") for n in a) for t, a in dom.elements)
    assert HOSTILE[0] in dom.all_text


def test_oversized_strings_are_clipped() -> None:
    report = load("report_minimal.json")
    report["verdict"]["summary"] = "A" * 1_000_000
    report["verdict"]["ranking"][0]["evidence"] = ["B" * 1_000_000] * 50
    report["paths"]["direct"]["steps"][0]["status_codes"] = {"C" * 100_000: 1}
    html = render_html(report)
    assert len(html) < 200_000
    assert "more characters]" in html


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r["verdict"].update(bottleneck="none", targets_met=True), "Targets met"),
        (lambda r: r["verdict"].update(bottleneck="inconclusive"), "Inconclusive"),
        (lambda r: r["verdict"].update(bottleneck="quantum"), "quantum"),
        (lambda r: r.pop("verdict"), "No verdict in this report"),
    ],
)
def test_verdict_headline_variants(
    mutate: Callable[[dict[str, Any]], object], expected: str
) -> None:
    report = load("report_minimal.json")
    mutate(report)
    assert expected in section_text(render_html(report), "verdict")


@pytest.mark.parametrize("name", ["report_testbed_proxy_queue.json", "report_hostile_server.json"])
def test_reports_written_by_real_runs(name: str) -> None:
    """report.json files as `pathprobe diagnose` wrote them (testbed with nginx limit_req
    queueing; a server with HTML/JS in its status line and headers): rendered in full."""
    report = load(name)
    html = render_html(report)
    dom = Dom(html)
    assert [s for s in SECTION_ORDER if s in dom.ids] == SECTION_ORDER
    assert "Not observed: the report holds no latency" not in html
    for tag, attrs in dom.elements:
        assert tag != "img"
        assert not any(a.startswith("on") for a in attrs)
    executable = [b for a, b in dom.scripts if a.get("type") != "application/json"]
    assert all("alert(" not in b for b in executable)


def test_tail_attribution_under_its_own_percentile_key() -> None:
    report = load("report_hostile_server.json")
    assert report["verdict"]["attribution"]["direct"]["percentile_label"] == "p90"
    text = section_text(render_html(report), "attribution")
    assert "direct @ 10 rps" in text
    assert "median · tail" in text
    assert "tail (p90)" in render_html(report)


def test_a_stage_that_explains_failures_says_how_many() -> None:
    report = json.loads((FIXTURES / "report_full.json").read_text())
    report["verdict"]["ranking"].insert(0, {
        "stage": "proxy", "explains_ms": 0.02, "failures_explained": 80.0, "clears_bar": True,
        "evidence": ["80 of 120 requests failed on proxy (66.7%; 503 × 80)"],
    })  # fmt: skip
    page = render_html(report)
    assert "0.02 ms · 80 failures" in page
    assert "80 of 120 requests failed on proxy" in page
