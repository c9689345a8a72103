"""Percentile summaries and histograms."""

from __future__ import annotations

import numpy as np

from pathprobe.analysis.stats import log_histogram, percentile_summary, quick_summary


def test_percentiles_are_observed_values_at_or_above_the_rank() -> None:
    values = np.arange(1, 1001, dtype=np.float64)  # 1..1000 ms
    summary = percentile_summary(values)
    assert summary == {"p50": 501.0, "p90": 901.0, "p99": 991.0, "p99.9": 1000.0, "max": 1000.0}


def test_empty_and_non_finite_values() -> None:
    assert percentile_summary([]) == dict.fromkeys(("p50", "p90", "p99", "p99.9", "max"))
    assert percentile_summary([np.nan, 5.0, np.inf])["max"] == 5.0
    quick = quick_summary([1.0, 3.0])
    assert quick["mean"] == 2.0
    assert quick["count"] == 2


def test_log_histogram_counts_every_positive_value() -> None:
    rng = np.random.default_rng(0)
    values = rng.lognormal(mean=3, sigma=1, size=5000)
    hist = log_histogram(values)
    assert sum(hist["counts"]) == 5000
    edges = np.array(hist["edges_ms"])
    assert edges[0] <= values.min()
    assert edges[-1] >= values.max()
    ratios = edges[1:] / edges[:-1]
    assert np.allclose(ratios, ratios[0], rtol=1e-3)  # log-spaced
