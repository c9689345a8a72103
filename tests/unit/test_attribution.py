"""Per-request decomposition and the percentile definition of "explains" (design.md §4)."""

from __future__ import annotations

import numpy as np
import pytest
from attribution_fakes import HOPS, Parts, make_step

from pathprobe.analysis.decompose import (
    decompose,
    loss_stalls_ms,
    metric_stage,
    quantile_matched,
    transfer_slope_ms_per_byte,
    wire_at_ranks,
    wire_upload_ms,
)
from pathprobe.analysis.evidence import ServerEvidence
from pathprobe.analysis.server_split import reassign_waiting
from pathprobe.analysis.stage_means import map_to_stages
from pathprobe.config import ProbeOptions
from pathprobe.decode.hopheaders import per_request_hop_times
from pathprobe.model.results import header_values, measured


def dec_of(path: str, parts: Parts, rtt: float = 0.0, slope: float = 0.0):  # noqa: ANN201
    res = make_step(path, 0, 400, 50.0, parts, HOPS[path])
    times = per_request_hop_times({h: header_values(res, h) for h in res.headers}, ProbeOptions())
    return decompose(path, measured(res), times, HOPS[path], rtt_ms=rtt, slope_ms_per_byte=slope)


def test_components_add_up_to_the_latency() -> None:
    rng = np.random.default_rng(1)
    parts = Parts(
        slip=rng.uniform(0, 2, 400),
        pool=rng.uniform(0, 3, 400),
        lb=rng.uniform(0, 50, 400),
        proxy=rng.uniform(0, 20, 400),
        queue=rng.uniform(0, 30, 400),
    )
    d = dec_of("lb", parts, rtt=0.2)
    assert d.check() < 1e-6
    assert d.hop_source == {"lb": "header", "proxy": "header"}
    assert np.mean(d.components["lb"]) == pytest.approx(25.0, rel=0.1)
    assert np.mean(d.components["proxy"]) == pytest.approx(10.0, rel=0.15)
    assert np.mean(d.components["preprocessing"]) == pytest.approx(2.0, rel=0.05)


def test_without_headers_the_hop_comes_from_the_quantile_matched_delta() -> None:
    inner = dec_of("direct", Parts(server_timing=False))
    res = make_step(
        "proxy",
        0,
        400,
        50.0,
        Parts(proxy=30.0, proxy_header=False, server_timing=False),
        HOPS["proxy"],
    )
    d = decompose(
        "proxy", measured(res), {}, ["proxy"], rtt_ms=0.0, inner_totals={"proxy": inner.total_ms}
    )
    assert d.hop_source["proxy"] == "delta"
    assert np.mean(d.components["proxy"]) == pytest.approx(30.0, abs=0.5)
    assert "server" in d.components  # unsplit without Server-Timing


def test_quantile_matching_pairs_ranks() -> None:
    outer = np.array([5.0, 1.0, 3.0])
    inner = np.array([10.0, 30.0, 20.0])
    assert quantile_matched(outer, inner).tolist() == pytest.approx([26.67, 13.33, 20.0], abs=0.01)


@pytest.mark.parametrize(
    ("name", "stage"),
    [
        ("preprocess", "preprocessing"),
        ("prep", "preprocessing"),
        ("decode", "preprocessing"),
        ("inference", "inference"),
        ("model", "inference"),
        ("gpu", "inference"),
        ("db", "server_other"),
        ("total", None),
    ],
)
def test_metric_names_map_by_meaning(name: str, stage: str | None) -> None:
    assert metric_stage(name) == stage


def test_bandwidth_slope_is_found_and_loopback_is_not() -> None:
    rng = np.random.default_rng(2)
    size = rng.uniform(10_000, 200_000, 300)
    slow = size * 8 / 2e6 * 1000  # 2 Mbit/s, ms
    assert transfer_slope_ms_per_byte(size, slow + rng.exponential(5, 300)) == pytest.approx(
        8 / 2e6 * 1000, rel=0.1
    )
    assert transfer_slope_ms_per_byte(np.full(300, 5000.0), rng.exponential(5, 300)) == 0.0


def test_server_queue_splits_into_cpu_contention_and_concurrency() -> None:
    means = {"server_queue": 100.0, "preprocessing": 20.0}
    shares = {"preprocessing": 0.8, "framework": 0.2}
    # CPU 10 % busy, 5 ms CPU per request: contention explains 5·0.1/0.9 ≈ 0.56 ms of waiting.
    idle = ServerEvidence(
        available=True,
        cores_used=0.1,
        cores_available=1.0,
        stage_share=shares,
        samples=4000,
        cpu_ms_per_request=5.0,
    )
    a = map_to_stages(means, idle, False)
    assert a["server_concurrency"] == pytest.approx(100.0 - 5.0 * 0.1 / 0.9)
    # CPU 60 % busy, 60 ms CPU per request: contention alone waits 90 ms of the 100.
    busy = ServerEvidence(
        available=True,
        cores_used=0.6,
        cores_available=1.0,
        stage_share=shares,
        samples=4000,
        cpu_ms_per_request=60.0,
    )
    b = map_to_stages(means, busy, False)
    assert b["server_concurrency"] == pytest.approx(10.0)
    assert b["preprocessing"] == pytest.approx(20.0 + 0.8 * 90.0)
    assert b["framework"] == pytest.approx(0.2 * 90.0)
    # Saturated: every wait is for the CPU.
    full = ServerEvidence(
        available=True, cores_used=1.0, cores_available=1.0, stage_share=shares, samples=4000
    )
    c = map_to_stages(means, full, False)
    assert "server_concurrency" not in c
    # No server probe: nothing says the CPU was busy; waiting is the concurrency limit's.
    assert map_to_stages(means, ServerEvidence(), False)["server_concurrency"] == pytest.approx(
        100.0
    )


def test_pool_wait_is_charged_to_whoever_held_the_connections() -> None:
    out = map_to_stages(
        {"pool_wait": 30.0, "proxy": 60.0, "inference": 30.0, "client": 1.0},
        ServerEvidence(),
        False,
    )
    assert out["proxy"] == pytest.approx(80.0)
    assert out["inference"] == pytest.approx(40.0)
    assert out["client"] == 1.0
    assert "pool_wait" not in out


def test_awaiting_span_time_beyond_its_uncontended_value_is_waiting() -> None:
    # Inference awaits a device (flat 40 ms, no CPU); some requests' spans stretched because their
    # event loop was busy preprocessing others. The profile says the CPU went to preprocessing.
    rng = np.random.default_rng(3)
    inf = 40.0 + np.where(rng.random(400) < 0.5, rng.uniform(0, 300, 400), 0.0)
    d = dec_of("direct", Parts(pre=70.0, inf=inf, queue=1.0))
    server = ServerEvidence(
        available=True,
        cores_used=0.9,
        cores_available=1.0,
        samples=900,
        stage_share={"preprocessing": 0.95, "inference": 0.01, "framework": 0.04},
    )
    reassign_waiting(d, server)
    assert np.percentile(d.components["inference"], 90) == pytest.approx(40.0, abs=0.5)
    assert d.components["server_queue"].mean() > 70.0
    assert d.check() < 1e-6


def test_computing_span_keeps_its_size_dependent_time() -> None:
    rng = np.random.default_rng(4)
    pre = rng.uniform(10, 200, 400)  # grows with image size, all CPU
    d = dec_of("direct", Parts(pre=pre, inf=5.0))
    server = ServerEvidence(
        available=True,
        cores_used=0.5,
        cores_available=1.0,
        samples=900,
        stage_share={"preprocessing": 0.9, "inference": 0.05, "framework": 0.05},
    )
    before = d.components["preprocessing"].copy()
    reassign_waiting(d, server)
    assert np.array_equal(d.components["preprocessing"], before)


def test_client_overhead_beyond_the_wire_goes_to_the_client() -> None:
    # The app saw 8 ms more than the wire at every rank: the client's own delay reading replies.
    res = make_step("proxy", 0, 400, 50.0, Parts(proxy=5.0, queue=8.0, inf=20.0), HOPS["proxy"])
    times = per_request_hop_times({h: header_values(res, h) for h in res.headers}, ProbeOptions())
    # The wire saw the exchange without the client's 8 ms (the fake's "queue" stands in for it).
    wire = {"p50": 27.2, "p90": 27.2, "p99": 27.2, "count": 400}
    d = decompose("proxy", measured(res), times, ["proxy"], rtt_ms=0.2, wire_ttfb_ms=wire)
    assert np.mean(d.components["client"]) == pytest.approx(8.0, abs=0.3)
    assert d.check() < 1e-6
    few = {"p50": 1.0, "p90": 1.0, "p99": 1.0, "count": 3}  # too few samples: not used
    d2 = decompose("proxy", measured(res), times, ["proxy"], rtt_ms=0.2, wire_ttfb_ms=few)
    assert np.mean(d2.components["client"]) == pytest.approx(0.0, abs=1e-9)


def test_loss_stalls_go_to_the_slowest_requests_and_never_past_their_time() -> None:
    rng = np.random.default_rng(5)
    rest = rng.uniform(30.0, 50.0, 200)
    slow = rng.choice(200, 10, replace=False)
    rest[slow] += 200.0  # ten requests met an RTO
    stalls = {"exchanges": 400, "stalled": 20, "stalls_ms": [210.0] * 18 + [205.0, 5000.0]}
    out = loss_stalls_ms(rest, stalls)
    # 5 % of exchanges stalled -> 5 % of these 200 requests: the ten slowest, none other.
    assert set(np.flatnonzero(out)) == set(slow.tolist())
    assert (out <= rest).all()
    assert out.max() == pytest.approx(rest[slow].max())  # the 5 s stall is clipped to its request
    # Without a capture verdict (too few exchanges, none stalled, or nothing) nothing moves.
    for none in (None, {"exchanges": 5, "stalled": 1, "stalls_ms": [200.0]},
                 {"exchanges": 400, "stalled": 0, "stalls_ms": []}):  # fmt: skip
        assert not loss_stalls_ms(rest, none).any()


def test_wire_ttfb_is_matched_rank_for_rank_up_to_the_slowest() -> None:
    rng = np.random.default_rng(6)
    wire = np.sort(rng.uniform(30.0, 35.0, 100))
    wire[-1] = 250.0  # one exchange met a retransmission timeout
    app = rng.permutation(wire + 0.3)  # the application sees each a little later
    dist = {"count": 100, "p50": 32.0, "p90": 34.5, "p99": 35.0, "ranked_ms": wire.tolist()}
    matched = wire_at_ranks(app, dist)
    assert matched is not None
    np.testing.assert_allclose(app - matched, 0.3, atol=1e-9)  # the slowest meets the slowest
    # Knots only: interpolation, which under-states a tail that jumps between p99 and p100.
    coarse = wire_at_ranks(app, {k: v for k, v in dist.items() if k != "ranked_ms"})
    assert coarse is not None
    assert coarse[np.argmax(app)] < 200.0


def test_uploads_are_matched_to_requests_of_the_same_size() -> None:
    uploads = {"count": 30, "bytes": [10_000 * (i + 1) for i in range(30)],
               "ms": [8.0 * (i + 1) for i in range(30)]}  # fmt: skip
    got = wire_upload_ms(np.array([10_000.0, 55_000.0, 1e9]), uploads)
    assert got is not None
    np.testing.assert_allclose(got, [8.0, 44.0, 240.0])  # beyond the sizes seen: the largest's
    assert wire_upload_ms(np.array([1.0]), {**uploads, "count": 2}) is None  # too few to trust
