"""The fault matrix: for every stage a real fault on the real testbed, diagnosed end to end.

Each case brings the testbed up with one fault (or none, or two), runs ``run_diagnosis`` against it
with the servers profiled (``--server-pid``) and packets captured, and asserts the verdict — on both
server stacks (FastAPI under gunicorn, and a pre-fork aiohttp server with other function names,
Server-Timing metric names and magnitudes), so that nothing is fitted to one (the scenarios that
no stack changes, :data:`STACK_BLIND`, on FastAPI only). Where the injected fault has a size that
can be predicted from first principles, ``explains_ms`` must match it within ±25 % (see
``fault_scenarios`` for each prediction). Scenarios and their sizing live in
``fault_scenarios.py``, shared with ``benchmarks/bench_repeatability.py``.

The bare cases (ids ``<stack>-bare-<scenario>``) run the same faults with no timing header on any
hop — the two stacks above without them, and a Flask stack under gunicorn threads that never had
them — on the default engine, and check magnitudes against the testbed measured apart from the
report (``fault_scenarios.Facts``).

The gRPC cases (``aiohttp-grpc-bare-<scenario>``, issue 16) send ModelInfer through nginx's
``grpc_pass`` and haproxy in HTTP/2 mode, with no timing metadata anywhere: healthy,
preprocessing, server_concurrency, proxy, load_balancer and oom, checked against the same Facts.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import pytest
from fault_scenarios import (
    SCENARIOS,
    VARIANTS,
    CpuStretch,
    Facts,
    Variant,
    describe,
    diagnose,
    lone_request_ms,
    make_testbed,
)

pytestmark = [pytest.mark.integration, pytest.mark.root]

#: Scenarios decided by what no server stack changes: the client's own CPU, the packet capture,
#: nginx's rejections. Instrumented, CI runs them on fastapi only (the aiohttp copies cost 83 s of
#: a CI run, measured); benchmarks/bench_repeatability.py runs them on both stacks, 10 seeds each.
STACK_BLIND = {"client", "network", "network_loss", "network_bandwidth", "proxy_rejects"}

CASES = [
    (v, name)
    for v in VARIANTS
    for name, s in SCENARIOS.items()
    if s.runs_on(v) and not (v.instrumented and v.stack != "fastapi" and name in STACK_BLIND)
]


@pytest.fixture
def restore_affinity() -> Iterator[None]:
    """diagnose() pins this process to the client core; give the other tests all cores back."""
    cpus = os.sched_getaffinity(0)
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)


@pytest.mark.usefixtures("restore_affinity")
@pytest.mark.parametrize(("variant", "name"), CASES, ids=[f"{v.id}-{n}" for v, n in CASES])
def test_fault_is_diagnosed(variant: Variant, name: str) -> None:
    scenario = SCENARIOS[name]
    check = scenario.check(variant)
    with make_testbed(scenario, variant.stack, instrumented=variant.instrumented,
                      grpc=variant.grpc) as tb:  # fmt: skip
        # Measured before the load, on a server that is otherwise idle (bare checks need it).
        service_ms = lone_request_ms(tb) if check is not None and not tb.instrumented else 0.0
        cpu = CpuStretch(list(tb.server_pids))
        report = diagnose(tb, scenario)
        facts = Facts(dict(tb.magnitudes), cpu.stretch(), service_ms)
    # The run froze the heap between its windows and gave it back (pathprobe/load/heap.py).
    assert gc.get_freeze_count() == 0
    verdict = report["verdict"]
    why = describe(report)
    print(f"{variant.id}-{name}: {why}; {facts}")  # shown with -s or -rP: the verdict at a glance
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
    if check is not None:
        measured, expected = check(report, facts)
        assert measured == pytest.approx(expected, rel=0.25), (
            f"{measured} vs {expected} (server CPU stretch {facts.stretch:.2f}, lone request "
            f"{facts.service_ms:.1f} ms): {why}"
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
