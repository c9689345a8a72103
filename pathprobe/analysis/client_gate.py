"""The client gate (design.md §4 step 1): could the load generator keep its own schedule?

When it could not, every latency measured beyond it carries the client's own delay, and the verdict
is ``client`` with the rest marked untrustworthy. Evidence, per (path, step) window:

* **schedule slip** — how late requests left against the open-loop schedule (records);
* **event-loop lag** — how late a 10 ms timer fired in the client's loop (engine and client probe);
* **client CPU** — the busiest load-generating process in % of one core (client probe).

Load workers on other machines (``--ray``) report the same three numbers each, with their node
(``load_generators`` in the client window); each is gated on its own (:func:`generator_reasons`).

Pool wait (waiting for a pooled connection) is deliberately *not* evidence: a slow server holds
every connection longer and fills any pool, so it says nothing about the client by itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pathprobe.model.lateness import lateness
from pathprobe.model.records import Records

#: Share of requests that must be late (pathprobe.model.lateness: slipped by more than one
#: schedule gap, clamped to [1 ms, 10 ms]). 5 % puts the lateness inside the p95 and therefore the
#: p99 the targets are judged on: every tail percentile then carries client delay.
LATE_FRACTION_TRIP = 0.05
#: ...and the slip must matter against the latency it pollutes: p99 slip at least this share of
#: the p99 latency (a 3 ms slip under a 900 ms p99 changes no conclusion). Not more: a starved
#: client also inflates the latencies it measures (it reads replies late), so a large relative
#: bar would hide exactly the worst cases.
SLIP_SHARE_OF_P99 = 0.10
#: A lagging loop matters only against latencies it can distort: its p90 lag at least this share
#: of the p50 latency (20 ms of lag under 2 s answers is noise).
LAG_SHARE_OF_P50 = 0.10
#: An event loop whose 10 ms timer is late by this much in one of every ten ticks (p90) delays
#: every tenth callback by as much. 20 ms is two ticks: one tick late is scheduler noise on a
#: shared core (a CFS slice plus wake-up latency); two ticks, that often, is a loop that could not
#: run. p90 rather than p99: a single stall (GC, page fault) on a busy shared machine must not
#: trip the gate, a starved loop is late most of the time.
LOOP_LAG_P90_TRIP_MS = 20.0
#: design.md §4: client CPU ≥ ~90 % of a core. An event loop is one thread; near a full core every
#: new request waits for the loop, whatever the machine's other cores do.
CPU_TRIP_PERCENT = 90.0


@dataclass
class GateResult:
    """The gate's decision with the numbers behind it."""

    tripped: bool = False
    reasons: list[str] = field(default_factory=list)  # why it tripped (evidence sentences)
    passed: list[str] = field(default_factory=list)  # what was checked and passed
    worst_slip_p99_ms: float = 0.0
    worst_late_fraction: float = 0.0
    worst_loop_lag_p90_ms: float | None = None
    worst_cpu_percent: float | None = None
    # Mean slip of each window (path, step) → ms: the client's share of latency.
    checked_windows: int = 0


def window_gate(
    records: Records,
    latency_p99_ms: float | None,
    loop_lag_ns: npt.NDArray[np.int64] | None,
    client_window: Mapping[str, Any] | None,
    latency_p50_ms: float | None = None,
    stride: int = 1,
) -> tuple[list[str], dict[str, float | None]]:
    """The trip reasons of one window (empty when it passed) and its numbers."""
    reasons: list[str] = []
    numbers: dict[str, float | None] = {}
    late_rule = lateness(records["intended_ns"], records["actual_ns"], stride)
    if late_rule.slip_ms.size:
        late, threshold = late_rule.late_fraction, late_rule.threshold_ms
        p99 = float(np.percentile(late_rule.slip_ms, 99))
        numbers.update(slip_p99_ms=p99, late_fraction=late, late_threshold_ms=threshold)
        big_enough = latency_p99_ms is None or p99 >= SLIP_SHARE_OF_P99 * latency_p99_ms
        if late >= LATE_FRACTION_TRIP and big_enough:
            reasons.append(
                f"{late:.0%} of requests left more than {threshold:.1f} ms behind schedule "
                f"(slip p99 {p99:.1f} ms)"
            )
    lag: float | None = None
    if loop_lag_ns is not None and len(loop_lag_ns):
        lag = float(np.percentile(loop_lag_ns, 90)) / 1e6
    else:  # the probe's own timer; it reports p50 and p99 only: p50 is the conservative stand-in
        probe_lag = ((client_window or {}).get("loop_lag_ms") or {}).get("p50")
        lag = None if probe_lag is None else float(probe_lag)
    if lag is not None:
        numbers["loop_lag_p90_ms"] = lag
        matters = latency_p50_ms is None or lag >= LAG_SHARE_OF_P50 * latency_p50_ms
        if lag >= LOOP_LAG_P90_TRIP_MS and matters:
            reasons.append(f"client event loop lagged {lag:.1f} ms at p90")
    cpu = ((client_window or {}).get("busiest_process_cpu_percent") or {}).get("mean")
    if cpu is None:
        cpu = ((client_window or {}).get("cpu_percent") or {}).get("mean")
    if cpu is not None:
        numbers["cpu_percent"] = float(cpu)
        if float(cpu) >= CPU_TRIP_PERCENT:
            reasons.append(f"client process at {float(cpu):.0f}% of a core")
    # Load workers elsewhere (Ray actors) measure themselves; each is gated on its own numbers,
    # so one saturated node trips the gate even when the others hide it in the pooled figures.
    for gen in (client_window or {}).get("load_generators") or []:
        reasons.extend(generator_reasons(gen, latency_p99_ms, latency_p50_ms))
        gen_cpu = gen.get("cpu_percent")
        if gen_cpu is not None:
            numbers["cpu_percent"] = max(numbers.get("cpu_percent") or 0.0, float(gen_cpu))
    return reasons, numbers


def one_stall(reasons: Sequence[str], numbers: Mapping[str, float | None]) -> bool:
    """True when a window that tripped (``reasons``) did so on lateness alone: its loop was on
    time at p90 and its process under the CPU bar. That is one stall of the whole client (the
    hypervisor pausing the VM, a page-in), not a client that cannot keep up: a starved client is
    late most of the time, which the p90 lag shows. Such a window is worth measuring again."""
    if not reasons or (numbers.get("late_fraction") or 0.0) < LATE_FRACTION_TRIP:
        return False
    lag, cpu = numbers.get("loop_lag_p90_ms"), numbers.get("cpu_percent")
    return (lag is None or lag < LOOP_LAG_P90_TRIP_MS) and (cpu is None or cpu < CPU_TRIP_PERCENT)


def generator_reasons(
    gen: Mapping[str, Any], latency_p99_ms: float | None, latency_p50_ms: float | None
) -> list[str]:
    """Why one load worker (a ``load_generators`` entry of a client window) could not keep its
    schedule, naming its node; the same bars as the whole client's."""
    if gen.get("lost"):
        return []  # reported as a loss; its numbers are not known
    node = str(gen.get("address") or gen.get("node") or "?")
    node_id = str(gen.get("node") or "")
    if node_id and node_id != node:
        node = f"{node} ({node_id[:12]})"
    who = f"load worker {gen.get('worker')} on node {node}"
    reasons: list[str] = []
    cpu = gen.get("cpu_percent")
    if cpu is not None and float(cpu) >= CPU_TRIP_PERCENT:
        reasons.append(f"{who} at {float(cpu):.0f}% of a core")
    lag = gen.get("loop_lag_p90_ms")
    if lag is not None and float(lag) >= LOOP_LAG_P90_TRIP_MS:
        if latency_p50_ms is None or float(lag) >= LAG_SHARE_OF_P50 * latency_p50_ms:
            reasons.append(f"{who}: event loop lagged {float(lag):.1f} ms at p90")
    late, slip = gen.get("late_fraction"), gen.get("slip_p99_ms")
    if late is not None and slip is not None and float(late) >= LATE_FRACTION_TRIP:
        if latency_p99_ms is None or float(slip) >= SLIP_SHARE_OF_P99 * latency_p99_ms:
            reasons.append(
                f"{who}: {float(late):.0%} of its requests left late (slip p99 "
                f"{float(slip):.1f} ms)"
            )
    return reasons


def client_gate(windows: Sequence[tuple[Any, ...]]) -> GateResult:
    """Run :func:`window_gate` over ``(path, step, records, latency_p99_ms, loop_lag_ns,
    client_window[, latency_p50_ms[, sample_stride]])`` tuples; tripped when any window tripped."""
    result = GateResult()
    for row in windows:
        path, step, records, p99, lag, cw = row[:6]
        p50 = row[6] if len(row) > 6 else None
        stride = row[7] if len(row) > 7 else 1
        reasons, numbers = window_gate(records, p99, lag, cw, p50, stride)
        result.checked_windows += 1
        result.worst_slip_p99_ms = max(result.worst_slip_p99_ms, numbers.get("slip_p99_ms") or 0.0)
        result.worst_late_fraction = max(
            result.worst_late_fraction, numbers.get("late_fraction") or 0.0
        )
        lag_v = numbers.get("loop_lag_p90_ms")
        if lag_v is not None:
            result.worst_loop_lag_p90_ms = max(result.worst_loop_lag_p90_ms or 0.0, lag_v)
        cpu_v = numbers.get("cpu_percent")
        if cpu_v is not None:
            result.worst_cpu_percent = max(result.worst_cpu_percent or 0.0, cpu_v)
        if reasons:
            result.tripped = True
            result.reasons.append(f"{path}, step {step + 1}: " + "; ".join(reasons))
    if not result.tripped and result.checked_windows:
        parts = [f"slip p99 ≤ {result.worst_slip_p99_ms:.1f} ms"]
        if result.worst_loop_lag_p90_ms is not None:
            parts.append(f"loop lag p90 ≤ {result.worst_loop_lag_p90_ms:.1f} ms")
        if result.worst_cpu_percent is not None:
            parts.append(f"client CPU ≤ {result.worst_cpu_percent:.0f}% of a core")
        result.passed.append("client gate passed (" + ", ".join(parts) + ")")
    return result
