"""Paired hop deltas with bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np
import pytest

from pathprobe.analysis.deltas import (
    hop_delta_entry,
    pair_by_seq,
    paired_quantile_delta,
    tail_percentile,
)


def test_pairs_only_common_sequence_numbers_in_order() -> None:
    seq, a, b = pair_by_seq(
        np.array([3, 1, 2]),
        np.array([30.0, 10.0, 20.0]),
        np.array([2, 3, 9]),
        np.array([2.0, 3.0, 9.0]),
    )
    assert seq.tolist() == [2, 3]
    assert a.tolist() == [20.0, 30.0]
    assert b.tolist() == [2.0, 3.0]


def test_known_shift_lies_inside_a_tight_interval() -> None:
    rng = np.random.default_rng(3)
    inner = rng.lognormal(3.0, 0.4, 2000)
    outer = inner + 25.0 + rng.normal(0, 1.0, 2000)
    d = paired_quantile_delta(inner, outer, 50.0, seed=1)
    assert d.ci_low_ms < 25.0 < d.ci_high_ms
    assert d.ci_high_ms - d.ci_low_ms < 3.0
    assert d.clears(10.0)


def test_no_shift_does_not_clear_zero() -> None:
    rng = np.random.default_rng(4)
    inner = rng.lognormal(3.0, 0.5, 300)
    outer = inner * rng.normal(1.0, 0.05, 300)
    d = paired_quantile_delta(inner, outer, 99.0, seed=2)
    assert d.ci_low_ms <= 0.0 <= d.ci_high_ms
    assert not d.clears(1.0)


def test_bootstrap_is_seeded() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(50, 5, 200)
    y = x + rng.normal(3, 2, 200)
    one = paired_quantile_delta(x, y, 95.0, seed=9)
    two = paired_quantile_delta(x, y, 95.0, seed=9)
    assert (one.ci_low_ms, one.ci_high_ms) == (two.ci_low_ms, two.ci_high_ms)


@pytest.mark.parametrize(
    ("n", "label"),
    [(10_000, "p99"), (500, "p99"), (499, "p95"), (100, "p95"), (60, "p90"), (5, "p90")],
)
def test_tail_percentile_needs_five_requests_above_it(n: int, label: str) -> None:
    assert tail_percentile(n)[0] == label


def test_entry_has_the_report_keys() -> None:
    seq = np.arange(300)
    base = np.linspace(10, 40, 300)
    e = hop_delta_entry("proxy", "direct", "proxy", (seq, base), (seq, base + 5.0))
    assert e is not None
    assert e["p50_ms"] == pytest.approx(5.0, abs=0.01)
    assert e["tail_label"] == "p95"
    assert set(e) >= {
        "hop",
        "from",
        "to",
        "p50_ms",
        "p50_ci_ms",
        "tail_ms",
        "tail_ci_ms",
        "tail_label",
    }
    assert hop_delta_entry("proxy", "a", "b", (seq[:1], base[:1]), (seq[:1], base[:1])) is None


def test_closed_loop_seq_ranges_that_barely_overlap_fall_back_to_unpaired() -> None:
    rng = np.random.default_rng(6)
    inner = (np.arange(100, 400), rng.normal(45, 3, 300))
    outer = (np.arange(8, 120), rng.normal(400, 20, 112))
    e = hop_delta_entry("proxy", "direct", "proxy", inner, outer)
    assert e is not None
    assert e["paired"] is False
    assert e["p50_ci_ms"][0] < 355 < e["p50_ci_ms"][1]
