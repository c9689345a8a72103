"""The typed read model of report.json: malformed input gives the sections' fallbacks."""

from __future__ import annotations

import math
from typing import Any

import pytest

from pathprobe.reports.model import (
    ClientProbe,
    CpuPercent,
    Histogram,
    HopDelta,
    LedgerHalf,
    LoadGenerator,
    LostWork,
    NetworkProbe,
    PathAttribution,
    PayloadBin,
    Percentiles,
    RankedStage,
    RetransStalls,
    RunInfo,
    ServerProbe,
    ServerWindow,
    Step,
    Targets,
    TargetStep,
    TimelinePoint,
    Verdict,
    Worker,
    WorkerDeath,
)

MALFORMED: list[Any] = [None, [], "verdict", 3, True, {}]


@pytest.mark.parametrize("raw", MALFORMED)
def test_verdict_from_malformed(raw: Any) -> None:
    v = Verdict.from_json(raw)
    assert v == Verdict(
        bottleneck=None,
        summary=None,
        advice=None,
        confidence_level=None,
        confidence_reasons=(),
        trustworthy=True,
        targets_met=None,
        ranking=(),
        next_steps=(),
        attribution=(),
        hop_deltas=(),
        knee={},
    )


def test_verdict_fields_of_the_wrong_type() -> None:
    v = Verdict.from_json(
        {
            "bottleneck": 7,
            "summary": ["a"],
            "confidence": {"level": "certain", "reasons": ["ok", None, 2]},
            "trustworthy": "no",
            "targets_met": 1,
            "ranking": [None, {"stage": "proxy", "explains_ms": math.inf, "clears_bar": 0}],
            "next_steps": "do it",
            "attribution": ["not", "a", "mapping"],
            "hop_deltas": {"hop": "proxy"},
        }
    )
    assert v.bottleneck == "7"
    assert v.summary == "['a']"
    assert v.confidence_level is None
    assert v.confidence_reasons == ("ok", "", "2")
    assert v.trustworthy is True  # only an explicit false
    assert v.targets_met is None  # 1 is not a bool
    assert v.ranking == (
        RankedStage(None, None, None, None, ()),
        RankedStage("proxy", None, None, None, ()),
    )
    assert v.next_steps == ()
    assert v.attribution == ()
    assert v.hop_deltas == ()


def test_verdict_explicit_false_and_levels() -> None:
    v = Verdict.from_json(
        {"trustworthy": False, "targets_met": False, "confidence": {"level": "low"}}
    )
    assert (v.trustworthy, v.targets_met, v.confidence_level) == (False, False, "low")


def test_path_attribution_tail_key_and_ledger() -> None:
    a = PathAttribution.from_json(
        "direct",
        {
            "percentile_label": "p90",
            "offered_rps": "50",
            "p50": {"network": 1.0, "server": "x", "proxy": math.nan},
            "p90": {"server": 4},
            "ledger": {"p50": {"sum_ms": 1, "measured_ms": None}, "p90": {}},
        },
    )
    assert a.offered_rps is None
    assert a.tail_key == "p90"
    assert a.median == {"network": 1.0}
    assert a.tail == {"server": 4.0}
    assert a.ledger_median == LedgerHalf(sum_ms=1.0, measured_ms=None)
    assert a.ledger_tail is None  # an empty set is no ledger


def test_path_attribution_label_without_its_key_falls_back_to_p99() -> None:
    a = PathAttribution.from_json(
        "lb", {"percentile_label": "p90", "p99": {"lb": 2}, "ledger": {"p90": {"sum_ms": 3}}}
    )
    assert a.tail_key == "p99"
    assert a.tail == {"lb": 2.0}
    # The ledger's tail set is looked up under the label itself, as the page always did.
    assert a.ledger_tail == LedgerHalf(sum_ms=3.0, measured_ms=None)


@pytest.mark.parametrize("raw", MALFORMED)
def test_path_attribution_from_malformed(raw: Any) -> None:
    a = PathAttribution.from_json("p", raw)
    assert (a.tail_key, a.median, a.tail, a.ledger_median, a.ledger_tail) == (
        "p99",
        {},
        {},
        None,
        None,
    )


def test_hop_delta_fallbacks() -> None:
    d = HopDelta.from_json(
        {"hop": None, "p50_ci_ms": [1, "2"], "tail_ci_ms": [-1, 3, 9], "tail_label": ""}
    )
    assert d.hop is None
    assert d.p50_ci_ms is None
    assert d.tail_ci_ms == (-1.0, 3.0)
    assert d.tail_label == "p99"
    assert HopDelta.from_json("x").tail_label == "p99"


@pytest.mark.parametrize("raw", MALFORMED)
def test_targets_from_malformed(raw: Any) -> None:
    t = Targets.from_json(raw)
    assert t == Targets(
        present=False,
        given=None,
        p99_ms=None,
        rps=None,
        error_rate=None,
        judged_on=None,
        steps=(),
    )


def test_targets_wrong_types() -> None:
    t = Targets.from_json(
        {
            "given": "no",
            "p99_ms": True,
            "rps": "100",
            "error_rate": 0.01,
            "judged_on": 3,
            "steps": [{"offered_rps": 10, "passed": "yes", "reasons": "slow"}, 5],
        }
    )
    assert t.present is True
    assert t.given is None
    assert (t.p99_ms, t.rps, t.error_rate) == (None, None, 0.01)
    assert t.judged_on == "3"
    assert t.steps == (TargetStep(10.0, None, ()), TargetStep(None, None, ()))


@pytest.mark.parametrize("raw", [{}, {"latency_ms": [], "histogram": "x", "timeline": {}}])
def test_step_from_malformed(raw: dict[str, Any]) -> None:
    s = Step.read(raw, 2)
    assert s.label == "step 3"
    assert s.latency == Percentiles(None, None, None, None, None)
    assert (s.histogram, s.timeline, s.by_payload_size, s.status_codes) == (None, (), (), ())
    assert s.errors_by_kind == {}


def test_step_wrong_types() -> None:
    s = Step.read(
        {
            "concurrency": 8,
            "latency_ms": {"p50": "1", "p99.9": 7, "max": math.nan},
            "errors_by_kind": {"timeout": 2, "reset": 0, "5xx": "3"},
            "status_codes": {"200": 10, "503": None},
            "histogram": {"edges_ms": [0, 1], "counts": [1, "2"]},
            "timeline": [None, {"t_s": 1, "p50_ms": 2}],
            "by_payload_size": [{"bytes_min": True, "count": 3}],
        },
        0,
    )
    assert s.label == "concurrency 8"
    assert s.latency == Percentiles(None, None, None, 7.0, None)
    assert s.errors_by_kind == {"timeout": 2.0}  # zero and non-numbers dropped
    assert s.status_codes == (("200", 10.0), ("503", None))
    assert s.histogram is None  # a count that is not a number spoils the histogram
    assert s.timeline == (
        TimelinePoint(None, None, None, None),
        TimelinePoint(1.0, 2.0, None, None),
    )
    assert s.by_payload_size == (PayloadBin(None, None, 3.0, None, None),)
    assert Histogram.from_json({"edges_ms": [0, 1], "counts": []}) == Histogram((0.0, 1.0), ())


@pytest.mark.parametrize("raw", MALFORMED)
def test_network_probe_from_malformed(raw: Any) -> None:
    net = NetworkProbe.from_json(raw)
    assert (net.windows, net.idle_rtt_ms) == ((), ())
    assert net.status.not_observed("network") == ("Not observed: the report holds no network data.")


def test_network_probe_wrong_types() -> None:
    net = NetworkProbe.from_json(
        {
            "available": False,
            "reason": "",
            "windows": [3, {"rtt_ms": 5, "retrans_stalls": {"stalls_ms": "abc", "stalled": 1}}],
            "idle_rtt_ms": {"p50": 0.2, "p75": 0.3, "p99": "x"},
        }
    )
    assert net.status.not_observed("network") == "Not observed: the probe was unavailable"
    first, second = net.windows
    assert first.raw == {}
    assert first.unavailable is False
    assert second.rtt == Percentiles(None, None, None, None, None)
    assert second.retrans_stalls == RetransStalls(stalled=1.0, exchanges=None, stalls_ms=())
    assert net.idle_rtt_ms == (("", (("p50", 0.2),)),)
    per_path = NetworkProbe.from_json({"idle_rtt_ms": {"direct": {"max": 1}, "lb": 2}})
    assert per_path.idle_rtt_ms == (("", ()),)  # not all per-path: read as one distribution


@pytest.mark.parametrize("raw", MALFORMED)
def test_client_probe_from_malformed(raw: Any) -> None:
    client = ClientProbe.from_json(raw)
    assert (client.has_floor, client.floor_ms, client.windows) == (False, {}, ())


def test_client_probe_wrong_types() -> None:
    client = ClientProbe.from_json(
        {
            "calibration": {"floor_ms": {"p50": "x"}},
            "windows": [{"cpu_percent": [1], "slip_ms": {}, "busiest_process_cpu_percent": 5}],
        }
    )
    assert client.has_floor is True  # a floor mapping without a number still counts as one
    assert client.floor_ms == {}
    (w,) = client.windows
    assert w.cpu_percent == CpuPercent(None, None, None)
    assert w.slip is None  # an empty slip: the step's own slip stands in
    assert w.busiest_process_cpu_max is None


def test_load_generator_fallbacks() -> None:
    g = LoadGenerator.from_json({"worker": "1", "address": 7, "lost": {"step": "2"}})
    assert (g.worker, g.address, g.node) == (None, "7", None)
    assert g.lost == LostWork(path=None, step=None, unsent_requests=None)
    assert LoadGenerator.from_json({"lost": {}}).lost is None
    assert LoadGenerator.from_json(None).clock_offset_ms is None


@pytest.mark.parametrize("raw", MALFORMED)
def test_run_info_from_malformed(raw: Any) -> None:
    run = RunInfo.from_json(raw)
    assert (run.argv, run.command, run.config, run.versions, run.host) == ((), None, None, (), ())
    assert run.load_generators == ()


def test_run_info_wrong_types() -> None:
    run = RunInfo.from_json(
        {"argv": ["pathprobe", None, 3], "command": 5, "versions": {"python": None}, "host": []}
    )
    assert run.argv == ("pathprobe", "", "3")
    assert run.command == "5"
    assert run.versions == (("python", None),)
    assert run.host == ()


@pytest.mark.parametrize("raw", MALFORMED)
def test_server_probe_from_malformed(raw: Any) -> None:
    server = ServerProbe.from_json(raw)
    assert server.windows == ()
    assert server.status.not_observed("server") == "Not observed: the report holds no server data."


def test_server_window_wrong_types() -> None:
    (w,) = ServerProbe.from_json(
        {
            "windows": [
                {
                    "path": None,
                    "workers": [None, {"pid": 12, "rss_bytes_max": "big"}],
                    "worker_deaths": [{"t_ms": math.inf, "reason": 9}],
                    "kernel_oom_lines": "oom",
                    "cgroup": [],
                    "timeline": [{"t_ms": 1500}, 3, {"t_ms": "x"}],
                }
            ]
        }
    ).windows
    assert w.path == "None"  # the grouping key is str() of what is stored
    assert w.workers == (Worker(None, None, None, None), Worker("12", None, None, None))
    assert w.worker_deaths == (WorkerDeath(pid=None, t_ms=None, reason="9"),)
    assert (w.kernel_oom_lines, w.cgroup) == ((), ())
    assert w.timeline_end_ms == 1500.0
    assert ServerWindow.from_json({}).timeline_end_ms == 0.0
