"""Attribution: how many milliseconds of the tail each stage explains, with its evidence.

design.md §4: percentiles do not add. "What stage X explains at p99" is, among the requests at or
above the p99 of that path and step, the mean time attributable to X (at p50: among the requests
around the median). Each completed request is first cut into components
(:mod:`pathprobe.analysis.decompose`); this module maps components to stages, averages them over the
tail and median sets, and collects the evidence sentences and bars every stage must clear.

Mapping of components to stages:

* ``pool_wait`` is time queued in the client for a connection that something slower held: it is
  charged to the other non-client components of the same request set, in proportion.
* ``server_queue`` (server time outside every Server-Timing metric, plus the waiting found inside
  awaiting spans by :func:`reassign_waiting`) is split by :func:`cpu_caused_wait_ms`: the waiting
  CPU contention alone explains goes to the CPU stages by their profile shares (or Server-Timing
  proportions without a usable profile), the rest — waiting while CPU was to spare — to
  ``server_concurrency``. Without a server probe it all goes to ``server_concurrency`` (and the
  evidence says so).
* an unsplit ``server`` (no Server-Timing) is split by the profile's busy shares when there is a
  profile, else stays the category ``server``.
* failed requests rank above every success; in the tail set each contributes
  max(its elapsed time, the tail latency of the successes) — a failure costs the user at least a
  slow answer — to ``oom`` when the OOM evidence clears its bar, else to the category ``errors``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pathprobe.analysis.client_gate import GateResult, client_gate
from pathprobe.analysis.decompose import (
    MIN_UPLOAD_SAMPLES,
    Decomposition,
    decompose,
    transfer_slope_ms_per_byte,
)
from pathprobe.analysis.deltas import hop_delta_entry, tail_percentile
from pathprobe.analysis.evidence import (
    FailureEvidence,
    NetworkEvidence,
    ServerEvidence,
    failure_evidence,
    network_evidence,
    server_evidence,
    share_text,
    window,
)
from pathprobe.analysis.failures import hop_failures
from pathprobe.analysis.knee import find_knee
from pathprobe.analysis.server_work import (
    WorkModel,
    fit_work_model,
    in_flight_at_send,
    split_work_and_wait,
)
from pathprobe.analysis.stats import wilson_interval
from pathprobe.decode.hopheaders import per_request_hop_times
from pathprobe.model.records import Records, completed
from pathprobe.model.results import StepResult, header_values, measured, tally_of
from pathprobe.model.stages import RANKED_STAGES
from pathprobe.run import RunResult

FloatArray = npt.NDArray[np.float64]

#: Hop (path) names → the stage the hop is. Paths not listed are proxies of some kind.
HOP_STAGES = {"proxy": "proxy", "lb": "load_balancer"}
#: The median set: requests between these percentiles of latency ("around the median").
MEDIAN_BAND = (45.0, 55.0)
#: A stage must explain at least this share of the tail latency to clear its bar. A stage whose
#: complete removal would shorten the tail by less than a tenth did not make a target miss by a
#: meaningful amount; a tenth is also above the run-to-run drift of a tail over short windows.
BAR_SHARE_OF_TAIL = 0.10
#: ...and at least this many ms (timer resolution, loopback noise).
BAR_FLOOR_MS = 2.0
#: A hop delta's CI must clear zero by this share of the inner path's tail (and BAR_FLOOR_MS): a
#: hop costs at least a copy and a syscall; 5 % of the latency is the noise of sequential windows
#: measured on this machine kind (ABBA order removes drift, not jitter).
HOP_MARGIN_SHARE = 0.05
#: When targets are met, a stage "stands out" only for anomalies, never for ordinary work: a hop
#: that at least doubles the latency of the path inside it at the tail (the lower end of its CI
#: at least the inner tail: what a queue or a limit does; a proxy's copy, a TLS handshake or a
#: connection set-up adds a fraction — a hop adding 6 ms to a 20 ms service is ordinary work),
#: server waiting at least as long as it works at the tail, congestion or loss in the network,
#: OOM, a tripped client gate, a hop that fails requests.
STANDOUT_HOP_SHARE = 1.0
STANDOUT_QUEUE_SHARE = 0.5
#: Utilisation above which the CPU counts as saturated: every wait is a wait for it. 0.95 leaves
#: room for the sampler's own jitter (5 Hz ticks) on a core that is in fact always busy.
CPU_SATURATED = 0.95
#: See _transfer_slope.
TRANSFER_MIN_SPREAD_MS = 5.0
#: A bandwidth estimate is kept only while the bytes really moved per ms stay within this factor
#: of the bandwidth it implies (see _link_can_carry): 2 allows for the slope's estimation error.
LINK_CAPACITY_SLACK = 2.0
#: Beside Server-Timing, profile shares from fewer samples are not preferred to split time: a
#: share's standard error is sqrt(p(1-p)/n), ±7 percentage points at n = 50 — coarser than that,
#: Server-Timing's proportions are the better split.
MIN_PROFILE_SAMPLES = 50
#: Without Server-Timing the profile is the only split, and its uncertainty is carried by the bar
#: instead (a stage clears it on the lower end of its share's 95 % Wilson interval, see
#: :func:`profile_share_bounds`), so few samples are usable: 5 unanimous samples already bound a
#: share above 0.56. Below 5 a single stray sample swings a share by 20 points.
MIN_PROFILE_SAMPLES_ALONE = 5
#: A span computes when its CPU share is at least this fraction of its wall-time share; below,
#: most of its time is spent not running (awaiting a device, or its event loop busy elsewhere).
WAIT_SHARE_RATIO = 0.5
#: Server-Timing must be on at least this share of responses to be used as the server's split.
SERVER_TIMING_MIN_SHARE = 0.5


@dataclass
class StageFinding:
    stage: str
    explains_ms: float = 0.0
    p50_ms: float = 0.0
    evidence: list[str] = field(default_factory=list)
    clears_bar: bool = False
    stands_out: bool = False
    direct_evidence: bool = False  # measured by the stage's own signal, not inferred
    # Failed requests (errors as the targets count them) this stage explains at the focus step.
    failures_explained: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "explains_ms": round(self.explains_ms, 3),
            "p50_ms": round(self.p50_ms, 3),
            "evidence": list(self.evidence),
            "clears_bar": self.clears_bar,
            "stands_out": self.stands_out,
            **(
                {"failures_explained": round(self.failures_explained, 1)}
                if self.failures_explained
                else {}
            ),
        }


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
        failing = [f for f in self.findings.values() if f.clears_bar and f.failures_explained > 0]
        if not failing:
            return None
        return max(failing, key=lambda f: f.failures_explained).stage

    def ranking(self) -> list[StageFinding]:
        found = [f for f in self.findings.values() if f.evidence or f.explains_ms > 0]
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
            key=lambda f: (f.stage != first, -f.explains_ms, RANKED_STAGES.index(f.stage)),
        )


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
    for j, res in judged:
        counts = target_rps is None or res.offered_rps is None or res.offered_rps <= target_rps
        if counts and not j.get("passed", True):
            return res.step
    rated = [r for r in results if r.offered_rps is not None]
    if rated:
        return max(rated, key=lambda r: (r.offered_rps or 0.0, r.step)).step
    return results[-1].step


def missed_at(run: RunResult, judgement: Mapping[str, Any], step: int) -> tuple[str, ...]:
    """The targets the outermost path missed at ``step``."""
    _results, judged = _judged_results(run, judgement)
    return next((tuple(j.get("missed") or ()) for j, res in judged if res.step == step), ())


def _result(run: RunResult, path: str, step: int) -> StepResult | None:
    for res in run.steps.get(path, []):
        if res.step == step:
            return res
    return None


def _hop_times(res: StepResult, run: RunResult) -> dict[str, FloatArray]:
    names = set(res.headers)
    values = {name: header_values(res, name) for name in names}
    return per_request_hop_times(values, run.config.probes)


def _median_mask(total: FloatArray) -> npt.NDArray[np.bool_]:
    if total.size == 0:
        return np.zeros(0, bool)
    lo, hi = np.percentile(total, MEDIAN_BAND)
    mask: npt.NDArray[np.bool_] = (total >= lo) & (total <= hi)
    if not mask.any():
        mask = np.abs(total - np.median(total)) == np.min(np.abs(total - np.median(total)))
    return mask


def map_to_stages(
    means: Mapping[str, float],
    server: ServerEvidence,
    oom_bar: bool,
) -> dict[str, float]:
    """Component means of one request set → stage/category means (module docstring)."""
    out: dict[str, float] = {}

    def add(key: str, value: float) -> None:
        if value:
            out[key] = out.get(key, 0.0) + value

    for key, value in means.items():
        if key in ("pool_wait", "server_queue", "server", "failed"):
            continue
        add(HOP_STAGES.get(key, key) if key in HOP_STAGES else key, value)
    cpu_share = _cpu_shares(server, means)
    queue = means.get("server_queue", 0.0)
    if queue:
        cpu_wait = cpu_caused_wait_ms(server)
        if cpu_wait is None:
            add("server_concurrency", queue)
        else:
            on_cpu = min(queue, cpu_wait)
            add("server_concurrency", queue - on_cpu)
            for stage, share in cpu_share.items():
                add(stage, on_cpu * share)
    unsplit = means.get("server", 0.0)
    if unsplit:
        busy = {k: v for k, v in server.stage_share.items() if k != "idle"}
        total = sum(busy.values())
        if total > 0 and server.busy_samples >= MIN_PROFILE_SAMPLES_ALONE:
            # The profile sees where the CPU went; the part of the work the CPU did not do (a
            # device, a downstream call, an await) no profile can place, and no stage is given it.
            on_cpu = unsplit * (
                1.0 if server.cpu_share_of_work is None else server.cpu_share_of_work
            )
            for stage, share in busy.items():
                add(stage, on_cpu * share / total)
            add("server_wait", unsplit - on_cpu)
        else:
            add("server", unsplit)
    failed = means.get("failed", 0.0)
    if failed:
        add("oom" if oom_bar else "errors", failed)
    pool = means.get("pool_wait", 0.0)
    if pool:
        others = {k: v for k, v in out.items() if k != "client" and v > 0}
        total = sum(others.values())
        if total > 0:
            for k, v in others.items():
                out[k] += pool * v / total
        else:
            add("pool_wait", pool)
    return out


def cpu_caused_wait_ms(server: ServerEvidence) -> float | None:
    """The waiting per request that CPU contention alone would cause; None when unknown.

    Queueing for the CPU, with the server's cores busy a fraction u of the time and each request
    needing S ms of CPU, waits S·u/(1−u) on average (M/M/1 on the pooled cores; M/M/c waits less,
    so this errs towards the CPU). Waiting beyond that happened while CPU was to spare: a worker,
    lock or process limit — server_concurrency. Without S (no request count), u·(waiting) is the
    PASTA share: the fraction of waiting requests that found the CPU busy.
    """
    u = server.utilisation
    if u is None:
        return None
    if u >= CPU_SATURATED:
        return math.inf
    if server.cpu_ms_per_request is None:
        return None
    return server.cpu_ms_per_request * u / (1.0 - u)


def _cpu_shares(server: ServerEvidence, means: Mapping[str, float]) -> dict[str, float]:
    """How CPU time divides among categories: the profile's busy shares, else Server-Timing's."""
    busy = {k: v for k, v in server.stage_share.items() if k != "idle" and v > 0}
    work = {k: means.get(k, 0.0) for k in ("preprocessing", "inference", "server_other")}
    has_timing = sum(work.values()) > 0
    enough = MIN_PROFILE_SAMPLES if has_timing else MIN_PROFILE_SAMPLES_ALONE
    samples = server.samples if has_timing else server.busy_samples
    if busy and samples >= enough:
        total = sum(busy.values())
        return {k: v / total for k, v in busy.items()}
    total = sum(work.values())
    if total > 0:
        return {k: v / total for k, v in work.items() if v > 0}
    # Neither a profile nor Server-Timing: the CPU was busy with work nobody could split.
    return {"server": 1.0}


def reassign_waiting(dec: Decomposition, server: ServerEvidence) -> None:
    """Move the time a Server-Timing span spent *waiting* into ``server_queue`` (in place).

    An async server's span that awaits (a device, a downstream call) also contains the time its
    event loop was busy with other requests. Such a span is recognised by its CPU: its share of the
    server's busy profile samples is less than :data:`WAIT_SHARE_RATIO` of its share of server wall
    time. Its own duration is taken as its uncontended value — the p10 over the window's requests
    — and everything above that is waiting, charged like queueing. Spans that compute (CPU share
    in line with wall share) keep all their time, including size-dependent variation.
    """
    if server.samples < MIN_PROFILE_SAMPLES or not dec.has_server_timing or not dec.total_ms.size:
        return
    busy = {k: v for k, v in server.stage_share.items() if k != "idle"}
    cpu_total = sum(busy.values())
    spans = [k for k in ("preprocessing", "inference", "server_other") if k in dec.components]
    wall = {k: float(dec.components[k].mean()) for k in spans}
    wall_total = sum(wall.values()) + float(
        dec.components.get("server_queue", 0.0 * dec.total_ms).mean()
    )
    if cpu_total <= 0 or wall_total <= 0:
        return
    for stage in spans:
        if stage == "server_other":
            cpu_share = (busy.get("other", 0.0) + busy.get("framework", 0.0)) / cpu_total
        else:
            cpu_share = busy.get(stage, 0.0) / cpu_total
        if cpu_share >= WAIT_SHARE_RATIO * wall[stage] / wall_total:
            continue
        arr = dec.components[stage]
        base = float(np.percentile(arr, 10))
        excess = np.maximum(arr - base, 0.0)
        dec.components[stage] = arr - excess
        dec.components["server_queue"] = dec.components.get("server_queue", 0.0 * arr) + excess


def profile_share_bounds(
    server: ServerEvidence, stage: str
) -> tuple[float, float, float, int] | None:
    """(share, low, high, n) of ``stage`` among the busy profile samples, with its 95 % Wilson
    interval; None without a usable profile.

    Samples of one request are not independent (at 100 Hz a 150 ms request is sampled 15 times in
    the same function), so ``n`` is the busy samples or the window's requests, whichever is fewer.
    """
    busy = {k: v for k, v in server.stage_share.items() if k != "idle"}
    total = sum(busy.values())
    if total <= 0 or server.busy_samples < MIN_PROFILE_SAMPLES_ALONE:
        return None
    share = busy.get(stage, 0.0) / total
    n = min(server.busy_samples, server.requests) if server.requests else server.busy_samples
    low, high = wilson_interval(share * n, n)
    return share, low, high, n


def _undecided_split(
    findings: Mapping[str, StageFinding],
    server: ServerEvidence | None,
    dec: Decomposition | None,
) -> tuple[str, str] | None:
    """The two profile-split stages, leader first, when both clear their bars but the samples
    cannot say which one is larger: among the samples in either, the leader's share must be above
    one half at the low end of its 95 % Wilson interval (a sign test; 12 of 13 is decisive, 7 of
    13 is not). None when decided, or when Server-Timing measured the split."""
    if server is None or dec is None or dec.has_server_timing:
        return None
    pre, inf = findings["preprocessing"], findings["inference"]
    if not (pre.clears_bar and inf.clears_bar):
        return None
    a, b = profile_share_bounds(server, "preprocessing"), profile_share_bounds(server, "inference")
    if a is None or b is None:
        return None
    lead, other = ("preprocessing", "inference") if a[0] >= b[0] else ("inference", "preprocessing")
    n = a[3]
    k_lead, k_other = max(a[0], b[0]) * n, min(a[0], b[0]) * n
    low, _high = wilson_interval(k_lead, k_lead + k_other)
    return None if low > 0.5 else (lead, other)


def split_server_wait(
    dec: Decomposition, result: StepResult, baseline: tuple[FloatArray, FloatArray] | None
) -> WorkModel | None:
    """Without Server-Timing: cut the unsplit ``server`` component into work (``server``) and
    waiting (``server_queue``) by the uncontended work pathprobe measured itself (in place; see
    :mod:`pathprobe.analysis.server_work`). Returns the work model, None when there was nothing
    uncontended to learn it from (the server's time then stays unsplit)."""
    server = dec.components.get("server")
    if server is None or not server.size:
        return None
    recs = result.records
    index = np.searchsorted(recs["seq"], dec.seq)
    ok = recs[index]
    bytes_out = ok["bytes_out"].astype(np.float64)
    if result.sample_stride == 1:
        # Every request of the window is in the records, so the count in flight is exact.
        ahead = in_flight_at_send(
            recs["actual_ns"], np.where(recs["end_ns"] > 0, recs["end_ns"], np.iinfo(np.int64).max)
        )[index]
        found_empty = ahead == 0
    else:
        found_empty = np.zeros(server.size, bool)
    xs, ys = [bytes_out[found_empty]], [server[found_empty]]
    if baseline is not None:
        xs.append(baseline[0])
        ys.append(baseline[1])
    model = fit_work_model(
        np.concatenate(xs), np.concatenate(ys), 0 if baseline is None else baseline[0].size
    )
    if model is None:
        return None
    work, wait = split_work_and_wait(server, bytes_out, found_empty, model)
    dec.components["server"] = work
    dec.components["server_queue"] = wait
    return model


def _baseline_samples(
    run: RunResult, names: Sequence[str], net_ev: Mapping[str, NetworkEvidence]
) -> tuple[FloatArray, FloatArray] | None:
    """(bytes, server ms) of the baseline's requests — sent one at a time before the load, on the
    innermost path that has one — with the client and the network taken out as in a window."""
    for name in names:
        results = run.baselines.get(name)
        if not results:
            continue
        recs = np.concatenate([measured(res) for res in results])
        ev = net_ev.get(name) or NetworkEvidence()
        dec = decompose(name, recs, {}, [], rtt_ms=ev.rtt_ms)
        server = dec.components.get("server")
        if server is None or not server.size:
            continue
        ok = recs[completed(recs)]
        return ok["bytes_out"].astype(np.float64), server
    return None


def _set_means(
    dec: Decomposition, mask: npt.NDArray[np.bool_], failed_in_set: int, failed_ms: float
) -> dict[str, float]:
    """Mean of each component over the masked successes plus ``failed_in_set`` failures."""
    n_ok = int(mask.sum())
    n = n_ok + failed_in_set
    if n == 0:
        return {}
    out = {k: float(v[mask].sum()) / n for k, v in dec.components.items()}
    if failed_in_set:
        out["failed"] = failed_ms * failed_in_set / n
    return out


def _mean_or_none(values: FloatArray) -> float | None:
    return float(values.mean()) if values.size else None


def _ledger(parts: Mapping[str, float], measured_ms: float | None) -> dict[str, float | None]:
    """Sum of a set's parts against its measured mean latency (design.md §4, one ledger)."""
    total = float(sum(parts.values()))
    no_stage = float(sum(v for k, v in parts.items() if k not in RANKED_STAGES))
    return {
        "measured_ms": None if measured_ms is None else round(measured_ms, 3),
        "sum_ms": round(total, 3),
        "no_stage_ms": round(no_stage, 3),
    }


def _tail_mean(ok_tail_ms: FloatArray, failed_in_set: int, failed_ms: float) -> float | None:
    """Mean latency of a tail set (failures counted at ``failed_ms``, as in :func:`_set_means`)."""
    n = ok_tail_ms.size + failed_in_set
    if n == 0:
        return None
    return (float(ok_tail_ms.sum()) + failed_ms * failed_in_set) / n


def analyze(run: RunResult, judgement: Mapping[str, Any]) -> Analysis:
    """Decompose every path at the focus step, gate, deltas, knee and per-stage findings."""
    config = run.config
    seed = config.load.seed
    names = [p.name for p in config.paths if run.steps.get(p.name)]
    focus = choose_focus_step(run, judgement)
    outer = (
        config.outermost.name if config.outermost.name in names else (names[-1] if names else "")
    )
    missing: list[str] = []

    # -- client gate over the windows of the focus step (every path) --
    # The verdict's numbers all come from the focus step; a hiccup of the client in another step
    # does not make them untrustworthy.
    gate_rows = []
    for name in names:
        for res in run.steps.get(name, []):
            if res.step != focus:
                continue
            recs = measured(res)
            summ = _summary(run, name, res.step)
            lat = (summ or {}).get("latency_ms") or {}
            p99, p50 = lat.get("p99"), lat.get("p50")
            gate_rows.append(
                (
                    name,
                    res.step,
                    recs,
                    p99,
                    res.loop_lag_ns,
                    window(run.probes, "client", name, res.step),
                    p50,
                    res.sample_stride,
                )
            )
    gate = client_gate(gate_rows)
    if not (run.probes.get("client") or {}).get("available", False):
        missing.append("client CPU was not sampled")

    # -- per path: evidence and decomposition at the focus step --
    decs: dict[str, Decomposition] = {}
    net_ev: dict[str, NetworkEvidence] = {}
    srv_ev: dict[str, ServerEvidence] = {}
    fail_ev: dict[str, FailureEvidence] = {}
    hop_times: dict[str, dict[str, FloatArray]] = {}
    st_share = 0.0
    for name in names:
        found = _result(run, name, focus)
        if found is None:
            continue
        recs = measured(found)
        net_ev[name] = network_evidence(run.probes, name, focus, recs)
        srv_ev[name] = server_evidence(run.probes, name, focus)
        srv_ev[name].set_requests(tally_of(found).requests)
        fail_ev[name] = failure_evidence(recs, tally_of(found))
        hop_times[name] = _hop_times(found, run)
    slope = _transfer_slope(run, names, focus, hop_times, net_ev)
    baseline = _baseline_samples(run, names, net_ev)
    for i, name in enumerate(names):
        found = _result(run, name, focus)
        if found is None:
            continue
        recs = measured(found)
        hops = [n for n in reversed(names[1 : i + 1])]
        inner_totals: dict[str, FloatArray] = {}
        for j in range(1, i + 1):
            inner_dec = decs.get(names[j - 1])
            if inner_dec is not None:
                inner_totals[names[j]] = inner_dec.total_ms
        decs[name] = decompose(
            name,
            recs,
            hop_times[name],
            hops,
            rtt_ms=net_ev[name].rtt_ms,
            wire_ttfb_ms=net_ev[name].wire_ttfb_ms,
            retrans_stalls=net_ev[name].retrans_stalls,
            uploads=net_ev[name].uploads,
            slope_ms_per_byte=slope,
            inner_totals=inner_totals,
        )
        if not decs[name].has_server_timing:
            decs[name].work_model = split_server_wait(decs[name], found, baseline)
            srv_ev[name].set_work(decs[name].components.get("server"))
        reassign_waiting(decs[name], srv_ev[name])
        if name == outer:
            present = [
                np.isfinite(v).mean()
                for k, v in hop_times[name].items()
                if k.startswith("server_timing.")
            ]
            st_share = float(max(present)) if present else 0.0

    # -- OOM bar (any path) --
    oom_bar, oom_evidence = _oom(names, srv_ev, fail_ev, run)

    # -- attribution per path --
    attribution: dict[str, dict[str, Any]] = {}
    tail_sets: dict[str, dict[str, float]] = {}
    p50_sets: dict[str, dict[str, float]] = {}
    tail_label = "p99"
    tail_latency: float | None = None
    tail_mean: float | None = None
    p50_latency: float | None = None
    tail_n = 0
    for name, dec in decs.items():
        n_all = dec.total_ms.size + dec.failed_ms.size
        label, q = tail_percentile(n_all)
        k = max(1, math.ceil(n_all * (1.0 - q / 100.0)))
        failed_in = min(k, dec.failed_ms.size)
        ok_total = dec.total_ms
        ok_tail_cut = float(np.percentile(ok_total, q, method="higher")) if ok_total.size else 0.0
        if failed_in >= k:
            tail_mask = np.zeros(ok_total.size, bool)
        else:
            order = np.argsort(-ok_total, kind="stable")
            tail_mask = np.zeros(ok_total.size, bool)
            tail_mask[order[: k - failed_in]] = True
        failed_cost = (
            float(np.maximum(np.sort(dec.failed_ms)[::-1][:failed_in], ok_tail_cut).mean())
            if failed_in
            else 0.0
        )
        tail_means = _set_means(dec, tail_mask, failed_in, failed_cost)
        p50_means = _set_means(dec, _median_mask(ok_total), 0, 0.0)
        srv = srv_ev.get(name, ServerEvidence())
        tail_sets[name] = map_to_stages(tail_means, srv, oom_bar)
        p50_sets[name] = map_to_stages(p50_means, srv, oom_bar)
        attribution[name] = {
            "step": focus,
            "offered_rps": _offered(run, name, focus),
            "p50": {k2: round(v, 3) for k2, v in sorted(p50_sets[name].items())},
            label: {k2: round(v, 3) for k2, v in sorted(tail_sets[name].items())},
            "percentile_label": label,
            "tail_requests": int(k),
            "hop_sources": dict(dec.hop_source),
            # The ledger: each millisecond attributed once, so the parts add up to the measured
            # mean of each set; "no_stage_ms" is what belongs to no stage (framework, other,
            # unsplit server, failures without a cause).
            "ledger": {
                "p50": _ledger(p50_sets[name], _mean_or_none(ok_total[_median_mask(ok_total)])),
                label: _ledger(
                    tail_sets[name], _tail_mean(ok_total[tail_mask], failed_in, failed_cost)
                ),
            },
        }
        if name == outer:
            tail_label, tail_n = label, int(k)
            tail_latency = ok_tail_cut if ok_total.size else None
            tail_mean = _tail_mean(ok_total[tail_mask], failed_in, failed_cost)
            p50_latency = float(np.percentile(ok_total, 50)) if ok_total.size else None

    # -- hop deltas (paired by seq, bootstrap CIs) --
    hop_deltas: list[dict[str, Any]] = []
    for j in range(1, len(names)):
        inner_name, outer_name = names[j - 1], names[j]
        a, b = decs.get(inner_name), decs.get(outer_name)
        if a is None or b is None:
            continue
        entry = hop_delta_entry(
            HOP_STAGES.get(outer_name, outer_name),
            inner_name,
            outer_name,
            (a.seq, a.total_ms),
            (b.seq, b.total_ms),
            seed=seed + 7 * j,
        )
        if entry is not None:
            entry["step"] = focus
            entry["offered_rps"] = _offered(run, outer_name, focus)
            entry["source"] = b.hop_source.get(outer_name, "none")
            hop_deltas.append(entry)

    knee = {name: find_knee(run.step_summaries.get(name, [])) for name in names}

    findings = _findings(
        run,
        names,
        outer,
        focus,
        tail_sets,
        p50_sets,
        tail_latency,
        tail_label,
        decs,
        hop_deltas,
        net_ev,
        srv_ev,
        fail_ev,
        gate,
        oom_bar,
        oom_evidence,
        slope,
        knee,
    )
    confidence = _confidence_reasons(run, gate, st_share, tail_n, tail_label)
    for name in names[:1]:
        ev = srv_ev.get(name)
        if ev is not None and not ev.available and ev.missing:
            missing.append(f"server probe: {ev.missing}")
        nev = net_ev.get(name)
        if nev is not None and not nev.capture_available and nev.missing:
            missing.append(f"packet capture: {nev.missing}")
    if st_share < SERVER_TIMING_MIN_SHARE:
        missing.append("no Server-Timing header from the server")
    return Analysis(
        focus_step=focus,
        focus_path=outer,
        offered_rps=_offered(run, outer, focus),
        tail_label=tail_label,
        tail_latency_ms=tail_latency,
        p50_latency_ms=p50_latency,
        tail_mean_ms=tail_mean,
        transfer_slope_ms_per_byte=slope,
        gate=gate,
        findings=findings,
        attribution=attribution,
        hop_deltas=hop_deltas,
        knee=knee,
        confidence_reasons=confidence,
        missing=missing,
        server_timing_share=st_share,
        tail_requests=tail_n,
        local_oom_kills=oom_bar
        and any(ev.oom_killed > 0 or ev.kernel_oom_lines > 0 for ev in srv_ev.values()),
        missed=missed_at(run, judgement, focus),
        server_unsplit_ms=float(tail_sets.get(outer, {}).get("server", 0.0)),
        server_wait_ms=float(tail_sets.get(outer, {}).get("server_wait", 0.0)),
        undecided=_undecided_split(findings, srv_ev.get(outer), decs.get(outer)),
    )


def _summary(run: RunResult, path: str, step: int) -> dict[str, Any] | None:
    for s, res in zip(run.step_summaries.get(path, []), run.steps.get(path, []), strict=False):
        if res.step == step:
            return s
    return None


def _offered(run: RunResult, path: str, step: int) -> float | None:
    res = _result(run, path, step)
    return None if res is None else res.offered_rps


def _link_can_carry(slope_ms_per_byte: float, res: StepResult, recs: Records) -> bool:
    """Whether a link of the bandwidth the slope implies could have carried what was moved.

    A slope of ``s`` ms per byte means a link of ``1/s`` bytes/ms, shared by all requests: the
    window's total bytes per ms cannot exceed it. When they do (by more than
    LINK_CAPACITY_SLACK, for the slope's estimation error), the size-dependent time is not
    transfer but work outside the server's timers (body parsing on a CPU-starved server).
    """
    window_ms = (res.measured_end_ns - res.measured_start_ns) / 1e6
    if window_ms <= 0 or slope_ms_per_byte <= 0:
        return False
    carried = float((recs["bytes_out"] + recs["bytes_in"]).sum()) / window_ms
    return carried <= LINK_CAPACITY_SLACK / slope_ms_per_byte


def _transfer_slope(
    run: RunResult,
    names: Sequence[str],
    step: int,
    hop_times: Mapping[str, Mapping[str, FloatArray]],
    net_ev: Mapping[str, NetworkEvidence],
) -> float:
    """Bandwidth as ms per byte moved, measured on the innermost path.

    From the capture when it saw the uploads: the wire's own upload time against request size.
    Else from the load's records where a server timer exists: residual = time to first byte −
    connect/pool − the server's own time (Server-Timing on the direct path, nginx's upstream time
    on a proxy path); what still grows with the body size is transfer time. Zero without either
    (then size-dependent server work would pass for bandwidth).
    """
    innermost = net_ev.get(names[0]) if names else None
    uploads = innermost.uploads if innermost is not None else None
    if uploads and int(uploads.get("count") or 0) >= MIN_UPLOAD_SAMPLES:
        sizes = np.asarray(uploads.get("bytes") or [], np.float64)
        upload_ms = np.asarray(uploads.get("ms") or [], np.float64)
        slope = transfer_slope_ms_per_byte(sizes, upload_ms)
        p10, p90 = np.percentile(sizes, [10, 90]) if sizes.size else (0.0, 0.0)
        return slope if slope * float(p90 - p10) >= TRANSFER_MIN_SPREAD_MS else 0.0
    for name in names:
        res = _result(run, name, step)
        if res is None:
            continue
        recs = measured(res)
        times = hop_times.get(name, {})
        server: FloatArray | None = None
        if "upstream_ms" in times:
            server = times["upstream_ms"]
        else:
            st = [v for k, v in times.items() if k.startswith("server_timing.")]
            if st:
                server = np.nansum(np.stack(st), axis=0)
        if server is None:
            return 0.0
        ok = (recs["ttfb_ns"] >= 0) & np.isfinite(server)
        ttfb = recs["ttfb_ns"][ok] / 1e6
        # TTFB already starts once a pooled connection was free (load/records.py): only the
        # connection set-up comes before the request's own exchange.
        pre = np.maximum(recs["connect_ns"][ok], 0) / 1e6
        residual = ttfb - pre - server[ok]
        moved = (recs["bytes_out"][ok] + recs["bytes_in"][ok]).astype(np.float64)
        slope = transfer_slope_ms_per_byte(moved, residual)
        # Keep it only when body size visibly drives time: the spread of sizes sent (p10 → p90)
        # must cost ≥ TRANSFER_MIN_SPREAD_MS. Smaller size effects are what a server's own body
        # parsing outside its timers produces on loopback (measured: ~0.5 ms per KB on the
        # testbed), and within the jitter of a loaded host; a bandwidth problem worth a verdict
        # costs more than that across the payloads it carries.
        if moved.size:
            p10, p90 = np.percentile(moved, [10, 90])
            if slope * float(p90 - p10) >= TRANSFER_MIN_SPREAD_MS and _link_can_carry(
                slope, res, recs
            ):
                return slope
        return 0.0
    return 0.0


def _oom(
    names: Sequence[str],
    srv_ev: Mapping[str, ServerEvidence],
    fail_ev: Mapping[str, FailureEvidence],
    run: RunResult,
) -> tuple[bool, list[str]]:
    """OOM clears its bar when failures of the OOM kinds coincide with memory evidence in the same
    window (worker deaths, cgroup OOM events, kernel OOM lines) — or, with no server probe, when
    failures strongly prefer large payloads."""
    evidence: list[str] = []
    bar = False
    for name in names:
        srv, fail = srv_ev.get(name), fail_ev.get(name)
        if srv is None or fail is None:
            continue
        deaths_with_large_inputs = srv.deaths > 0 and fail.size_correlated
        if fail.oom_like and (srv.memory_evidence or deaths_with_large_inputs):
            bar = True
            parts = [f"{fail.oom_like} of {fail.requests} requests on {name} failed (resets / 5xx)"]
            if srv.deaths:
                parts.append(
                    f"{srv.deaths} server worker(s) died in the window"
                    + (f", {srv.oom_killed} killed by the OOM killer" if srv.oom_killed else "")
                )
            if srv.oom_events:
                parts.append(f"cgroup counted {srv.oom_events} OOM event(s)")
            if srv.kernel_oom_lines:
                parts.append(f"kernel logged {srv.kernel_oom_lines} OOM line(s)")
            if srv.memory_max_bytes and srv.memory_limit_bytes:
                parts.append(
                    f"memory peaked at {srv.memory_max_bytes / 2**20:.0f} MiB of a "
                    f"{srv.memory_limit_bytes / 2**20:.0f} MiB limit"
                )
            evidence.append("; ".join(parts))
        elif fail.size_correlated and not srv.available:
            bar = True
            evidence.append(
                f"{fail.oom_like} failures on {name} with no server probe to confirm memory, "
                "but they prefer large inputs"
            )
        if fail.oom_like and fail.large_rate is not None and fail.small_rate is not None:
            evidence.append(
                f"failure rate {fail.large_rate:.1%} for the largest quarter of payloads vs "
                f"{fail.small_rate:.1%} for the smallest"
                + (
                    f" (median failed body {fail.failed_bytes_median / 1024:.0f} KiB vs "
                    f"{(fail.all_bytes_median or 0) / 1024:.0f} KiB overall)"
                    if fail.failed_bytes_median
                    else ""
                )
            )
    if not bar:
        evidence = []
    return bar, evidence


def _findings(
    run: RunResult,
    names: Sequence[str],
    outer: str,
    focus: int,
    tail_sets: Mapping[str, Mapping[str, float]],
    p50_sets: Mapping[str, Mapping[str, float]],
    tail_latency: float | None,
    tail_label: str,
    decs: Mapping[str, Decomposition],
    hop_deltas: Sequence[Mapping[str, Any]],
    net_ev: Mapping[str, NetworkEvidence],
    srv_ev: Mapping[str, ServerEvidence],
    fail_ev: Mapping[str, FailureEvidence],
    gate: GateResult,
    oom_bar: bool,
    oom_evidence: list[str],
    slope: float,
    knee: Mapping[str, float | None],
) -> dict[str, StageFinding]:
    tail = tail_sets.get(outer, {})
    mid = p50_sets.get(outer, {})
    lat = tail_latency or 0.0
    floor = max(BAR_FLOOR_MS, BAR_SHARE_OF_TAIL * lat)
    f = {
        s: StageFinding(s, explains_ms=float(tail.get(s, 0.0)), p50_ms=float(mid.get(s, 0.0)))
        for s in RANKED_STAGES
    }
    where = f"{outer} {tail_label} {lat:.1f} ms"

    # client
    c = f["client"]
    if gate.tripped:
        c.evidence.extend(gate.reasons)
        c.clears_bar = c.stands_out = c.direct_evidence = True
    elif c.explains_ms >= floor:
        c.evidence.append(f"requests left {c.explains_ms:.1f} ms late on average in the tail")

    # network
    n = f["network"]
    nev = net_ev.get(outer) or NetworkEvidence()
    if n.explains_ms > 0 or nev.lossy or nev.congested:
        src = {
            "capture": "SYN→SYN/ACK in the capture",
            "idle-connect": "idle TCP connects",
            "client-connect": "the client's own connects",
            "none": "no RTT source",
        }[nev.rtt_source]
        n.evidence.append(
            f"round trip {nev.rtt_ms:.2f} ms to {outer} ({src}); network explains "
            f"{n.explains_ms:.1f} ms of the {where}"
        )
        if nev.idle_rtt_p50_ms is not None and nev.rtt_load_p50_ms is not None:
            n.evidence.append(
                f"RTT under load p50 {nev.rtt_load_p50_ms:.2f} ms vs idle "
                f"{nev.idle_rtt_p50_ms:.2f} ms"
            )
        if nev.retrans_rate is not None:
            n.evidence.append(
                f"{nev.retransmissions} retransmitted segments ({nev.retrans_rate:.2%} of data "
                "segments)"
            )
        stalls = nev.retrans_stalls or {}
        if stalls.get("stalled") and stalls.get("stalls_ms"):
            n.evidence.append(
                f"lost segments held up {stalls['stalled']} of {stalls['exchanges']} exchanges "
                f"by {float(np.median(stalls['stalls_ms'])):.0f} ms (median) until retransmitted"
            )
        if slope > 0:
            n.evidence.append(
                f"time grows by {slope * 100_000:.1f} ms per 100 kB of body "
                f"(≈ {8.0 / (slope * 1000.0):.1f} Mbit/s effective)"
            )
        n.direct_evidence = nev.rtt_source in ("capture", "idle-connect")
        n.clears_bar = n.explains_ms >= floor
        n.stands_out = n.clears_bar and (nev.congested or nev.lossy)

    # hops
    deltas = {d["to"]: d for d in hop_deltas}
    for inner_path, hop_path in itertools.pairwise(names):
        stage = HOP_STAGES.get(hop_path, "proxy")
        h = f[stage]
        d = deltas.get(hop_path)
        dec = decs.get(outer)
        source = dec.hop_source.get(hop_path, "none") if dec is not None else "none"
        ci_clear = False
        if d is not None:
            margin = max(BAR_FLOOR_MS, HOP_MARGIN_SHARE * float(d["inner_tail_ms"]))
            ci_clear = float(d["tail_ci_ms"][0]) > margin or float(d["p50_ci_ms"][0]) > margin
            how = "paired requests" if d.get("paired", True) else "requests per path (unpaired)"
            h.evidence.append(
                f"{d['from']}→{d['to']} adds {d['p50_ms']:.1f} ms at p50 "
                f"(95% CI {d['p50_ci_ms'][0]:.1f}…{d['p50_ci_ms'][1]:.1f}) and "
                f"{d['tail_ms']:.1f} ms at {d['tail_label']} "
                f"(CI {d['tail_ci_ms'][0]:.1f}…{d['tail_ci_ms'][1]:.1f}), "
                f"{d['pairs']} {how}"
            )
            standout_margin = max(margin, STANDOUT_HOP_SHARE * float(d["inner_tail_ms"]))
            h.stands_out = float(d["tail_ci_ms"][0]) > standout_margin
        if source == "header":
            h.evidence.append(
                f"its own time, from its timing header, explains {h.explains_ms:.1f} ms of the "
                f"{where}"
            )
            h.direct_evidence = True
        lbq = _lb_queue(run, outer, focus) if stage == "load_balancer" else None
        if lbq is not None:
            h.evidence.append(lbq)
        h.clears_bar = h.explains_ms >= floor and (source == "header" or ci_clear)
        h.stands_out = h.stands_out and (source == "header" or ci_clear)
        added = hop_failures(
            inner_path,
            _summary(run, inner_path, focus) or {},
            hop_path,
            _summary(run, hop_path, focus) or {},
        )
        if added is not None and added.significant:
            # A hop that rejects or breaks requests: an anomaly whatever its latency.
            h.evidence.insert(0, added.sentence())
            h.failures_explained = added.excess
            h.clears_bar = h.stands_out = h.direct_evidence = True

    # server stages
    sev = srv_ev.get(outer) or ServerEvidence()
    dec_outer = decs.get(outer)
    queue_tail = float(tail.get("server_concurrency", 0.0))
    work_tail = float(tail.get("preprocessing", 0.0) + tail.get("inference", 0.0))
    timed = dec_outer is not None and dec_outer.has_server_timing
    for stage in ("preprocessing", "inference"):
        s = f[stage]
        if s.explains_ms <= 0:
            continue
        if timed:
            s.evidence.append(
                f"Server-Timing: {stage} {s.p50_ms:.1f} ms at p50, {s.explains_ms:.1f} ms in the "
                f"{where} tail (incl. its share of CPU queueing)"
            )
            s.direct_evidence = True
        bounds = profile_share_bounds(sev, stage)
        if sev.stage_share:
            s.evidence.append(
                f"py-spy ({sev.samples} samples): "
                + share_text(sev.stage_share, ("preprocessing", "inference", "framework", "other"))
                + " of busy server CPU"
                + (
                    f"; {stage} {bounds[0]:.0%} (95% CI {bounds[1]:.0%}…{bounds[2]:.0%} over "
                    f"{bounds[3]} independent samples)"
                    if bounds is not None
                    else ""
                )
            )
            s.direct_evidence = True
        if timed or bounds is None or bounds[0] <= 0:
            s.clears_bar = s.explains_ms >= floor
        else:
            # The split came from the profile alone: the stage clears its bar only if it would
            # with its share at the low end of its confidence interval.
            s.clears_bar = s.explains_ms * bounds[1] / bounds[0] >= floor
    sc = f["server_concurrency"]
    if sc.explains_ms > 0:
        summ = _summary(run, outer, focus) or {}
        achieved = float(summ.get("achieved_rps") or 0.0)
        dec = decs.get(outer)
        if dec is not None and dec.total_ms.size:
            server_parts = [
                k
                for k in ("server_queue", "preprocessing", "inference", "server_other", "server")
                if k in dec.components
            ]
            w_server = float(np.mean(np.sum([dec.components[k] for k in server_parts], axis=0)))
            work_parts = [
                k for k in ("preprocessing", "inference", "server_other") if k in dec.components
            ]
            w_work = (
                float(np.mean(np.sum([dec.components[k] for k in work_parts], axis=0)))
                if work_parts
                else None
            )
            text = (
                f"Little's law: {achieved:.1f} requests/s × {w_server:.1f} ms in the server = "
                f"{achieved * w_server / 1000:.1f} requests in the server on average"
            )
            if w_work is not None:
                text += f", only {achieved * w_work / 1000:.1f} of them being worked on"
            sc.evidence.append(text)
        model = dec_outer.work_model if dec_outer is not None else None
        if model is not None:
            sc.evidence.append(
                f"uncontended, the server took {model.intercept_ms:.1f} ms"
                + (
                    f" + {model.ms_per_byte * 100_000:.1f} ms per 100 kB of body"
                    if model.ms_per_byte > 0
                    else ""
                )
                + f" ({model.samples} requests that found it empty, {model.baseline_samples} of "
                f"them sent one at a time before the load); waiting beyond that explains "
                f"{sc.explains_ms:.1f} ms of the {where}"
            )
        else:
            sc.evidence.append(
                f"waiting in the server (outside its own timers) explains {sc.explains_ms:.1f} ms "
                f"of the {where}"
            )
        u = sev.utilisation
        if u is not None:
            sc.evidence.append(
                f"server CPU {sev.cores_used or 0:.2f} of {sev.cores_available or 0:g} core(s) "
                f"({u:.0%}) across {sev.workers} process(es)"
                + (
                    f", busiest {sev.busiest_worker_percent:.0f}% of a core"
                    if sev.busiest_worker_percent is not None
                    else ""
                )
            )
            sc.direct_evidence = True
        else:
            sc.evidence.append("no server probe: CPU use unknown, waiting charged to concurrency")
        kn = knee.get(outer)
        if kn is not None:
            sc.evidence.append(f"{outer} stops keeping up at {kn:g} requests/s")
        sc.clears_bar = sc.explains_ms >= floor
        sc.stands_out = sc.clears_bar and queue_tail >= STANDOUT_QUEUE_SHARE * max(
            queue_tail + work_tail, 1e-9
        )

    # oom
    o = f["oom"]
    if oom_bar:
        o.evidence.extend(oom_evidence)
        o.clears_bar = o.stands_out = True
        o.failures_explained = float(max((ev.oom_like for ev in fail_ev.values()), default=0))
        o.direct_evidence = any(ev.available for ev in srv_ev.values())
        if o.explains_ms <= 0:
            # Failures outside the outermost path's tail still fail users.
            o.explains_ms = max(
                (float(tail_sets[p].get("oom", 0.0)) for p in tail_sets), default=0.0
            )
    return f


def _lb_queue(run: RunResult, path: str, step: int) -> str | None:
    """HAProxy's own queue time (Tw) on ``path``: the LB-internal part of its delta."""
    res = _result(run, path, step)
    if res is None:
        return None
    times = _hop_times(res, run)
    tw = times.get("lb_queue_ms")
    if tw is None or not np.isfinite(tw).any():
        return None
    vals = tw[np.isfinite(tw)]
    return (
        f"HAProxy queue time Tw p50 {np.percentile(vals, 50):.1f} ms, "
        f"p99 {np.percentile(vals, 99):.1f} ms (time waiting inside the LB for a server slot)"
    )


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
