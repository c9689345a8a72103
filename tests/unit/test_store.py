"""The record store: exact tallies of every request, rows kept whole up to a cap, then thinned."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from pathprobe.analysis.steps import step_summary
from pathprobe.load.merge import merge_results
from pathprobe.load.store import BoundedSamples, RecordStore, kept_mask, sample_key, sample_keys
from pathprobe.model.histograms import HDR_RELATIVE_PRECISION, nearest_rank_ns
from pathprobe.model.records import RECORD_DTYPE, ErrorKind, Records
from pathprobe.model.results import StepResult, tally_records

START_NS = 10**12
GAP_NS = 1_000_000  # 1000 requests/s
WARMUP_NS = 200 * GAP_NS
FIELDS = RECORD_DTYPE.names or ()


def rows(n: int, seed: int) -> list[tuple[int, ...]]:
    """``n`` finished requests of an open-loop window in RECORD_DTYPE column order: mostly 200s,
    some 503s, some resets, a few requests that opened a connection."""
    rng = np.random.default_rng(seed)
    out = []
    for seq in range(n):
        intended = START_NS + seq * GAP_NS
        actual = intended + int(rng.integers(0, 50_000))
        end = actual + int(rng.lognormal(15, 1))
        draw = rng.random()
        status, error = (200, 0) if draw < 0.9 else (503, 0) if draw < 0.97 else (0, 3)
        connect = int(rng.integers(10_000, 90_000)) if seq % 50 == 0 else -1
        out.append(
            (
                seq, intended, actual, -1, connect, -1, 5_000 if status else -1, end, status,
                error, 1000 + seq % 7, 200 if status else 0, seq % 5, -1,
            )
        )  # fmt: skip
    return out


def as_records(table: list[tuple[int, ...]]) -> Records:
    return np.array(table, dtype=RECORD_DTYPE)


def filled_store(n: int, cap: int, seed: int = 1, **kw: int) -> RecordStore:
    store = RecordStore(FIELDS, cap, **kw)
    store.begin(START_NS + WARMUP_NS, START_NS + n * GAP_NS)
    for row in rows(n, seed):
        store.add(row, [f"h{row[0]}"])
    return store


def result_of(store: RecordStore, n: int) -> StepResult:
    records = store.records()
    return StepResult(
        path="direct", url="http://127.0.0.1:1/", step=0, offered_rps=1000.0, concurrency=None,
        engine="fast", records=records, first_measured_seq=200, start_ns=START_NS,
        measured_start_ns=START_NS + WARMUP_NS, measured_end_ns=START_NS + n * GAP_NS,
        headers=store.header_columns(records, ["x-h"]), tally=store.tally,
        sample_stride=store.stride,
    )  # fmt: skip


def test_below_the_cap_every_row_is_kept() -> None:
    store = filled_store(5000, cap=8192)
    records = store.records()
    assert store.stride == 1
    assert records["seq"].tolist() == list(range(5000))
    assert store.header_columns(records, ["x-h"])["x-h"] == [f"h{s}" for s in range(5000)]


def test_above_the_cap_rows_are_thinned_and_counts_stay_exact() -> None:
    n = 40_000
    store = filled_store(n, cap=4096)
    records = store.records()
    assert store.stride >= 8  # 40 000 rows into 4 096
    assert len(records) <= 4096
    # The kept rows are exactly those the rule keeps, in seq order, with their own headers.
    every = as_records(rows(n, 1))
    expect = every[kept_mask(every["seq"], store.stride)]
    assert records.tobytes() == expect.tobytes()
    assert store.header_columns(records, ["x-h"])["x-h"] == [f"h{s}" for s in expect["seq"]]
    # ... about one in ``stride`` of them (the rule is a hash of seq, not exactly periodic).
    assert len(every) / store.stride * 0.8 < len(records) < len(every) / store.stride * 1.2
    # The tally counted every request, as if nothing had been thinned.
    full = tally_records(every, START_NS + WARMUP_NS, START_NS + n * GAP_NS)
    t = store.tally
    for name in ("requests", "responses", "bytes_out", "bytes_in", "connections_opened",
                 "in_window", "all_requests", "all_connections_opened", "errors"):  # fmt: skip
        assert getattr(t, name) == getattr(full, name), name
    assert t.requests == n - 200
    assert t.errors_by_kind == full.errors_by_kind
    assert set(t.errors_by_kind) == {ErrorKind.RESET, ErrorKind.HTTP_5XX}
    assert t.status_codes == full.status_codes
    assert t.latency_ns.get_total_count() == full.responses


def test_thinned_summary_matches_the_full_one() -> None:
    n = 40_000
    thinned = result_of(filled_store(n, cap=4096), n)
    whole = result_of(filled_store(n, cap=n), n)
    assert thinned.sample_stride > 1
    assert whole.sample_stride == 1
    a, b = step_summary(thinned, None), step_summary(whole, None)
    for key in ("requests", "responses", "errors", "error_rate", "errors_by_kind",
                "status_codes", "bytes_out", "bytes_in", "connections_opened", "achieved_rps",
                "cancelled"):  # fmt: skip
        assert a[key] == b[key], key
    # Latency percentiles from the tally's histogram: within its stated precision of the exact
    # nearest-rank percentile of every measured response.
    ok = whole.records[(whole.records["seq"] >= 200) & (whole.records["status"] > 0)]
    lat_ns = ok["end_ns"] - ok["intended_ns"]
    for key, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9), ("max", 100)):
        exact = nearest_rank_ns(lat_ns, q) / 1e6
        got = a["latency_ms"][key]
        assert exact - 1e-4 <= got <= exact * (1 + HDR_RELATIVE_PRECISION) + 1e-4, key
    assert a["sample_stride"] == thinned.sample_stride
    assert a["records_kept"] == len(thinned.records)
    # The timeline's rate is scaled back up: about the 1000/s that was sent.
    rates = [p["rps"] for p in a["timeline"][1:-1]]
    assert 800 < float(np.median(rates)) < 1200


def test_paths_with_different_strides_still_pair() -> None:
    small, large = filled_store(10_000, cap=4096), filled_store(40_000, cap=4096)
    assert large.stride > small.stride
    kept_small = set(small.records()["seq"].tolist())
    kept_large = set(large.records()["seq"].tolist())
    # Every seq the coarser window kept below 10 000, the finer one kept too.
    assert {s for s in kept_large if s < 10_000} <= kept_small


def test_workers_thin_their_slices_into_one_sample() -> None:
    n, count = 40_000, 2
    every = rows(n, 3)
    parts = []
    for k in range(count):
        # Worker k sends plan seqs k, k+2, ...; its own seq j is plan seq j*count + k.
        store = RecordStore(FIELDS, 2048, seq_scale=count, seq_offset=k)
        store.begin(START_NS + WARMUP_NS, START_NS + n * GAP_NS)
        for j, row in enumerate(every[k::count]):
            store.add((j, *row[1:]), [f"h{row[0]}"])
        part = result_of(store, n)
        part.records["seq"] = part.records["seq"] * count + k  # as workers.run_slice does
        parts.append(part)
    merged = merge_results(parts, first_measured_seq=200)
    stride = max(p.sample_stride for p in parts)
    assert merged.sample_stride == stride
    full = as_records(every)
    expect = full[kept_mask(full["seq"], stride)]
    assert merged.records["seq"].tolist() == expect["seq"].tolist()
    assert merged.headers["x-h"] == [f"h{s}" for s in expect["seq"]]
    assert merged.tally is not None
    assert merged.tally.all_requests == n
    assert merged.tally.requests == n - 200


def test_tally_survives_pickling() -> None:
    store = filled_store(3000, cap=8192)
    back = pickle.loads(pickle.dumps(store.tally))
    assert back.requests == store.tally.requests
    assert back.errors_by_kind == store.tally.errors_by_kind
    assert back.latency_ns.get_total_count() == store.tally.latency_ns.get_total_count()
    assert back.latency_ns.get_value_at_percentile(99) == (
        store.tally.latency_ns.get_value_at_percentile(99)
    )


def test_sample_key_scalar_and_vector_agree() -> None:
    seqs = np.array([0, 1, 2, 3, 1000, 2**40 + 7, 123_456_789], dtype=np.int64)
    assert sample_keys(seqs).tolist() == [sample_key(int(s)) for s in seqs]
    # Nested: what a stride keeps, every smaller stride keeps too.
    many = np.arange(100_000, dtype=np.int64)
    for stride in (2, 4, 8, 16):
        assert not (kept_mask(many, stride) & ~kept_mask(many, stride // 2)).any()


def test_bounded_samples_thin_evenly() -> None:
    samples = BoundedSamples(cap=100)
    for i in range(1000):
        samples.append(i)
    values = samples.array()
    assert len(values) < 100
    assert samples.stride == 16
    assert values.tolist() == list(range(0, 1000, 16))


def test_bad_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="bad row fields"):
        RecordStore(("intended_ns", "seq"))
    with pytest.raises(ValueError, match="bad row fields"):
        RecordStore(("seq", "nope"))
