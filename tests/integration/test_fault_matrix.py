"""The fault matrix: for every stage a real fault on the real testbed, diagnosed end to end.

Each case brings the testbed up with one fault (or none, or two), runs ``run_diagnosis`` against it
with the servers profiled (``--server-pid``) and packets captured, and asserts the verdict — on both
server stacks (FastAPI under gunicorn, and a pre-fork aiohttp server with other function names,
Server-Timing metric names and magnitudes), so that nothing is fitted to one. Where the injected
fault has a size that can be predicted from first principles, ``explains_ms`` must match it within
±25 % (see ``fault_scenarios`` for each prediction). Scenarios and their sizing live in
``fault_scenarios.py``, shared with ``benchmarks/bench_repeatability.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from fault_scenarios import SCENARIOS, CpuStretch, describe, diagnose, make_testbed

from pathprobe.testbed import STACKS

pytestmark = [pytest.mark.integration, pytest.mark.root]

CASES = [(stack, name) for stack in STACKS for name in SCENARIOS]


@pytest.fixture
def restore_affinity() -> Iterator[None]:
    """diagnose() pins this process to the client core; give the other tests all cores back."""
    cpus = os.sched_getaffinity(0)
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)


@pytest.mark.usefixtures("restore_affinity")
@pytest.mark.parametrize(("stack", "name"), CASES, ids=[f"{s}-{n}" for s, n in CASES])
def test_fault_is_diagnosed(stack: str, name: str) -> None:
    scenario = SCENARIOS[name]
    with make_testbed(scenario, stack) as tb:
        cpu = CpuStretch(list(tb.server_pids))
        report = diagnose(tb, scenario)
        stretch = cpu.stretch()
        magnitudes = dict(tb.magnitudes)
    verdict = report["verdict"]
    why = describe(report)
    assert verdict["bottleneck"] == scenario.expect, why
    if scenario.expect == "client":
        assert verdict["trustworthy"] is False, why
    elif scenario.expect != "oom":
        # (OOM kills on this host may stall the co-located client too: then the verdict stays
        # oom but is marked untrustworthy.)
        assert verdict["trustworthy"] is True, why
    if scenario.expect == "none":
        assert verdict["targets_met"] is True, why
    elif scenario.expect != "client":
        assert verdict["targets_met"] is False, why
    top = verdict["ranking"][0]
    assert top["stage"] == scenario.expect or scenario.expect == "none", why
    if scenario.expect != "none":
        assert top["evidence"], why
    if scenario.magnitude is not None:
        measured, expected = scenario.magnitude(report, magnitudes, stretch)
        assert measured == pytest.approx(expected, rel=0.25), (
            f"{measured} vs {expected} (server CPU stretch {stretch:.2f}): {why}"
        )
    if scenario.ranking_order:
        order = [entry["stage"] for entry in verdict["ranking"]]
        positions = [order.index(stage) for stage in scenario.ranking_order]
        assert positions == sorted(positions), why
        bars = {entry["stage"]: entry["clears_bar"] for entry in verdict["ranking"]}
        assert all(bars[stage] for stage in scenario.ranking_order), why
    if scenario.expect == "oom":
        text = " ".join(top["evidence"])
        assert "died" in text or "OOM" in text, why
