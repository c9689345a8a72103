"""Hop header parsers (Server-Timing, nginx, HAProxy, Envoy) and per-window summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pathprobe.config import ProbeOptions
from pathprobe.decode.hopheaders import (
    HaproxyTimers,
    ServerTimingMetric,
    distribution,
    nginx_upstream_ms,
    parse_envoy_upstream_ms,
    parse_haproxy_timers,
    parse_html_float,
    parse_nginx_upstream_times,
    parse_server_timing,
    per_request_hop_times,
    per_request_server_timing,
    split_header_list,
    summarize_hop_headers,
)

# --- Server-Timing -----------------------------------------------------------------------------


def test_spec_examples() -> None:
    # The examples of the W3C Server-Timing specification.
    assert parse_server_timing("miss") == [ServerTimingMetric("miss")]
    assert parse_server_timing("db;dur=53") == [ServerTimingMetric("db", 53.0)]
    assert parse_server_timing("app;dur=47.2") == [ServerTimingMetric("app", 47.2)]
    assert parse_server_timing("customView, dc;desc=atl") == [
        ServerTimingMetric("customView"),
        ServerTimingMetric("dc", None, "atl"),
    ]
    assert parse_server_timing('cache;desc="Cache Read";dur=23.2') == [
        ServerTimingMetric("cache", 23.2, "Cache Read")
    ]


def test_multiple_headers_joined_with_commas() -> None:
    joined = "pre;dur=12.5, inf;dur=30" + ", " + 'total;dur=45;desc="all, of it"'
    metrics = parse_server_timing(joined)
    assert [m.name for m in metrics] == ["pre", "inf", "total"]
    assert metrics[2].desc == "all, of it"  # the comma inside quotes does not split
    assert metrics[2].dur_ms == 45.0


def test_first_parameter_wins_and_case_insensitive_names() -> None:
    assert parse_server_timing("a;dur=1;dur=2")[0].dur_ms == 1.0
    assert parse_server_timing("a;DUR=3")[0].dur_ms == 3.0
    assert parse_server_timing('a;desc="x";desc=y')[0].desc == "x"


def test_quoted_strings_and_escapes() -> None:
    metric = parse_server_timing(r'a;desc="say \"hi\" \\ ok";dur=1')[0]
    assert metric.desc == 'say "hi" \\ ok'
    assert metric.dur_ms == 1.0
    # Junk after the closing quote is dropped, the next parameter still read.
    metric = parse_server_timing('a;desc="x"junk;dur=2')[0]
    assert (metric.desc, metric.dur_ms) == ("x", 2.0)
    # An unterminated quote ends at the end of the value.
    assert parse_server_timing('a;desc="open')[0].desc == "open"


def test_dur_uses_html_float_rules() -> None:
    assert parse_server_timing("a;dur=12ms")[0].dur_ms == 12.0  # trailing junk ignored
    assert parse_server_timing("a;dur=.5")[0].dur_ms == 0.5
    assert parse_server_timing("a;dur=1e3")[0].dur_ms == 1000.0
    assert parse_server_timing("a;dur= 7")[0].dur_ms == 7.0
    bad = parse_server_timing("a;dur=fast")[0]
    assert bad.dur_ms is None
    assert bad.duration_ms == 0.0
    assert parse_server_timing("a;dur")[0].dur_ms is None
    assert parse_html_float("  -2.5e-1x") == -0.25
    assert parse_html_float("inf") is None
    assert parse_html_float("1e999") is None


def test_invalid_entries_are_ignored() -> None:
    metrics = parse_server_timing('good;dur=1, , ;dur=4, "quoted";dur=2, b@d;dur=3, ok')
    assert [m.name for m in metrics] == ["good", "ok"]
    assert parse_server_timing("") == []
    assert parse_server_timing("x" * 10_000) == []  # oversized: not parsed
    # Whitespace around names and parameters is allowed.
    assert parse_server_timing("  db ; dur = 5 ; desc = hi ") == [
        ServerTimingMetric("db", 5.0, "hi")
    ]


def test_split_header_list() -> None:
    assert split_header_list('a, b;desc="1,2" ,c') == ["a", 'b;desc="1,2"', "c"]


@given(st.text(max_size=200))
def test_parser_never_raises(text: str) -> None:
    for metric in parse_server_timing(text):
        assert metric.name
        assert metric.dur_ms is None or math.isfinite(metric.dur_ms)


# --- nginx / HAProxy / Envoy -------------------------------------------------------------------


def test_nginx_upstream_times() -> None:
    assert parse_nginx_upstream_times("0.012") == [0.012]
    assert parse_nginx_upstream_times("0.012, 0.003 : 0.004") == [0.012, 0.003, 0.004]
    assert parse_nginx_upstream_times("-, 0.010") == [None, 0.010]
    assert parse_nginx_upstream_times("garbage") == []
    assert nginx_upstream_ms("0.012, 0.003 : 0.004") == pytest.approx(19.0)
    assert nginx_upstream_ms("-") is None
    assert nginx_upstream_ms(None) is None


def test_haproxy_slash_format_agreed_with_testbed() -> None:
    assert parse_haproxy_timers("3/0/12") == HaproxyTimers(Tw=3.0, Tc=0.0, Tr=12.0)
    # -1: the phase was never reached (e.g. aborted while queued).
    assert parse_haproxy_timers("250/-1/-1") == HaproxyTimers(Tw=250.0, Tc=None, Tr=None)
    assert parse_haproxy_timers("0/3/0/12/15") == HaproxyTimers(0.0, 3.0, 0.0, 12.0, 15.0)
    assert parse_haproxy_timers("3/0") is None  # ambiguous field count
    assert parse_haproxy_timers("a/b/c") is None


def test_haproxy_key_value_format() -> None:
    assert parse_haproxy_timers("Tw=3 Tc=0 Tr=12") == HaproxyTimers(Tw=3.0, Tc=0.0, Tr=12.0)
    assert parse_haproxy_timers("Tw=3, Tr=12; Tt=20") == HaproxyTimers(Tw=3.0, Tr=12.0, Ta=20.0)
    assert parse_haproxy_timers("nothing here=") is None


def test_envoy() -> None:
    assert parse_envoy_upstream_ms("17") == 17.0
    assert parse_envoy_upstream_ms(" 0 ") == 0.0
    assert parse_envoy_upstream_ms("1.5") is None
    assert parse_envoy_upstream_ms("-3") is None


# --- per request and per window ----------------------------------------------------------------


def test_per_request_aligned_with_nan_where_absent() -> None:
    values: dict[str, list[str | None]] = {
        "server-timing": ["pre;dur=10, inf;dur=20", None, "inf;dur=5, db;dur=1, db;dur=2", "x"],
    }
    per = per_request_server_timing(values)
    assert set(per) == {"pre", "inf", "db"}
    np.testing.assert_array_equal(per["pre"], [10.0, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(per["inf"], [20.0, np.nan, 5.0, np.nan])
    np.testing.assert_array_equal(per["db"], [np.nan, np.nan, 3.0, np.nan])  # summed
    assert per_request_server_timing({}) == {}


def test_hop_times_use_configured_header_names() -> None:
    options = ProbeOptions(server_timing_header="x-st", lb_timers_header="x-lb")
    values: dict[str, list[str | None]] = {
        "x-st": ["pre;dur=4", "pre;dur=6"],
        "x-lb": ["1/0/9", None],
        "x-upstream-header-time": ["0.010", "0.020"],
        "x-envoy-upstream-service-time": [None, "7"],
        "server-timing": ["ignored;dur=1", None],
    }
    per = per_request_hop_times(values, options)
    assert set(per) == {"server_timing.pre", "lb_queue_ms", "lb_connect_ms", "lb_response_ms",
                        "upstream_ms", "envoy_upstream_ms"}  # fmt: skip
    np.testing.assert_array_equal(per["lb_queue_ms"], [1.0, np.nan])
    np.testing.assert_allclose(per["upstream_ms"], [10.0, 20.0])


def test_summary_distributions() -> None:
    rng = np.random.default_rng(7)
    pre = rng.uniform(5, 15, size=500)
    values: dict[str, list[str | None]] = {
        "server-timing": [f"pre;dur={p:.3f}, inf;dur=20" for p in pre],
        "x-haproxy-timers": ["2/0/30"] * 500,
        "x-replica": ["r1", "r2"] * 250,
    }
    summary = summarize_hop_headers(values, ProbeOptions())
    assert summary["requests"] == 500
    assert summary["present"] == {"server-timing": 500, "x-haproxy-timers": 500, "x-replica": 500}
    st_pre = summary["server_timing"]["pre"]
    assert st_pre["count"] == 500
    assert st_pre["p50"] == pytest.approx(np.percentile(pre, 50), abs=1e-3)
    assert st_pre["p99"] == pytest.approx(np.percentile(pre, 99), abs=1e-3)
    assert summary["server_timing"]["inf"]["mean"] == pytest.approx(20.0)
    assert summary["lb_queue_ms"]["p90"] == 2.0
    assert summary["lb_response_ms"]["max"] == 30.0
    assert summary["replicas"] == {"r1": 250, "r2": 250}
    assert "upstream_ms" not in summary  # never present → left out


def test_distribution_empty() -> None:
    assert distribution([]) == {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None,
                                "max": None}  # fmt: skip
    assert distribution([np.nan, 1.0])["count"] == 1
