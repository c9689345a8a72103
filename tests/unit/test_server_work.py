"""The header-less server split: uncontended work measured by pathprobe itself (pure parts)."""

from __future__ import annotations

import numpy as np
import pytest

from pathprobe.analysis.server_work import (
    fit_work_model,
    in_flight_at_send,
    split_work_and_wait,
)
from pathprobe.analysis.stats import wilson_interval


def test_in_flight_counts_requests_sent_before_and_not_yet_done() -> None:
    # Request 0: 0-10, 1: 5-20, 2: 12-13, 3: 30-31 (ns).
    actual = np.array([0, 5, 12, 30])
    end = np.array([10, 20, 13, 31])
    assert in_flight_at_send(actual, end).tolist() == [0, 1, 1, 0]


def test_fit_recovers_size_slope_and_intercept() -> None:
    rng = np.random.default_rng(3)
    size = rng.uniform(20_000, 200_000, 40)
    work = 12.0 + 0.0005 * size + rng.normal(0, 0.5, 40)
    model = fit_work_model(size, work)
    assert model is not None
    assert model.ms_per_byte == pytest.approx(0.0005, rel=0.05)
    assert model.intercept_ms == pytest.approx(12.0, abs=1.5)
    assert 0.0 < model.tolerance_ms < 2.0


def test_fit_without_size_spread_is_size_independent() -> None:
    model = fit_work_model(np.full(10, 5000.0), np.linspace(40, 50, 10))
    assert model is not None
    assert model.ms_per_byte == 0.0
    assert model.intercept_ms == pytest.approx(45.0)


def test_fit_of_nothing_is_none() -> None:
    assert fit_work_model(np.zeros(0), np.zeros(0)) is None


def test_split_charges_waiting_only_to_requests_that_found_others() -> None:
    model = fit_work_model(np.full(8, 1000.0), np.full(8, 40.0))
    assert model is not None
    server = np.array([40.0, 240.0, 240.0])
    found_empty = np.array([True, False, True])
    work, wait = split_work_and_wait(server, np.full(3, 1000.0), found_empty, model)
    assert wait.tolist() == [0.0, 200.0, 0.0]
    assert (work + wait).tolist() == server.tolist()


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [(12, 13, 0.667, 0.986), (7, 13, 0.291, 0.768), (0, 10, 0.0, 0.278), (5, 5, 0.566, 1.0)],
)
def test_wilson_interval_matches_published_values(k: int, n: int, low: float, high: float) -> None:
    # Reference values: Wilson score interval, z = 1.96 (e.g. Newcombe 1998, Table I method 3).
    got = wilson_interval(k, n)
    assert got[0] == pytest.approx(low, abs=0.002)
    assert got[1] == pytest.approx(high, abs=0.002)


def test_one_cold_start_in_the_baseline_does_not_hide_waiting() -> None:
    # Seven baseline requests of ~40 ms, the first of which loaded the model lazily (2 s).
    work = np.array([2000.0, 40.0, 41.0, 39.0, 40.5, 40.0, 39.5])
    model = fit_work_model(np.full(7, 1000.0), work)
    assert model is not None
    assert model.tolerance_ms < 5.0
    _, wait = split_work_and_wait(np.array([240.0]), np.array([1000.0]), np.array([False]), model)
    assert wait[0] == pytest.approx(200.0, abs=5.0)
