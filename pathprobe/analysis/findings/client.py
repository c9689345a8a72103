"""The ``client`` finding: the load generator could not keep its schedule."""

from __future__ import annotations

from pathprobe.analysis.findings.context import FindingContext, StageFinding


def client_finding(ctx: FindingContext) -> StageFinding:
    """A tripped client gate is an anomaly whatever it explains; else the tail's send slip."""
    finding = ctx.base_finding("client")
    if ctx.gate.tripped:
        finding.evidence.extend(ctx.gate.reasons)
        finding.clears_bar = finding.stands_out = finding.direct_evidence = True
    elif finding.explains_ms >= ctx.bar_ms:
        finding.evidence.append(
            f"requests left {finding.explains_ms:.1f} ms late on average in the tail"
        )
    return finding
