"""Load workers on other machines: clock offsets, results moved between clocks, per-worker
accounts, the per-node client gate, ``--ray`` in the config and the report's table (issue 15)."""

from __future__ import annotations

import copy
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from attribution_fakes import FakeRun, Parts, judged, probe_windows

from pathprobe.analysis.client_gate import client_gate, generator_reasons
from pathprobe.analysis.verdict import decide
from pathprobe.config import build_config
from pathprobe.errors import UsageError
from pathprobe.load.clock import estimate_offset, shift_result
from pathprobe.load.generators import (
    GeneratorLedger,
    WindowCpu,
    WorkerIdentity,
    generator_window,
    lost_window,
)
from pathprobe.load.merge import merge_results
from pathprobe.model.records import empty_records
from pathprobe.model.results import StepResult, tally_records
from pathprobe.reports.render import render_html

FIXTURES = Path(__file__).parent.parent / "fixtures"
WHO = WorkerIdentity(worker=1, node="ab" * 28, address="10.0.0.7", hostname="n7", pid=42)
CLOCK = {"clock_offset_ms": 1.5, "clock_uncertainty_ms": 0.2, "clock_shared": False}


def test_offset_from_the_shortest_round_trip() -> None:
    # Remote clock = local + 5,000 ns. Replies are delayed asymmetrically except in one sample.
    samples = [(0, 9_000, 10_000), (100_000, 105_400, 100_800), (200_000, 212_000, 230_000)]
    est = estimate_offset(samples)
    assert est.rtt_ns == 800
    assert est.uncertainty_ns == 400
    assert est.offset_ns == 105_400 - 100_400
    assert abs(est.offset_ns - 5_000) <= est.uncertainty_ns
    with pytest.raises(ValueError, match="no round trip"):
        estimate_offset([(10, 5, 9)])


def _part(seqs: list[int], base_ns: int, first_measured: int = 0) -> StepResult:
    rec = empty_records(len(seqs))
    rec["seq"] = seqs
    rec["intended_ns"] = base_ns + np.array(seqs, dtype=np.int64) * 10_000_000
    rec["actual_ns"] = rec["intended_ns"] + 100_000
    rec["end_ns"] = rec["actual_ns"] + 5_000_000
    rec["status"] = 200
    start, end = base_ns, base_ns + 10**9
    return StepResult(
        path="direct", url="http://x/", step=0, offered_rps=100.0, concurrency=None,
        engine="fast", records=rec, first_measured_seq=first_measured, start_ns=start,
        measured_start_ns=start, measured_end_ns=end,
        loop_lag_ns=np.array([1_000_000, 2_000_000], np.int64),
        tally=tally_records(rec, start, end),
    )  # fmt: skip


def test_shift_moves_instants_not_durations() -> None:
    part = _part([0, 2, 4], 10**12)
    part.records.flags.writeable = False  # as received from another process
    moved = shift_result(part, -7_000)
    assert (moved.records["intended_ns"] == part.records["intended_ns"] - 7_000).all()
    assert (moved.records["end_ns"] - moved.records["intended_ns"] == 5_100_000).all()
    assert moved.start_ns == part.start_ns - 7_000
    assert moved.measured_end_ns == part.measured_end_ns - 7_000
    assert moved.tally is not None
    assert part.tally is not None
    assert moved.tally.last_end_ns == part.tally.last_end_ns - 7_000
    assert moved.tally.requests == part.tally.requests == 3
    assert moved.tally.latency_ns.get_total_count() == 3
    assert shift_result(part, 0) is part


def test_parts_from_two_clocks_merge_onto_one() -> None:
    # Worker 1's clock runs 3 s ahead of the driver's; moved back, the merge is one timeline.
    offset = 3 * 10**9
    a = _part([0, 2, 4], 10**12)
    b = shift_result(_part([1, 3, 5], 10**12 + offset), -offset)
    merged = merge_results([a, b], first_measured_seq=0)
    assert merged.records["seq"].tolist() == list(range(6))
    assert (np.diff(merged.records["intended_ns"]) == 10_000_000).all()
    assert merged.tally is not None
    assert merged.tally.requests == 6


def test_generator_window_counts_its_share_and_its_own_slip() -> None:
    part = _part(list(range(1, 200, 2)), 10**12, first_measured=10)
    late = part.records["seq"] % 4 == 1  # half of this worker's requests leave 30 ms late
    part.records["actual_ns"][late] += 30_000_000
    w = generator_window(WHO, part, 2, (0.5, 1.0), CLOCK)
    assert w.requests == 100  # the tally's count; the records' warm-up cut is for slip only
    assert w.cpu_percent == pytest.approx(50.0)
    assert w.late_fraction == pytest.approx(0.5, abs=0.02)
    assert w.slip_p99_ms == pytest.approx(30.1, abs=0.01)
    assert w.loop_lag_p90_ms == pytest.approx(1.9)
    out = w.as_json()
    assert out["node"] == WHO.node
    assert out["clock_offset_ms"] == 1.5
    assert out["lost"] is False


def test_ledger_sums_windows_and_reports_a_loss() -> None:
    ledger = GeneratorLedger()
    other = WorkerIdentity(worker=0, node="cd" * 28, address="10.0.0.6", hostname="n6", pid=7)
    w0 = generator_window(other, _part([0, 2], 10**12), 2, (0.2, 1.0), CLOCK)
    w1 = generator_window(WHO, _part([1, 3], 10**12), 2, (0.4, 1.0), CLOCK)
    assert ledger.add("direct", 0, [w0, w1]) == []
    notes = ledger.add("proxy", 0, [w0, lost_window(WHO, 1234, CLOCK)])
    assert len(notes) == 1
    assert "load worker 1 on node 10.0.0.7 (abababababab) was lost" in notes[0]
    assert "1,234 scheduled requests" in notes[0]
    entries = ledger.entries()
    assert [e["worker"] for e in entries] == [0, 1]
    assert [e["requests"] for e in entries] == [4, 2]
    assert entries[0]["cpu_percent"] == pytest.approx(20.0)
    assert entries[1]["lost"] == {"path": "proxy", "step": 0, "unsent_requests": 1234}
    assert entries[0]["lost"] is None


def _gen(worker: int, address: str, cpu: float, late: float = 0.0) -> dict[str, Any]:
    return {
        "worker": worker, "node": f"node{worker}" * 8, "address": address, "cpu_percent": cpu,
        "loop_lag_p90_ms": 0.5, "slip_p99_ms": 40.0 if late else 0.1, "late_fraction": late,
        "lost": False,
    }  # fmt: skip


def test_a_saturated_node_trips_the_gate_and_is_named() -> None:
    rec = empty_records(100)
    rec["seq"] = np.arange(100)
    rec["intended_ns"] = 10**12 + np.arange(100) * 20_000_000
    rec["actual_ns"] = rec["intended_ns"]
    calm = {"busiest_process_cpu_percent": {"mean": 3.0}}
    ok = {**calm, "load_generators": [_gen(0, "10.0.0.6", 40.0), _gen(1, "10.0.0.7", 35.0)]}
    gate = client_gate([("direct", 0, rec, 30.0, None, ok, 10.0)])
    assert not gate.tripped
    assert gate.worst_cpu_percent == 40.0
    hot = {**calm, "load_generators": [_gen(0, "10.0.0.6", 40.0), _gen(1, "10.0.0.7", 98.0)]}
    gate = client_gate([("direct", 0, rec, 30.0, None, hot, 10.0)])
    assert gate.tripped
    assert "load worker 1 on node 10.0.0.7 (node1node1no) at 98% of a core" in gate.reasons[0]
    late = generator_reasons(_gen(0, "10.0.0.6", 50.0, late=0.3), 100.0, 10.0)
    assert late == ["load worker 0 on node 10.0.0.6 (node0node0no): 30% of its requests left "
                    "late (slip p99 40.0 ms)"]  # fmt: skip
    assert generator_reasons({**_gen(0, "x", 99.0), "lost": True}, None, None) == []


def test_window_cpu_reads_the_window_only() -> None:
    now = time.monotonic_ns()
    cpu = WindowCpu(now + 20_000_000, now + 120_000_000)
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:  # busy through the whole window
        pass
    cpu_s, wall_s = cpu.finish() or (0.0, 0.0)
    assert wall_s == pytest.approx(0.1, abs=0.03)
    assert 0 < cpu_s <= wall_s * 1.5
    early = WindowCpu(now + 10**10, now + 2 * 10**10)
    assert early.finish() is None  # ended before its window began


def test_ray_flag_in_config(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = {"out": "/tmp/unused", "path": {"direct": "http://127.0.0.1:9/"}, "workers": 2}
    if importlib.util.find_spec("ray") is not None:
        assert build_config({**raw, "ray": "ray://10.0.0.1:10001"}).load.ray == (
            "ray://10.0.0.1:10001"
        )
    assert build_config(raw).load.ray is None
    with pytest.raises(UsageError, match="needs a Ray address"):
        build_config({**raw, "ray": " "})
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    with pytest.raises(UsageError, match=r"install pathprobe\[ray\]"):
        build_config({**raw, "ray": "auto"})


def test_report_shows_the_load_generators_table() -> None:
    report = json.loads((FIXTURES / "report_full.json").read_text())
    assert "Load generators" not in render_html(report)
    report = copy.deepcopy(report)
    report["run"]["load_generators"] = [
        {"worker": 0, "node": "ab" * 28, "address": "10.0.0.6", "requests": 4000,
         "cpu_percent": 31.5, "clock_offset_ms": 0.012, "clock_uncertainty_ms": 0.2,
         "lost": None},
        {"worker": 1, "node": "cd" * 28, "address": "<b>10.0.0.7</b>", "requests": 2000,
         "cpu_percent": 97.0, "clock_offset_ms": -3.25, "clock_uncertainty_ms": 0.4,
         "lost": {"path": "direct", "step": 0, "unsent_requests": 2000}},
    ]  # fmt: skip
    html = render_html(report)
    assert "Load generators" in html
    assert "+0.012 ± 0.200 ms" in html
    assert "-3.250 ± 0.400 ms" in html
    assert "direct, step 1: 2,000 not sent" in html
    assert "<b>10.0.0.7</b>" not in html
    assert "&lt;b&gt;10.0.0.7" in html


def test_a_saturated_node_makes_the_verdict_client_and_names_it() -> None:
    paths = ("direct", "proxy", "lb")
    gens = [_gen(0, "10.0.0.6", 35.0), _gen(1, "10.0.0.7", 99.0)]
    client = probe_windows(
        "client", paths, 1, {"busiest_process_cpu_percent": {"mean": 2.0}, "load_generators": gens}
    )
    # The proxy adds 30 ms: without the node's account this run's verdict is proxy.
    run = FakeRun(parts=lambda p, s: Parts(proxy=30.0), probes={"client": client}).build()
    v = decide(run, judged(run))
    assert v["bottleneck"] == "client"
    assert v["trustworthy"] is False
    evidence = " ".join(v["ranking"][0]["evidence"])
    assert "load worker 1 on node 10.0.0.7" in evidence
    calm = probe_windows(
        "client",
        paths,
        1,
        {"busiest_process_cpu_percent": {"mean": 2.0}, "load_generators": gens[:1]},
    )
    run = FakeRun(parts=lambda p, s: Parts(proxy=30.0), probes={"client": calm}).build()
    assert decide(run, judged(run))["bottleneck"] == "proxy"
