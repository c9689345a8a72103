"""Verdicts on services that cooperate with nothing: no Server-Timing, no hop headers.

The server's split then rests on what pathprobe measures itself: the baseline (requests one at a
time before the load), requests that found the server empty, py-spy's samples with their
confidence, and the server's CPU. Each run is synthetic with a known truth per request.
"""

from __future__ import annotations

import numpy as np
import pytest
from attribution_fakes import FakeRun, Parts, judged, make_step, probe_windows

from pathprobe.analysis.verdict import decide
from pathprobe.run import RunResult

BARE = {"server_timing": False, "proxy_header": False, "lb_header": False}


def server_probe(
    paths: tuple[str, ...], util_cores: float, counts: dict[str, int], window_s: float = 10.0
) -> dict:
    samples = sum(counts.values())
    busy = {k: v for k, v in counts.items() if k != "idle"}
    fields = {
        "window_ms": window_s * 1000.0,
        "cpu_seconds_total": util_cores * window_s,
        "cpu_cores_available": 2.0,
        "workers": [{"pid": 1, "cpu_percent_mean": util_cores * 100.0}],
        "samples": samples,
        "stage_samples": counts,
        "stage_share": {k: v / sum(busy.values()) for k, v in busy.items()},
        "worker_deaths": [],
        "cgroup": {"available": True, "oom_kill_events": 0},
        "kernel_oom_lines": [],
    }
    return {"server": probe_windows("server", paths, 1, fields)}


def with_baseline(run: RunResult, work_ms: np.ndarray, bytes_out: float = 20_000) -> RunResult:
    """Requests one at a time (1/s: none overlaps), as the session's baseline sends them."""
    parts = Parts(queue=0.0, pre=0.0, inf=work_ms, bytes_out=bytes_out, **BARE)
    run.baselines["direct"] = [make_step("direct", 0, work_ms.size, 1.0, parts, [])]
    return run


def decide_on(run: RunResult) -> dict:
    return decide(run, judged(run))


def one_at_a_time(n: int, gap_ms: float, service_ms: np.ndarray) -> np.ndarray:
    """Waiting times of a FIFO single-server queue (Lindley's recursion) with fixed arrivals."""
    wait = np.zeros(n)
    for i in range(1, n):
        wait[i] = max(0.0, wait[i - 1] + service_ms[i - 1] - gap_ms)
    return wait


def test_one_at_a_time_server_that_sleeps_is_server_concurrency() -> None:
    # 50 requests/s (20 ms apart) against one worker that sleeps 17-19 ms per request (a
    # downstream call): utilisation ~0.9, so requests queue behind each other; the CPU is idle.
    rng = np.random.default_rng(11)
    n = 600
    service = rng.uniform(14.0, 24.0, n)
    wait = one_at_a_time(n, 20.0, service)
    fake = FakeRun(
        paths=("direct",), n=n, rates=(50.0,), target_p99=40.0,
        parts=lambda p, s: Parts(queue=wait, pre=0.0, inf=service, **BARE),
        probes=server_probe(("direct",), 0.05, {"idle": 300, "framework": 8, "other": 4}),
    )  # fmt: skip
    run = with_baseline(fake.build(), rng.uniform(14.0, 24.0, 12))
    v = decide_on(run)
    assert v["bottleneck"] == "server_concurrency", v["summary"]
    # Magnitude against the queue's own truth: the mean wait of the tail requests.
    latency = wait + service
    tail = latency >= np.percentile(latency, 99, method="higher")
    found = next(r for r in v["ranking"] if r["stage"] == "server_concurrency")
    assert found["explains_ms"] == pytest.approx(float(wait[tail].mean()), rel=0.25)


def test_heavy_preprocessing_at_low_rate_from_thirteen_samples() -> None:
    # 2 requests/s, 300-500 ms of image preparation each; py-spy at 10 Hz caught 13 busy samples,
    # 12 of them in preprocessing (the case issue 14 saw come out inconclusive).
    rng = np.random.default_rng(12)
    n = 16
    work = rng.uniform(300.0, 500.0, n)
    fake = FakeRun(
        paths=("direct",), n=n, rates=(2.0,), target_p99=200.0,
        parts=lambda p, s: Parts(queue=0.0, pre=0.0, inf=work, **BARE),
        probes=server_probe(("direct",), 0.8, {"preprocessing": 12, "inference": 1}, 8.0),
    )  # fmt: skip
    v = decide_on(fake.build())
    assert v["bottleneck"] == "preprocessing", v["summary"]
    top = v["ranking"][0]
    assert any("95% CI" in e for e in top["evidence"]), top


def test_seven_of_thirteen_samples_do_not_decide() -> None:
    rng = np.random.default_rng(13)
    n = 16
    work = rng.uniform(300.0, 500.0, n)
    fake = FakeRun(
        paths=("direct",), n=n, rates=(2.0,), target_p99=200.0,
        parts=lambda p, s: Parts(queue=0.0, pre=0.0, inf=work, **BARE),
        probes=server_probe(("direct",), 0.8, {"preprocessing": 7, "inference": 6}, 8.0),
    )  # fmt: skip
    v = decide_on(fake.build())
    assert v["bottleneck"] == "inconclusive", v["summary"]
    assert "cannot be told apart" in v["summary"]
    assert any("too few samples" in s for s in v["next_steps"]), v["next_steps"]


def test_without_profile_the_server_time_is_kept_and_named() -> None:
    n = 100
    fake = FakeRun(
        paths=("direct",), n=n, rates=(5.0,), target_p99=100.0,
        parts=lambda p, s: Parts(queue=0.0, pre=0.0, inf=150.0, **BARE),
    )  # fmt: skip
    v = decide_on(fake.build())
    assert v["bottleneck"] == "inconclusive"
    assert v["server_unsplit_ms"] == pytest.approx(150.0, rel=0.05)
    assert "--server-pid" in v["next_steps"][0]
    assert "unsplit" in v["summary"]


def test_a_hop_doing_ordinary_work_is_not_a_bottleneck_when_targets_are_met() -> None:
    # The lb adds ~6 ms to a ~20 ms service, no timing headers, targets met: nothing to report.
    rng = np.random.default_rng(14)
    n = 600
    fake = FakeRun(
        n=n, target_p99=100.0,
        parts=lambda p, s: Parts(
            queue=0.0, pre=0.0, inf=18.0 + np.abs(rng.normal(0, 1.0, n)),
            proxy=0.5, lb=6.0 + np.abs(rng.normal(0, 0.5, n)), **BARE,
        ),
        probes=server_probe(("direct", "proxy", "lb"), 0.3, {"inference": 300, "framework": 30}),
    )  # fmt: skip
    v = decide_on(fake.build())
    assert v["targets_met"] is True
    assert v["bottleneck"] == "none", v["summary"]


def test_the_ledger_adds_up_to_the_measured_latency_on_every_path() -> None:
    rng = np.random.default_rng(15)
    n = 400
    fake = FakeRun(
        n=n, target_p99=30.0,
        parts=lambda p, s: Parts(
            queue=np.abs(rng.normal(3, 2, n)), pre=5.0, inf=np.abs(rng.normal(15, 4, n)),
            proxy=1.0, lb=2.0, **BARE,
        ),
        probes=server_probe(("direct", "proxy", "lb"), 0.5, {"inference": 200, "other": 20}),
    )  # fmt: skip
    v = decide_on(fake.build())
    for path, entry in v["attribution"].items():
        for key in ("p50", entry["percentile_label"]):
            ledger = entry["ledger"][key]
            assert ledger["sum_ms"] == pytest.approx(ledger["measured_ms"], abs=0.01), (path, key)
            assert 0.0 <= ledger["no_stage_ms"] <= ledger["sum_ms"]
