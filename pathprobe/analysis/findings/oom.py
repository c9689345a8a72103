"""The ``oom`` finding: large inputs exhaust server memory, workers die, requests fail.

OOM's bar is decided before attribution (:func:`oom_evidence`): failed requests count as ``oom``
in the stage means only when it clears.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pathprobe.analysis.evidence import FailureEvidence, ServerEvidence
from pathprobe.analysis.findings.context import FindingContext, OomEvidence, StageFinding


def oom_evidence(
    names: Sequence[str],
    server: Mapping[str, ServerEvidence],
    failures: Mapping[str, FailureEvidence],
) -> OomEvidence:
    """OOM clears its bar when failures of the OOM kinds coincide with memory evidence in the same
    window (worker deaths, cgroup OOM events, kernel OOM lines) — or, with no server probe, when
    failures strongly prefer large payloads — or when the OOM killer took a server worker during
    the window although none of its requests failed: the kill is the fault itself, and the
    requests that worker held were lost (e.g. one sent before the window, as the baseline's)."""
    evidence: list[str] = []
    clears_bar = False
    for name in names:
        path_server, path_failures = server.get(name), failures.get(name)
        if path_server is None or path_failures is None:
            continue
        deaths_with_large_inputs = path_server.deaths > 0 and path_failures.size_correlated
        if path_failures.oom_like and (path_server.memory_evidence or deaths_with_large_inputs):
            clears_bar = True
            evidence.append(_memory_sentence(name, path_server, path_failures))
        elif path_failures.size_correlated and not path_server.available:
            clears_bar = True
            evidence.append(
                f"{path_failures.oom_like} failures on {name} with no server probe to confirm "
                "memory, but they prefer large inputs"
            )
        elif path_server.oom_killed:
            clears_bar = True
            evidence.append(_memory_sentence(name, path_server, path_failures))
        if (
            path_failures.oom_like
            and path_failures.large_rate is not None
            and path_failures.small_rate is not None
        ):
            evidence.append(_size_sentence(path_failures))
    return OomEvidence(clears_bar, tuple(evidence) if clears_bar else ())


def oom_finding(ctx: FindingContext) -> StageFinding:
    """The OOM evidence of every path; failures outside the outer tail still count."""
    finding = ctx.base_finding("oom")
    if not ctx.oom.clears_bar:
        return finding
    finding.evidence.extend(ctx.oom.evidence)
    finding.clears_bar = finding.stands_out = True
    finding.failures_explained = float(
        max((ev.oom_like for ev in ctx.failures.values()), default=0)
    )
    finding.direct_evidence = any(ev.available for ev in ctx.server.values())
    if finding.explains_ms <= 0:
        # Failures outside the outermost path's tail still fail users.
        finding.explains_ms = max(
            (float(sets.tail.get("oom", 0.0)) for sets in ctx.sets.values()), default=0.0
        )
    return finding


def _memory_sentence(name: str, server: ServerEvidence, failures: FailureEvidence) -> str:
    """Failures on ``name`` beside what the server's memory did in the same window."""
    parts = [f"{failures.oom_like} of {failures.requests} requests on {name} failed (resets / 5xx)"]
    if server.deaths:
        parts.append(
            f"{server.deaths} server worker(s) died in the window"
            + (f", {server.oom_killed} killed by the OOM killer" if server.oom_killed else "")
        )
    if server.oom_events:
        parts.append(f"cgroup counted {server.oom_events} OOM event(s)")
    if server.kernel_oom_lines:
        parts.append(f"kernel logged {server.kernel_oom_lines} OOM line(s)")
    if server.memory_max_bytes and server.memory_limit_bytes:
        parts.append(
            f"memory peaked at {server.memory_max_bytes / 2**20:.0f} MiB of a "
            f"{server.memory_limit_bytes / 2**20:.0f} MiB limit"
        )
    return "; ".join(parts)


def _size_sentence(failures: FailureEvidence) -> str:
    """How much more often the largest payloads failed than the smallest."""
    return (
        f"failure rate {failures.large_rate:.1%} for the largest quarter of payloads vs "
        f"{failures.small_rate:.1%} for the smallest"
        + (
            f" (median failed body {failures.failed_bytes_median / 1024:.0f} KiB vs "
            f"{(failures.all_bytes_median or 0) / 1024:.0f} KiB overall)"
            if failures.failed_bytes_median
            else ""
        )
    )
