"""Per-stage findings: what each stage explains of the tail, its evidence, and its bars.

One module per part of the request path (design.md §2): :mod:`.client`, :mod:`.network`,
:mod:`.hops` (``proxy``, ``load_balancer``), :mod:`.server` (``server_concurrency``,
``preprocessing``, ``inference``) and :mod:`.oom`. Each reads one :class:`FindingContext`, built
once per analysis, and returns :class:`StageFinding` objects. A new stage's finding goes here.
"""

from __future__ import annotations

from pathprobe.analysis.findings.client import client_finding
from pathprobe.analysis.findings.context import FindingContext, OomEvidence, StageFinding
from pathprobe.analysis.findings.hops import hop_findings
from pathprobe.analysis.findings.network import network_finding
from pathprobe.analysis.findings.oom import oom_evidence, oom_finding
from pathprobe.analysis.findings.server import server_findings, undecided_split
from pathprobe.model.stages import RANKED_STAGES

__all__ = [
    "FindingContext",
    "OomEvidence",
    "StageFinding",
    "oom_evidence",
    "stage_findings",
    "undecided_split",
]


def stage_findings(ctx: FindingContext) -> dict[str, StageFinding]:
    """Every ranked stage's finding, in the order of the stages (a stage without a rule keeps
    what it explains and no evidence)."""
    found = {stage: ctx.base_finding(stage) for stage in RANKED_STAGES}
    found["client"] = client_finding(ctx)
    found["network"] = network_finding(ctx)
    found.update(hop_findings(ctx))
    found.update(server_findings(ctx))
    found["oom"] = oom_finding(ctx)
    return found
