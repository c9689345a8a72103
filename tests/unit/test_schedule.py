"""The step plan: counts, spacing, Poisson statistics, determinism, warm-up split, payloads."""

from __future__ import annotations

import numpy as np
import pytest

from pathprobe.config import LoadProfile
from pathprobe.load.schedule import (
    CLOSED_LOOP_PAYLOAD_CHOICES,
    NS_PER_S,
    arrival_offsets_ns,
    plan_step,
)


def profile(**kw: object) -> LoadProfile:
    base: dict[str, object] = {"rates": (100.0,), "concurrency": None, "duration_s": 10.0}
    base.update(kw)
    return LoadProfile(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("rate", "span_s", "count"), [(100, 10, 1000), (3, 1, 3), (7, 2, 14)])
def test_uniform_count_and_gaps(rate: float, span_s: float, count: int) -> None:
    offsets = arrival_offsets_ns(rate, int(span_s * NS_PER_S), "uniform", np.random.default_rng(0))
    assert len(offsets) == count
    assert offsets[0] == 0
    gaps = np.diff(offsets)
    # Rounded to the nanosecond: every gap is the ideal one within 1 ns.
    assert np.abs(gaps - NS_PER_S / rate).max() <= 1.0
    assert offsets[-1] < span_s * NS_PER_S


def test_uniform_non_integer_gap_does_not_drift() -> None:
    offsets = arrival_offsets_ns(3.0, 10 * NS_PER_S, "uniform", np.random.default_rng(0))
    assert len(offsets) == 30
    assert offsets[-1] == round(29 * NS_PER_S / 3)


def test_poisson_mean_and_variance_of_gaps() -> None:
    rate = 200.0
    offsets = arrival_offsets_ns(rate, 200 * NS_PER_S, "poisson", np.random.default_rng(42))
    gaps = np.diff(offsets) / NS_PER_S
    mean_gap = 1 / rate
    # 40,000 exponential gaps: the sample mean is within ~0.5 % (1 sigma) of 1/rate, the
    # variance of 1/rate²; 3 % leaves a wide margin for any seed.
    assert gaps.mean() == pytest.approx(mean_gap, rel=0.03)
    assert gaps.var() == pytest.approx(mean_gap**2, rel=0.06)
    # Counts per second of a Poisson process: mean = variance = rate.
    counts = np.bincount((offsets // NS_PER_S).astype(np.int64), minlength=200)
    assert counts.mean() == pytest.approx(rate, rel=0.03)
    assert counts.var() == pytest.approx(rate, rel=0.35)
    assert (offsets >= 0).all()
    assert (np.diff(offsets) >= 0).all()
    assert offsets[-1] < 200 * NS_PER_S


def test_poisson_fills_the_whole_span_even_when_the_first_draw_falls_short() -> None:
    offsets = arrival_offsets_ns(1.0, 60 * NS_PER_S, "poisson", np.random.default_rng(7))
    assert offsets[-1] < 60 * NS_PER_S
    assert offsets[-1] > 40 * NS_PER_S


def test_plan_is_deterministic_in_the_seed() -> None:
    prof = profile(arrival="poisson", seed=5)
    a = plan_step(prof, 0, 8, cycle=False)
    b = plan_step(prof, 0, 8, cycle=False)
    assert a.offsets_ns is not None
    assert b.offsets_ns is not None
    np.testing.assert_array_equal(a.offsets_ns, b.offsets_ns)
    np.testing.assert_array_equal(a.payload_idx, b.payload_idx)
    c = plan_step(profile(arrival="poisson", seed=6), 0, 8, cycle=False)
    assert c.offsets_ns is not None
    assert not np.array_equal(a.offsets_ns[:50], c.offsets_ns[:50])
    # Each step has its own sequence.
    d = plan_step(profile(arrival="poisson", seed=5, rates=(100.0, 100.0)), 1, 8, cycle=False)
    assert d.offsets_ns is not None
    assert not np.array_equal(a.offsets_ns[:50], d.offsets_ns[:50])


def test_warmup_split() -> None:
    plan = plan_step(profile(rates=(100.0,), warmup_s=1.0, duration_s=5.0), 0, 0, cycle=False)
    assert plan.offsets_ns is not None
    assert len(plan.offsets_ns) == 600
    assert plan.first_measured_seq == 100
    assert plan.offsets_ns[plan.first_measured_seq] == plan.warmup_ns
    assert plan.offsets_ns[plan.first_measured_seq - 1] < plan.warmup_ns
    assert plan.total_ns == 6 * NS_PER_S
    no_warmup = plan_step(profile(warmup_s=0.0, duration_s=1.0), 0, 0, cycle=False)
    assert no_warmup.first_measured_seq == 0


def test_payload_choice_cycle_and_random() -> None:
    cyc = plan_step(profile(duration_s=1.0, warmup_s=0.0), 0, 3, cycle=True)
    assert cyc.payload_idx[:7].tolist() == [0, 1, 2, 0, 1, 2, 0]
    rnd = plan_step(profile(duration_s=10.0, warmup_s=0.0), 0, 4, cycle=False)
    assert set(rnd.payload_idx.tolist()) == {0, 1, 2, 3}
    assert rnd.offsets_ns is not None
    assert len(rnd.payload_idx) == len(rnd.offsets_ns)
    empty = plan_step(profile(), 0, 0, cycle=False)
    assert empty.payload_for(5) == -1


def test_closed_loop_plan() -> None:
    plan = plan_step(profile(rates=None, concurrency=8), 0, 5, cycle=False)
    assert plan.offsets_ns is None
    assert plan.offered_rps is None
    assert plan.concurrency == 8
    assert plan.first_measured_seq == 0
    assert len(plan.payload_idx) == CLOSED_LOOP_PAYLOAD_CHOICES
    assert plan.payload_for(CLOSED_LOOP_PAYLOAD_CHOICES + 3) == plan.payload_for(3)
