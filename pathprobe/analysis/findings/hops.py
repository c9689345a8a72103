"""The hop findings: ``proxy`` and ``load_balancer``, the time (or the failures) a hop adds.

A hop clears its bar on its own timing header, or when its delta's confidence interval clears
zero by a margin; a hop that fails requests the path inside it does not is an anomaly whatever its
latency.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from pathprobe.analysis.failures import hop_failures
from pathprobe.analysis.findings.context import BAR_FLOOR_MS, FindingContext, StageFinding
from pathprobe.analysis.lookup import hop_times_of, result_at, summary_at
from pathprobe.analysis.stage_means import HOP_STAGES
from pathprobe.run import RunResult

#: A hop delta's CI must clear zero by this share of the inner path's tail (and BAR_FLOOR_MS): a
#: hop costs at least a copy and a syscall; 5 % of the latency is the noise of sequential windows
#: measured on this machine kind (ABBA order removes drift, not jitter).
HOP_MARGIN_SHARE = 0.05
#: When targets are met, a stage "stands out" only for anomalies, never for ordinary work: a hop
#: that at least doubles the latency of the path inside it at the tail (the lower end of its CI
#: at least the inner tail: what a queue or a limit does; a proxy's copy, a TLS handshake or a
#: connection set-up adds a fraction — a hop adding 6 ms to a 20 ms service is ordinary work).
STANDOUT_HOP_SHARE = 1.0


def hop_findings(ctx: FindingContext) -> dict[str, StageFinding]:
    """The finding of every hop stage on the path, from each (inner path, hop path) pair."""
    found: dict[str, StageFinding] = {}
    deltas = {delta["to"]: delta for delta in ctx.hop_deltas}
    for inner_path, hop_path in itertools.pairwise(ctx.names):
        stage = HOP_STAGES.get(hop_path, "proxy")
        finding = found.setdefault(stage, ctx.base_finding(stage))
        _judge_hop(ctx, finding, inner_path, hop_path, deltas.get(hop_path))
    return found


def _judge_hop(
    ctx: FindingContext,
    finding: StageFinding,
    inner_path: str,
    hop_path: str,
    delta: Mapping[str, Any] | None,
) -> None:
    """Add the evidence of the hop from ``inner_path`` to ``hop_path`` to ``finding`` (in place)."""
    decomposition = ctx.outer_decomposition
    source = decomposition.hop_source.get(hop_path, "none") if decomposition is not None else "none"
    ci_clear = False
    if delta is not None:
        ci_clear = _delta_evidence(finding, delta)
    if source == "header":
        finding.evidence.append(
            f"its own time, from its timing header, explains {finding.explains_ms:.1f} ms of the "
            f"{ctx.where}"
        )
        finding.direct_evidence = True
    lb_queue = (
        _lb_queue(ctx.run, ctx.outer, ctx.focus_step) if finding.stage == "load_balancer" else None
    )
    if lb_queue is not None:
        finding.evidence.append(lb_queue)
    finding.clears_bar = finding.explains_ms >= ctx.bar_ms and (source == "header" or ci_clear)
    finding.stands_out = finding.stands_out and (source == "header" or ci_clear)
    added = hop_failures(
        inner_path,
        summary_at(ctx.run, inner_path, ctx.focus_step) or {},
        hop_path,
        summary_at(ctx.run, hop_path, ctx.focus_step) or {},
    )
    if added is not None and added.significant:
        # A hop that rejects or breaks requests: an anomaly whatever its latency.
        finding.evidence.insert(0, added.sentence())
        finding.failures_explained = added.excess
        finding.clears_bar = finding.stands_out = finding.direct_evidence = True


def _delta_evidence(finding: StageFinding, delta: Mapping[str, Any]) -> bool:
    """Quote the hop's delta and mark whether it stands out; True when its CI clears the margin."""
    margin = max(BAR_FLOOR_MS, HOP_MARGIN_SHARE * float(delta["inner_tail_ms"]))
    ci_clear = float(delta["tail_ci_ms"][0]) > margin or float(delta["p50_ci_ms"][0]) > margin
    how = "paired requests" if delta.get("paired", True) else "requests per path (unpaired)"
    finding.evidence.append(
        f"{delta['from']}→{delta['to']} adds {delta['p50_ms']:.1f} ms at p50 "
        f"(95% CI {delta['p50_ci_ms'][0]:.1f}…{delta['p50_ci_ms'][1]:.1f}) and "
        f"{delta['tail_ms']:.1f} ms at {delta['tail_label']} "
        f"(CI {delta['tail_ci_ms'][0]:.1f}…{delta['tail_ci_ms'][1]:.1f}), "
        f"{delta['pairs']} {how}"
    )
    standout_margin = max(margin, STANDOUT_HOP_SHARE * float(delta["inner_tail_ms"]))
    finding.stands_out = float(delta["tail_ci_ms"][0]) > standout_margin
    return ci_clear


def _lb_queue(run: RunResult, path: str, step: int) -> str | None:
    """HAProxy's own queue time (Tw) on ``path``: the LB-internal part of its delta."""
    res = result_at(run, path, step)
    if res is None:
        return None
    queue_ms = hop_times_of(res, run).get("lb_queue_ms")
    if queue_ms is None or not np.isfinite(queue_ms).any():
        return None
    values = queue_ms[np.isfinite(queue_ms)]
    return (
        f"HAProxy queue time Tw p50 {np.percentile(values, 50):.1f} ms, "
        f"p99 {np.percentile(values, 99):.1f} ms (time waiting inside the LB for a server slot)"
    )
