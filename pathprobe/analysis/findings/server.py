"""The server findings: ``preprocessing`` and ``inference`` (its work), ``server_concurrency``
(its waiting).

The work stages quote Server-Timing and the profile; split by the profile alone, a stage clears
its bar on the low end of its share's confidence interval. Waiting stands out when the tail waits
at least as long as it works (Little's law and the work model say how much it waits).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pathprobe.analysis.decompose import Decomposition
from pathprobe.analysis.evidence import ServerEvidence, share_text
from pathprobe.analysis.findings.context import FindingContext, StageFinding
from pathprobe.analysis.lookup import summary_at
from pathprobe.analysis.model_split import PHASE_STAGES, ModelPhases
from pathprobe.analysis.server_split import profile_share_bounds
from pathprobe.analysis.stats import wilson_interval

#: When targets are met, server waiting stands out only when it is at least as long as the
#: server's work at the tail (an anomaly, not ordinary work).
STANDOUT_QUEUE_SHARE = 0.5
WORK_STAGES = ("preprocessing", "inference")


def server_findings(ctx: FindingContext) -> dict[str, StageFinding]:
    """The findings of the server's work stages and of its waiting."""
    found = {stage: _work_finding(ctx, stage) for stage in WORK_STAGES}
    found["server_concurrency"] = _concurrency_finding(ctx)
    return found


def _work_finding(ctx: FindingContext, stage: str) -> StageFinding:
    """``preprocessing`` or ``inference``: Server-Timing and the profile as evidence."""
    finding = ctx.base_finding(stage)
    if finding.explains_ms <= 0:
        return finding
    decomposition = ctx.outer_decomposition
    timed = decomposition is not None and decomposition.has_server_timing
    server = ctx.outer_server
    if timed:
        finding.evidence.append(
            f"Server-Timing: {stage} {finding.p50_ms:.1f} ms at p50, {finding.explains_ms:.1f} ms "
            f"in the {ctx.where} tail (incl. its share of CPU queueing)"
        )
        finding.direct_evidence = True
    stats = server.model_phases if not timed else None
    if stats is not None:
        finding.evidence.append(_statistics_sentence(stats, stage))
        finding.direct_evidence = True
    bounds = profile_share_bounds(server, stage)
    if server.stage_share:
        finding.evidence.append(
            f"py-spy ({server.samples} effective samples): "
            + share_text(server.stage_share, ("preprocessing", "inference", "framework", "other"))
            + " of busy server CPU"
            + (
                f"; {stage} {bounds[0]:.0%} (95% CI {bounds[1]:.0%}…{bounds[2]:.0%} over "
                f"{bounds[3]} independent samples)"
                if bounds is not None
                else ""
            )
        )
        finding.direct_evidence = True
    if timed or stats is not None or bounds is None or bounds[0] <= 0:
        finding.clears_bar = finding.explains_ms >= ctx.bar_ms
    else:
        # The split came from the profile alone: the stage clears its bar only if it would
        # with its share at the low end of its confidence interval.
        finding.clears_bar = finding.explains_ms * bounds[1] / bounds[0] >= ctx.bar_ms
    return finding


def _concurrency_finding(ctx: FindingContext) -> StageFinding:
    """``server_concurrency``: how long the tail waited in the server, and why it is waiting."""
    finding = ctx.base_finding("server_concurrency")
    if finding.explains_ms <= 0:
        return finding
    decomposition = ctx.outer_decomposition
    if decomposition is not None and decomposition.total_ms.size:
        summary = summary_at(ctx.run, ctx.outer, ctx.focus_step) or {}
        achieved = float(summary.get("achieved_rps") or 0.0)
        finding.evidence.append(_littles_law(decomposition, achieved))
    finding.evidence.append(_waiting_sentence(ctx, finding.explains_ms))
    server = ctx.outer_server
    if server.model_phases is not None:
        finding.evidence.append(_statistics_sentence(server.model_phases, "server_concurrency"))
        finding.direct_evidence = True
    if server.utilisation is not None:
        finding.evidence.append(
            f"server CPU {server.cores_used or 0:.2f} of {server.cores_available or 0:g} core(s) "
            f"({server.utilisation:.0%}) across {server.workers} process(es)"
            + (
                f", on average {server.busy_workers_mean:.1f} of them busy (over half a core)"
                if server.busy_workers_mean is not None
                else ""
            )
            + (
                f", busiest {server.busiest_worker_percent:.0f}% of a core"
                if server.busiest_worker_percent is not None
                else ""
            )
        )
        finding.direct_evidence = True
    else:
        finding.evidence.append("no server probe: CPU use unknown, waiting charged to concurrency")
    knee = ctx.knee.get(ctx.outer)
    if knee is not None:
        finding.evidence.append(f"{ctx.outer} stops keeping up at {knee:g} requests/s")
    queue_tail = float(ctx.tail.get("server_concurrency", 0.0))
    work_tail = float(ctx.tail.get("preprocessing", 0.0) + ctx.tail.get("inference", 0.0))
    finding.clears_bar = finding.explains_ms >= ctx.bar_ms
    finding.stands_out = finding.clears_bar and queue_tail >= STANDOUT_QUEUE_SHARE * max(
        queue_tail + work_tail, 1e-9
    )
    return finding


def _statistics_sentence(stats: ModelPhases, stage: str) -> str:
    """The server's own statistics for ``stage`` (model-wide: every client's requests count)."""
    return (
        f"the server's statistics (ModelStatistics, model-wide, {stats.requests} requests in the "
        f"window): {' + '.join(p for p, s in PHASE_STAGES.items() if s == stage)} "
        f"{stats.stage_ms.get(stage, 0.0):.1f} ms per request"
    )


def _littles_law(decomposition: Decomposition, achieved_rps: float) -> str:
    """Requests in the server on average (rate × time in it), and how many were worked on."""
    components = decomposition.components
    server_parts = [
        k
        for k in ("server_queue", "preprocessing", "inference", "server_other", "server")
        if k in components
    ]
    in_server_ms = float(np.mean(np.sum([components[k] for k in server_parts], axis=0)))
    work_parts = [k for k in ("preprocessing", "inference", "server_other") if k in components]
    working_ms = (
        float(np.mean(np.sum([components[k] for k in work_parts], axis=0))) if work_parts else None
    )
    text = (
        f"Little's law: {achieved_rps:.1f} requests/s × {in_server_ms:.1f} ms in the server = "
        f"{achieved_rps * in_server_ms / 1000:.1f} requests in the server on average"
    )
    if working_ms is not None:
        text += f", only {achieved_rps * working_ms / 1000:.1f} of them being worked on"
    return text


def _waiting_sentence(ctx: FindingContext, explains_ms: float) -> str:
    """The waiting beyond the server's uncontended work (its work model), or outside its timers."""
    decomposition = ctx.outer_decomposition
    model = decomposition.work_model if decomposition is not None else None
    if model is None:
        return (
            f"waiting in the server (outside its own timers) explains {explains_ms:.1f} ms "
            f"of the {ctx.where}"
        )
    return (
        f"uncontended, the server took {model.intercept_ms:.1f} ms"
        + (
            f" + {model.ms_per_byte * 100_000:.1f} ms per 100 kB of body"
            if model.ms_per_byte > 0
            else ""
        )
        + f" ({model.samples} requests that found it empty, {model.baseline_samples} of "
        f"them sent one at a time before the load); waiting beyond that explains "
        f"{explains_ms:.1f} ms of the {ctx.where}"
    )


def undecided_split(
    findings: Mapping[str, StageFinding],
    server: ServerEvidence | None,
    decomposition: Decomposition | None,
) -> tuple[str, str] | None:
    """The two profile-split stages, leader first, when both clear their bars but the samples
    cannot say which one is larger: among the samples in either, the leader's share must be above
    one half at the low end of its 95 % Wilson interval (a sign test; 12 of 13 is decisive, 7 of
    13 is not). None when decided, or when Server-Timing measured the split."""
    if server is None or decomposition is None or decomposition.has_server_timing:
        return None
    pre, inf = findings["preprocessing"], findings["inference"]
    if not (pre.clears_bar and inf.clears_bar):
        return None
    pre_bounds = profile_share_bounds(server, "preprocessing")
    inf_bounds = profile_share_bounds(server, "inference")
    if pre_bounds is None or inf_bounds is None:
        return None
    pre_share, inf_share, samples = pre_bounds[0], inf_bounds[0], pre_bounds[3]
    lead, other = (
        ("preprocessing", "inference") if pre_share >= inf_share else ("inference", "preprocessing")
    )
    lead_samples = max(pre_share, inf_share) * samples
    other_samples = min(pre_share, inf_share) * samples
    low, _high = wilson_interval(lead_samples, lead_samples + other_samples)
    return None if low > 0.5 else (lead, other)
