"""The verdict: which stage explains the missed target, from the step summaries and probes.

Attribution by stage lives in :mod:`pathprobe.analysis.attribution`; this module owns the final word
and the rules that never change:

* the client gate first: when the client could not keep its schedule the verdict is ``client`` and
  ``trustworthy`` is false;
* ``none`` only when targets are met and nothing stands out (no anomaly: a tripped gate, OOM, a
  hop adding a quarter of the latency, congestion or loss, a server that waits more than it works);
* targets missed → the stage that explains the most of the tail among those that clear their bar
  (only the error rate missed → the stage that explains the most failures — oom, or a hop whose
  path fails more often than the path inside it — when it clears its bar);
  ``inconclusive`` when none clears it, with what to measure next.

Output keys (report.json ``verdict``, read by the renderer): ``bottleneck``, ``targets_met``,
``summary``, ``advice``, ``trustworthy``, ``confidence``, ``ranking``, ``attribution``,
``hop_deltas``, ``knee``, ``next_steps`` (+ ``focus``).
"""

from __future__ import annotations

from typing import Any

from pathprobe.analysis.attribution import Analysis, analyze
from pathprobe.analysis.findings import StageFinding
from pathprobe.config import Targets
from pathprobe.model.stages import STAGES
from pathprobe.run import RunResult

#: What to do per stage, from the one table of stages.
ADVICE = {s.name: s.advice for s in STAGES if s.ranked}


def decide(run: RunResult, judgement: dict[str, Any]) -> dict[str, Any]:
    """The ``verdict`` section of report.json."""
    targets_met = bool(judgement["targets_met"])
    targets: Targets = run.config.targets
    outer = run.config.outermost.name
    if not run.steps:
        return _empty(run, targets_met, judgement)
    a = analyze(run, judgement)
    ranking = a.ranking()
    trustworthy = not a.gate.tripped
    first_reason = judgement["reasons"][0] if judgement.get("reasons") else "targets missed"
    next_steps: list[str] = []
    if a.gate.tripped and a.local_oom_kills:
        # The kernel's OOM killer ran on this host during the window: reclaim and kills stall every
        # process here, the client included. The client's stall is the OOM's, not its own.
        bottleneck = "oom"
    elif a.gate.tripped:
        bottleneck = "client"
    elif targets_met:
        standing = [f for f in ranking if f.stands_out]
        bottleneck = standing[0].stage if standing else "none"
    else:
        clearing = [f for f in ranking if f.clears_bar]
        bottleneck = clearing[0].stage if clearing else "inconclusive"
        if a.undecided is not None and bottleneck in a.undecided:
            # The profile cannot tell which of the two server stages is larger: naming one
            # would be a coin toss.
            bottleneck = "inconclusive"
    top = a.findings.get(bottleneck)
    summary = _summary(a, bottleneck, top, targets_met, targets, outer, first_reason, run)
    if bottleneck == "inconclusive":
        next_steps = _next_steps(a, ranking)
        advice = next_steps[0] if next_steps else "Rerun longer with server access."
    elif bottleneck == "none":
        advice = "Nothing to fix at this load." if targets.any else "Give --target-p99 to judge."
    else:
        advice = ADVICE[bottleneck]
    level = _confidence_level(a, bottleneck, ranking)
    return {
        "bottleneck": bottleneck,
        "targets_met": targets_met,
        "summary": summary,
        "advice": advice,
        "trustworthy": trustworthy,
        "confidence": {"level": level, "reasons": a.confidence_reasons + _level_notes(a)},
        "ranking": [f.as_json() for f in ranking],
        "attribution": a.attribution,
        "hop_deltas": a.hop_deltas,
        "knee": a.knee,
        "next_steps": next_steps,
        "focus": {
            "path": a.focus_path,
            "step": a.focus_step,
            "offered_rps": a.offered_rps,
            "tail_label": a.tail_label,
            "tail_ms": None if a.tail_latency_ms is None else round(a.tail_latency_ms, 3),
            "tail_mean_ms": None if a.tail_mean_ms is None else round(a.tail_mean_ms, 3),
            "p50_ms": None if a.p50_latency_ms is None else round(a.p50_latency_ms, 3),
        },
        # Server time at the tail that neither a profile nor Server-Timing could split (ms).
        "server_unsplit_ms": round(a.server_unsplit_ms, 3),
        # Server work at the tail done off-CPU (a device, a downstream call), placed in no stage.
        "server_wait_ms": round(a.server_wait_ms, 3),
        # Bandwidth the body transfer times imply (null when body size does not show in them).
        "effective_bandwidth_mbit_s": (
            round(8.0 / (a.transfer_slope_ms_per_byte * 1000.0), 3)
            if a.transfer_slope_ms_per_byte > 0
            else None
        ),
    }


def _summary(
    a: Analysis,
    bottleneck: str,
    top: StageFinding | None,
    targets_met: bool,
    targets: Targets,
    outer: str,
    first_reason: str,
    run: RunResult,
) -> str:
    at = "closed loop" if a.offered_rps is None else f"{a.offered_rps:g} requests/s"
    tail = (
        f"{a.tail_label} {a.tail_latency_ms:.1f} ms" if a.tail_latency_ms is not None else "no tail"
    )
    if bottleneck == "client":
        why = a.gate.reasons[0] if a.gate.reasons else "client gate"
        return (
            f"The client could not keep its schedule ({why}); "
            f"latencies measured on {outer} are not trustworthy."
        )
    if bottleneck == "none":
        if targets.any:
            return f"Targets met on {outer} at {at} ({tail}); no stage stands out."
        return f"No targets given; {outer} at {at}: {tail}, and no stage stands out."
    if bottleneck == "inconclusive":
        held = (
            f"; the server holds {a.server_unsplit_ms:.1f} ms of those requests' latency, unsplit"
            if a.server_unsplit_ms > 0
            else ""
        )
        if a.undecided is not None:
            held += f"; {a.undecided[0]} and {a.undecided[1]} cannot be told apart"
        return (
            f"Targets missed on {outer} ({first_reason}), but no stage clears its evidence bar "
            f"at {at} ({tail}){held}."
        )
    assert top is not None
    if bottleneck == "oom" and a.gate.tripped:
        return (
            f"Server workers were OOM-killed on this host at {at} "
            f"({top.evidence[0] if top.evidence else 'OOM kills'}); the client stalled at the "
            "same time, so its latencies are not trustworthy, but the failures are the OOM's."
        )
    if bottleneck == "oom":
        lead = (
            f"Targets missed on {outer} ({first_reason})"
            if not targets_met
            else (f"Targets met on {outer}, but workers ran out of memory")
        )
        cost = (
            f"counting each failure as at least a {a.tail_label} answer, oom explains "
            f"{top.explains_ms:.1f} ms of the tail"
            if top.explains_ms > 0
            else "the requests the killed workers held were lost"
        )
        return f"{lead}: at {at}, {top.evidence[0] if top.evidence else 'requests failed'}; {cost}."
    if top.failures_explained > 0 and (targets_met or a.missed_only_errors):
        # Named for the failures it adds, not for milliseconds.
        lead = (
            f"Targets missed on {outer} ({first_reason})"
            if not targets_met
            else f"Targets met on {outer}, but the {bottleneck} hop fails requests"
        )
        return f"{lead}: at {at}, {top.evidence[0]}."
    # explains_ms is a mean over the requests at or above the percentile (design.md §4), so its
    # share is of their mean latency, which lies above the percentile itself.
    share = (
        f" ({top.explains_ms / a.tail_mean_ms:.0%} of the {a.tail_mean_ms:.1f} ms those requests "
        "took on average)"
        if a.tail_mean_ms and a.tail_mean_ms > 0
        else ""
    )
    lead = (
        f"Targets missed on {outer} ({first_reason})"
        if not targets_met
        else (f"Targets met on {outer}, but {bottleneck} stands out")
    )
    return f"{lead}: at {at}, {bottleneck} explains {top.explains_ms:.1f} ms of the {tail}{share}."


def _next_steps(a: Analysis, ranking: list[StageFinding]) -> list[str]:
    steps: list[str] = []
    if a.undecided is not None:
        lead, other = a.undecided
        steps.append(
            f"The profile puts {lead} ahead of {other}, but too few samples tell them apart: "
            "rerun longer (--duration), or have the server send Server-Timing."
        )
    if a.server_wait_ms >= 0.1 * (a.tail_mean_ms or 0.0) > 0:
        steps.append(
            f"The server spent {a.server_wait_ms:.1f} ms of the {a.tail_label} requests' latency "
            "waiting off-CPU inside its work (a device, a downstream call, an await): no "
            "profile places it; a Server-Timing metric around the model call would."
        )
    if a.server_unsplit_ms > 0:
        # Never drop the server's time: say how much it holds and what would split it.
        steps.append(
            f"The server holds {a.server_unsplit_ms:.1f} ms of the {a.tail_label} requests' "
            "latency, unsplit: profile it (--server-pid PID on its host, or --agent URL), rerun "
            "longer for more samples, or have it send Server-Timing."
        )
    for m in a.missing:
        if m.startswith("server probe"):
            steps.append("Rerun with --server-pid PID (or --agent URL) to profile the server.")
        elif m.startswith("packet capture"):
            steps.append("Rerun as root (or with CAP_NET_RAW) so packets can be captured.")
        elif "Server-Timing" in m:
            steps.append(
                "Have the server send a Server-Timing header (e.g. preprocess;dur=…, "
                "inference;dur=…) to split server time."
            )
    if a.tail_requests < 10:
        steps.append("Rerun longer (--duration) so the tail holds more requests.")
    if len(a.attribution) < 2:
        steps.append("Add the inner paths (--path direct=…, --path proxy=…) to measure each hop.")
    if ranking:
        top = ranking[0]
        steps.append(
            f"The largest share, {top.stage} ({top.explains_ms:.1f} ms), stayed below the bar: "
            "rerun longer to narrow its interval."
        )
    if not steps:
        steps.append("Rerun longer, with --server-pid (or --agent) and packet capture enabled.")
    return steps


def _confidence_level(a: Analysis, bottleneck: str, ranking: list[StageFinding]) -> str:
    if a.gate.tripped:
        return "medium" if bottleneck == "client" else "low"
    if bottleneck == "inconclusive" or a.tail_requests < 5:
        return "low"
    if bottleneck == "none":
        return "high" if not a.missing else "medium"
    top = a.findings[bottleneck]
    runner_up = max((f.explains_ms for f in ranking if f.stage != bottleneck), default=0.0)
    clear_lead = top.explains_ms >= 1.5 * runner_up
    if top.direct_evidence and clear_lead:
        return "high"
    if top.direct_evidence or clear_lead:
        return "medium"
    return "low"


def _level_notes(a: Analysis) -> list[str]:
    return [f"missing: {m}" for m in a.missing]


def _empty(run: RunResult, targets_met: bool, judgement: dict[str, Any]) -> dict[str, Any]:
    """No measurements at all (interrupted before the first window)."""
    bottleneck = "none" if targets_met else "inconclusive"
    return {
        "bottleneck": bottleneck,
        "targets_met": targets_met,
        "summary": "No requests were measured.",
        "advice": "Rerun and let at least one step finish.",
        "trustworthy": True,
        "confidence": {"level": "low", "reasons": ["no measurements"]},
        "ranking": [],
        "attribution": {},
        "hop_deltas": [],
        "knee": {p.name: None for p in run.config.paths},
        "next_steps": [] if targets_met else ["Rerun and let at least one step finish."],
    }
