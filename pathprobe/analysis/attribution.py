"""Attribution: how many milliseconds of the tail each stage explains, with its evidence.

design.md §4: percentiles do not add. "What stage X explains at p99" is, among the requests at or
above the p99 of that path and step, the mean time attributable to X (at p50: among the requests
around the median). :func:`analyze` runs the steps in order, each in its own module:

1. the client gate over every window of the focus step (:mod:`pathprobe.analysis.client_gate`);
2. per path, the evidence of the probes (:mod:`pathprobe.analysis.evidence`), the bandwidth
   (:mod:`pathprobe.analysis.transfer`), and each completed request cut into components
   (:mod:`pathprobe.analysis.decompose`), the server's time split into work and waiting
   (:mod:`pathprobe.analysis.server_split`);
3. the OOM bar, then the components averaged over the tail and median sets and mapped to stages
   (:mod:`pathprobe.analysis.stage_means`);
4. hop deltas (:mod:`pathprobe.analysis.deltas`) and the knee;
5. one finding per stage with its evidence and bars (:mod:`pathprobe.analysis.findings`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pathprobe.analysis.client_gate import GateResult, client_gate
from pathprobe.analysis.decompose import Decomposition, decompose
from pathprobe.analysis.deltas import hop_delta_entry
from pathprobe.analysis.evidence import (
    FailureEvidence,
    NetworkEvidence,
    ServerEvidence,
    failure_evidence,
    network_evidence,
    server_evidence,
    window,
)
from pathprobe.analysis.findings import (
    FindingContext,
    StageFinding,
    oom_evidence,
    stage_findings,
    undecided_split,
)
from pathprobe.analysis.knee import find_knee
from pathprobe.analysis.lookup import hop_times_of, offered_at, result_at, summary_at
from pathprobe.analysis.model_split import model_phases
from pathprobe.analysis.server_split import baseline_samples, reassign_waiting, split_server_wait
from pathprobe.analysis.stage_means import HOP_STAGES, path_sets
from pathprobe.analysis.transfer import transfer_slope
from pathprobe.model.results import StepResult, measured, tally_of
from pathprobe.model.stages import RANKED_STAGES
from pathprobe.run import RunResult

FloatArray = npt.NDArray[np.float64]

#: Server-Timing must be on at least this share of responses to be used as the server's split.
SERVER_TIMING_MIN_SHARE = 0.5


@dataclass
class Analysis:
    """Everything the verdict needs."""

    focus_step: int
    focus_path: str
    offered_rps: float | None
    tail_label: str
    tail_latency_ms: float | None
    p50_latency_ms: float | None
    # Mean latency of the requests at or above the tail percentile (what explains_ms shares).
    tail_mean_ms: float | None
    # Transfer time per byte of body that bandwidth adds (0 when none shows), ms/byte.
    transfer_slope_ms_per_byte: float
    gate: GateResult
    findings: dict[str, StageFinding]
    attribution: dict[str, dict[str, Any]]
    hop_deltas: list[dict[str, Any]]
    knee: dict[str, float | None]
    confidence_reasons: list[str]
    missing: list[str]
    server_timing_share: float = 0.0
    tail_requests: int = 0
    local_oom_kills: bool = False  # the kernel OOM-killed server workers on this host
    # The targets the focus step missed ("p99", "error_rate"); empty when it passed.
    missed: tuple[str, ...] = ()
    # Server time of the tail that no profile or header could split (ms at the tail, mean).
    server_unsplit_ms: float = 0.0
    # Server work of the tail that its CPU did not do (a device, a downstream call): no profile
    # places it (ms at the tail, mean).
    server_wait_ms: float = 0.0
    # Two server stages split by the profile alone whose order its samples cannot tell apart.
    undecided: tuple[str, str] | None = None

    @property
    def missed_only_errors(self) -> bool:
        """The focus step missed the error-rate target and no other."""
        return self.missed == ("error_rate",)

    def failures_stage(self) -> str | None:
        """The stage that clears its bar on the most failed requests, if any does."""
        failing = [
            finding
            for finding in self.findings.values()
            if finding.clears_bar and finding.failures_explained > 0
        ]
        if not failing:
            return None
        return max(failing, key=lambda finding: finding.failures_explained).stage

    def ranking(self) -> list[StageFinding]:
        found = [
            finding
            for finding in self.findings.values()
            if finding.evidence or finding.explains_ms > 0
        ]
        # A tripped client gate heads the ranking whatever it explains: the rest was measured
        # through a client that could not keep up, so its numbers carry the client's delay.
        first = "client" if self.gate.tripped and not self.local_oom_kills else None
        # When only the error rate was missed, the miss is the failures, not the latency: the
        # stage that explains the most failures heads the ranking, however few milliseconds of
        # the tail its failed (or quickly rejected) requests carry beside slow successful ones.
        if first is None and self.missed_only_errors:
            first = self.failures_stage()
        return sorted(
            found,
            key=lambda finding: (
                finding.stage != first,
                -finding.explains_ms,
                RANKED_STAGES.index(finding.stage),
            ),
        )


@dataclass(frozen=True)
class PathEvidence:
    """The probes' evidence and the hop timings of every path at the focus step."""

    network: dict[str, NetworkEvidence]
    server: dict[str, ServerEvidence]
    failures: dict[str, FailureEvidence]
    hop_times: dict[str, dict[str, FloatArray]]


def _judged_results(
    run: RunResult, judgement: Mapping[str, Any]
) -> tuple[list[StepResult], list[tuple[Mapping[str, Any], StepResult]]]:
    """The judged path's step results, and each paired with its judged step (same order)."""
    outer = run.config.outermost.name
    results = run.steps.get(outer) or next(iter(run.steps.values()), [])
    return results, list(zip(judgement.get("steps") or [], results, strict=False))


def choose_focus_step(run: RunResult, judgement: Mapping[str, Any]) -> int:
    """The step to attribute: the first step that failed its targets, else the most loaded step."""
    results, judged = _judged_results(run, judgement)
    if not results:
        return 0
    target_rps = run.config.targets.rps
    for judged_step, res in judged:
        counts = target_rps is None or res.offered_rps is None or res.offered_rps <= target_rps
        if counts and not judged_step.get("passed", True):
            return res.step
    rated = [res for res in results if res.offered_rps is not None]
    if rated:
        return max(rated, key=lambda res: (res.offered_rps or 0.0, res.step)).step
    return results[-1].step


def missed_at(run: RunResult, judgement: Mapping[str, Any], step: int) -> tuple[str, ...]:
    """The targets the outermost path missed at ``step``."""
    _results, judged = _judged_results(run, judgement)
    return next(
        (tuple(judged_step.get("missed") or ()) for judged_step, res in judged if res.step == step),
        (),
    )


def analyze(run: RunResult, judgement: Mapping[str, Any]) -> Analysis:
    """Decompose every path at the focus step, gate, deltas, knee and per-stage findings."""
    names = tuple(p.name for p in run.config.paths if run.steps.get(p.name))
    focus = choose_focus_step(run, judgement)
    outermost = run.config.outermost.name
    outer = outermost if outermost in names else (names[-1] if names else "")
    # The verdict's numbers all come from the focus step; a hiccup of the client in another step
    # does not make them untrustworthy.
    gate = client_gate(_gate_rows(run, names, focus))
    evidence = _path_evidence(run, names, focus)
    slope = transfer_slope(run, names, focus, evidence.hop_times, evidence.network)
    decompositions = _decompositions(run, names, focus, evidence, slope)
    oom = oom_evidence(names, evidence.server, evidence.failures)
    sets = {
        name: path_sets(dec, evidence.server.get(name, ServerEvidence()), oom.clears_bar)
        for name, dec in decompositions.items()
    }
    hop_deltas = _hop_deltas(run, names, decompositions, focus)
    knee = {name: find_knee(run.step_summaries.get(name, [])) for name in names}
    ctx = FindingContext(
        run=run,
        names=names,
        outer=outer,
        focus_step=focus,
        sets=sets,
        decompositions=decompositions,
        hop_deltas=hop_deltas,
        network=evidence.network,
        server=evidence.server,
        failures=evidence.failures,
        gate=gate,
        oom=oom,
        transfer_slope_ms_per_byte=slope,
        knee=knee,
    )
    findings = stage_findings(ctx)
    outer_sets = sets.get(outer)
    tail_requests = outer_sets.tail_requests if outer_sets is not None else 0
    st_share = _server_timing_share(evidence.hop_times.get(outer, {}))
    return Analysis(
        focus_step=focus,
        focus_path=outer,
        offered_rps=offered_at(run, outer, focus),
        tail_label=ctx.tail_label,
        tail_latency_ms=ctx.tail_latency_ms,
        p50_latency_ms=outer_sets.p50_latency_ms if outer_sets is not None else None,
        tail_mean_ms=outer_sets.tail_mean_ms if outer_sets is not None else None,
        transfer_slope_ms_per_byte=slope,
        gate=gate,
        findings=findings,
        attribution={
            name: path.as_json(focus, offered_at(run, name, focus)) for name, path in sets.items()
        },
        hop_deltas=hop_deltas,
        knee=knee,
        confidence_reasons=_confidence_reasons(run, gate, st_share, tail_requests, ctx.tail_label),
        missing=_missing(run, names, evidence, st_share),
        server_timing_share=st_share,
        tail_requests=tail_requests,
        local_oom_kills=oom.clears_bar
        and any(ev.oom_killed > 0 or ev.kernel_oom_lines > 0 for ev in evidence.server.values()),
        missed=missed_at(run, judgement, focus),
        server_unsplit_ms=float(ctx.tail.get("server", 0.0)),
        server_wait_ms=float(ctx.tail.get("server_wait", 0.0)),
        undecided=undecided_split(findings, evidence.server.get(outer), decompositions.get(outer)),
    )


def _gate_rows(run: RunResult, names: Sequence[str], focus: int) -> list[tuple[Any, ...]]:
    """The client gate's input: one row per window of the focus step, every path."""
    rows: list[tuple[Any, ...]] = []
    for name in names:
        for res in run.steps.get(name, []):
            if res.step != focus:
                continue
            latency = (summary_at(run, name, res.step) or {}).get("latency_ms") or {}
            rows.append(
                (
                    name,
                    res.step,
                    measured(res),
                    latency.get("p99"),
                    res.loop_lag_ns,
                    window(run.probes, "client", name, res.step),
                    latency.get("p50"),
                    res.sample_stride,
                )
            )
    return rows


def _path_evidence(run: RunResult, names: Sequence[str], focus: int) -> PathEvidence:
    """Network, server and failure evidence and hop timings of each path's focus window."""
    evidence = PathEvidence(network={}, server={}, failures={}, hop_times={})
    for name in names:
        found = result_at(run, name, focus)
        if found is None:
            continue
        recs = measured(found)
        evidence.network[name] = network_evidence(run.probes, name, focus, recs)
        if found.engine == "grpc":
            evidence.network[name].without_exchanges()
        evidence.server[name] = server_evidence(run.probes, name, focus)
        evidence.server[name].model_phases = model_phases(
            run.probes.get("model_stats"), name, focus
        )
        evidence.server[name].set_requests(tally_of(found).requests)
        evidence.failures[name] = failure_evidence(recs, tally_of(found))
        evidence.hop_times[name] = hop_times_of(found, run)
    return evidence


def _decompositions(
    run: RunResult, names: Sequence[str], focus: int, evidence: PathEvidence, slope: float
) -> dict[str, Decomposition]:
    """Each path's focus window cut into components, innermost path first (a hop without its
    own timing header is measured against the path inside it). Without Server-Timing the server's
    time is split into work and waiting, which also tells each path's server evidence how much of
    the work its CPU did."""
    baseline = baseline_samples(run, names, evidence.network)
    decompositions: dict[str, Decomposition] = {}
    for index, name in enumerate(names):
        found = result_at(run, name, focus)
        if found is None:
            continue
        inner_totals: dict[str, FloatArray] = {}
        for inner, hop in zip(names[:index], names[1 : index + 1], strict=True):
            inner_dec = decompositions.get(inner)
            if inner_dec is not None:
                inner_totals[hop] = inner_dec.total_ms
        network = evidence.network[name]
        dec = decompose(
            name,
            measured(found),
            evidence.hop_times[name],
            list(reversed(names[1 : index + 1])),
            rtt_ms=network.rtt_ms,
            wire_ttfb_ms=network.wire_ttfb_ms,
            retrans_stalls=network.retrans_stalls,
            uploads=network.uploads,
            slope_ms_per_byte=slope,
            inner_totals=inner_totals,
        )
        if not dec.has_server_timing:
            dec.work_model = split_server_wait(dec, found, baseline)
            evidence.server[name].set_work(dec.components.get("server"))
            evidence.server[name].set_unsplit(
                dec.components.get("server"), queue_cut_out=dec.work_model is not None
            )
        reassign_waiting(dec, evidence.server[name])
        decompositions[name] = dec
    return decompositions


def _hop_deltas(
    run: RunResult, names: Sequence[str], decompositions: Mapping[str, Decomposition], focus: int
) -> list[dict[str, Any]]:
    """Each hop's delta against the path inside it (paired by seq, bootstrap CIs)."""
    seed = run.config.load.seed
    hop_deltas: list[dict[str, Any]] = []
    for index in range(1, len(names)):
        inner_name, outer_name = names[index - 1], names[index]
        inner, outer = decompositions.get(inner_name), decompositions.get(outer_name)
        if inner is None or outer is None:
            continue
        entry = hop_delta_entry(
            HOP_STAGES.get(outer_name, outer_name),
            inner_name,
            outer_name,
            (inner.seq, inner.total_ms),
            (outer.seq, outer.total_ms),
            seed=seed + 7 * index,
        )
        if entry is not None:
            entry["step"] = focus
            entry["offered_rps"] = offered_at(run, outer_name, focus)
            entry["source"] = outer.hop_source.get(outer_name, "none")
            hop_deltas.append(entry)
    return hop_deltas


def _server_timing_share(hop_times: Mapping[str, FloatArray]) -> float:
    """The share of responses that carried the most frequent Server-Timing metric."""
    present = [
        np.isfinite(v).mean() for k, v in hop_times.items() if k.startswith("server_timing.")
    ]
    return float(max(present)) if present else 0.0


def _missing(
    run: RunResult, names: Sequence[str], evidence: PathEvidence, st_share: float
) -> list[str]:
    """What was not measured, in the words the report uses."""
    missing: list[str] = []
    if not (run.probes.get("client") or {}).get("available", False):
        missing.append("client CPU was not sampled")
    for name in names[:1]:
        server = evidence.server.get(name)
        if server is not None and not server.available and server.missing:
            missing.append(f"server probe: {server.missing}")
        network = evidence.network.get(name)
        if network is not None and not network.capture_available and network.missing:
            missing.append(f"packet capture: {network.missing}")
    if st_share < SERVER_TIMING_MIN_SHARE:
        missing.append("no Server-Timing header from the server")
    return missing


def _confidence_reasons(
    run: RunResult, gate: GateResult, st_share: float, tail_n: int, tail_label: str
) -> list[str]:
    reasons: list[str] = []
    reasons.extend(gate.passed if not gate.tripped else ["client gate tripped"])
    net = run.probes.get("network") or {}
    if net.get("available"):
        drops = sum(int(w.get("capture_drops") or 0) for w in net.get("windows") or [])
        reasons.append(f"capture drops {drops}")
    else:
        reasons.append(f"no packet capture ({net.get('reason') or 'probe not run'})")
    srv = run.probes.get("server") or {}
    if srv.get("available"):
        samples = sum(int(w.get("samples") or 0) for w in srv.get("windows") or [])
        reasons.append(f"profile samples {samples}")
    else:
        reasons.append(f"no server probe ({srv.get('reason') or 'probe not run'})")
    reasons.append(f"Server-Timing on {st_share:.0%} of responses")
    reasons.append(f"{tail_n} requests at or above the {tail_label}")
    return reasons
