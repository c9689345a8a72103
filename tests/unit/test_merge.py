"""Merging worker results: exact for raw records, within the stated precision for histograms."""

from __future__ import annotations

import numpy as np
import pytest

from pathprobe.config import LoadProfile
from pathprobe.load.merge import merge_results
from pathprobe.load.schedule import plan_step
from pathprobe.load.workers import share, split_plan
from pathprobe.model.histograms import (
    HDR_RELATIVE_PRECISION,
    bucket_floor_ns,
    histogram_ns,
    merge_histograms,
    nearest_rank_ns,
    percentile_ns,
)
from pathprobe.model.records import empty_records
from pathprobe.model.results import StepResult

START_NS = 10**12


def fake_part(seqs: np.ndarray, rng: np.random.Generator, replicas: list[str]) -> StepResult:
    recs = empty_records(len(seqs))
    recs["seq"] = seqs
    recs["intended_ns"] = START_NS + seqs * 1_000_000
    recs["actual_ns"] = recs["intended_ns"] + rng.integers(0, 50_000, len(seqs))
    recs["end_ns"] = recs["actual_ns"] + rng.lognormal(15, 1, len(seqs)).astype(np.int64)
    recs["status"] = 200
    recs["replica"] = rng.integers(0, len(replicas), len(seqs))
    # Engines return records sorted by seq.
    recs = recs[np.argsort(recs["seq"])]
    return StepResult(
        path="direct", url="http://127.0.0.1:1/", step=0, offered_rps=1000.0, concurrency=None,
        engine="fast", records=recs, first_measured_seq=0, start_ns=START_NS,
        measured_start_ns=START_NS + 100_000_000, measured_end_ns=START_NS + 10**9,
        replicas=replicas, headers={"x-h": [f"v{s}" for s in recs["seq"].tolist()]},
        loop_lag_ns=rng.integers(0, 10**6, 5),
    )  # fmt: skip


def test_raw_merge_is_exact() -> None:
    rng = np.random.default_rng(3)
    seqs = rng.permutation(3000)
    parts_seqs = [np.sort(seqs[k::3]) for k in range(3)]
    parts = [
        fake_part(parts_seqs[0], rng, ["a", "b"]),
        fake_part(parts_seqs[1], rng, ["b", "c"]),
        fake_part(parts_seqs[2], rng, ["c"]),
    ]
    merged = merge_results(parts, first_measured_seq=100)
    assert merged.records["seq"].tolist() == list(range(3000))
    everything = np.concatenate([p.records for p in parts])
    lat_all = everything["end_ns"] - everything["intended_ns"]
    lat_merged = merged.records["end_ns"] - merged.records["intended_ns"]
    for q in (50, 90, 99, 99.9, 100):
        assert np.percentile(lat_merged, q) == np.percentile(lat_all, q)
    # Replica names are united and each record still names the replica it named before.
    assert merged.replicas == ["a", "b", "c"]
    names_before = {int(r["seq"]): p.replicas[r["replica"]] for p in parts for r in p.records}
    names_after = {int(r["seq"]): merged.replicas[r["replica"]] for r in merged.records}
    assert names_after == names_before
    # Captured headers follow their records.
    assert merged.headers["x-h"] == [f"v{s}" for s in range(3000)]
    assert len(merged.loop_lag_ns) == 15
    assert merged.first_measured_seq == 100
    assert merged.start_ns == START_NS


def test_closed_loop_merge_renumbers_in_sending_order() -> None:
    rng = np.random.default_rng(4)
    a = fake_part(np.arange(10), rng, ["a"])
    b = fake_part(np.arange(10), rng, ["a"])
    b.records["intended_ns"] += 500_000  # worker b sent each of its requests half a gap later
    b.records["actual_ns"] += 500_000
    a.concurrency = b.concurrency = 3
    a.measured_start_ns = b.measured_start_ns = START_NS + 4_200_000
    merged = merge_results([a, b], renumber=True)
    assert merged.records["seq"].tolist() == list(range(20))
    assert (np.diff(merged.records["intended_ns"]) > 0).all()
    assert merged.concurrency == 6
    # The first measured request: sent at or after the end of the warm-up.
    assert merged.first_measured_seq == 9  # a's 5th (4.0 ms) is warm-up, b's 5th (4.5 ms) is not
    first = merged.records[merged.first_measured_seq]
    assert first["intended_ns"] >= merged.measured_start_ns
    assert merged.records[merged.first_measured_seq - 1]["intended_ns"] < merged.measured_start_ns


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_histogram_percentiles_within_stated_precision(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Latencies from 1 µs to ~30 s, heavy-tailed, in three "workers".
    values = np.concatenate([rng.lognormal(14, 2.5, 40_000), rng.integers(0, 3000, 1000)]).astype(
        np.int64
    )
    parts = np.array_split(rng.permutation(values), 3)
    merged = merge_histograms([histogram_ns(p) for p in parts])
    assert merged.get_total_count() == len(values)
    for q in (1, 50, 90, 99, 99.9, 99.99, 100):
        exact = nearest_rank_ns(values, q)
        got = percentile_ns(merged, q)
        assert exact <= got <= exact * (1 + HDR_RELATIVE_PRECISION) + 1, (q, exact, got)


def test_histogram_of_merged_equals_merged_histograms() -> None:
    rng = np.random.default_rng(9)
    a = rng.lognormal(12, 1, 5000).astype(np.int64)
    b = rng.lognormal(13, 1, 5000).astype(np.int64)
    whole = histogram_ns(np.concatenate([a, b]))
    merged = merge_histograms([histogram_ns(a), histogram_ns(b)])
    for q in (10, 50, 90, 99, 99.9):
        assert percentile_ns(whole, q) == percentile_ns(merged, q)


def test_bucket_floor_stays_in_the_same_bucket() -> None:
    hist = histogram_ns(np.zeros(0, np.int64))
    values = np.array([0, 1, 2047, 2048, 2049, 4095, 4096, 123_456_789, 2**40 - 1], np.int64)
    for value, floor in zip(values.tolist(), bucket_floor_ns(values).tolist(), strict=True):
        assert floor <= value
        assert hist.get_lowest_equivalent_value(value) == hist.get_lowest_equivalent_value(floor)
    assert histogram_ns(np.array([-1, -1, 5], np.int64)).get_total_count() == 1


def test_split_plan_round_robin_covers_the_plan() -> None:
    prof = LoadProfile(rates=(1000.0,), concurrency=None, duration_s=1.0, warmup_s=0.2)
    plan = plan_step(prof, 0, 4, cycle=False)
    assert plan.offsets_ns is not None
    slices = split_plan(plan, 3)
    offsets = np.concatenate([s.offsets_ns for s in slices if s.offsets_ns is not None])
    assert sorted(offsets.tolist()) == plan.offsets_ns.tolist()
    for k, part in enumerate(slices):
        assert part.offsets_ns is not None
        np.testing.assert_array_equal(part.offsets_ns, plan.offsets_ns[k::3])
        np.testing.assert_array_equal(part.payload_idx, plan.payload_idx[k::3])
    closed = plan_step(LoadProfile(rates=None, concurrency=7), 0, 0, cycle=False)
    assert [p.concurrency for p in split_plan(closed, 3)] == [3, 2, 2]
    assert [share(2, k, 3) for k in range(3)] == [1, 1, 0]
