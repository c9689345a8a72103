"""The ``network`` finding: round trips, loss and bandwidth between the client and the service."""

from __future__ import annotations

import numpy as np

from pathprobe.analysis.evidence import NetworkEvidence
from pathprobe.analysis.findings.context import FindingContext, StageFinding

#: Where the round-trip time came from, as the evidence says it.
RTT_SOURCES = {
    "capture": "SYN→SYN/ACK in the capture",
    "idle-connect": "idle TCP connects",
    "client-connect": "the client's own connects",
    "none": "no RTT source",
}


def network_finding(ctx: FindingContext) -> StageFinding:
    """What the network explains of the outer path's tail; it stands out only when congested or
    lossy (a plain round trip is ordinary work)."""
    finding = ctx.base_finding("network")
    network = ctx.outer_network
    if not (finding.explains_ms > 0 or network.lossy or network.congested):
        return finding
    finding.evidence.append(
        f"round trip {network.rtt_ms:.2f} ms to {ctx.outer} ({RTT_SOURCES[network.rtt_source]}); "
        f"network explains {finding.explains_ms:.1f} ms of the {ctx.where}"
    )
    finding.evidence.extend(_wire_evidence(network))
    slope = ctx.transfer_slope_ms_per_byte
    if slope > 0:
        finding.evidence.append(
            f"time grows by {slope * 100_000:.1f} ms per 100 kB of body "
            f"(≈ {8.0 / (slope * 1000.0):.1f} Mbit/s effective)"
        )
    finding.direct_evidence = network.rtt_source in ("capture", "idle-connect")
    finding.clears_bar = finding.explains_ms >= ctx.bar_ms
    finding.stands_out = finding.clears_bar and (network.congested or network.lossy)
    return finding


def _wire_evidence(network: NetworkEvidence) -> list[str]:
    """The capture's sentences: RTT under load against idle, retransmissions, loss stalls."""
    evidence: list[str] = []
    if network.idle_rtt_p50_ms is not None and network.rtt_load_p50_ms is not None:
        evidence.append(
            f"RTT under load p50 {network.rtt_load_p50_ms:.2f} ms vs idle "
            f"{network.idle_rtt_p50_ms:.2f} ms"
        )
    if network.retrans_rate is not None:
        evidence.append(
            f"{network.retransmissions} retransmitted segments ({network.retrans_rate:.2%} of "
            "data segments)"
        )
    stalls = network.retrans_stalls or {}
    if stalls.get("stalled") and stalls.get("stalls_ms"):
        evidence.append(
            f"lost segments held up {stalls['stalled']} of {stalls['exchanges']} exchanges "
            f"by {float(np.median(stalls['stalls_ms'])):.0f} ms (median) until retransmitted"
        )
    return evidence
