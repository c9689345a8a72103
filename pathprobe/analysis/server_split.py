"""How the server's time divides: work against waiting, and work among the CPU stages.

* :func:`split_server_wait` — without Server-Timing, the unsplit server time is cut into work and
  waiting by the uncontended work pathprobe measured itself (:mod:`pathprobe.analysis.server_work`);
* :func:`reassign_waiting` — with Server-Timing, a span that mostly waits gives its waiting to
  ``server_queue``;
* :func:`cpu_caused_wait_ms` and :func:`cpu_shares` — how much of the waiting the CPU explains,
  and how CPU time divides among the stages;
* :func:`profile_share_bounds` — a stage's share of the profile with its confidence interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from pathprobe.analysis.decompose import Decomposition, decompose
from pathprobe.analysis.evidence import NetworkEvidence, ServerEvidence
from pathprobe.analysis.server_work import (
    WorkModel,
    fit_work_model,
    in_flight_at_send,
    split_work_and_wait,
)
from pathprobe.analysis.stats import wilson_interval
from pathprobe.model.records import completed
from pathprobe.model.results import StepResult, measured
from pathprobe.run import RunResult

FloatArray = npt.NDArray[np.float64]

#: Utilisation above which the CPU counts as saturated: every wait is a wait for it. 0.95 leaves
#: room for the sampler's own jitter (5 Hz ticks) on a core that is in fact always busy.
CPU_SATURATED = 0.95
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


def cpu_caused_wait_ms(server: ServerEvidence) -> float | None:
    """The waiting per request that CPU contention alone would cause; None when unknown.

    Queueing for the CPU, with the server's cores busy a fraction u of the time and each request
    needing S ms of CPU, waits S·u/(1−u) on average (M/M/1 on the pooled cores; M/M/c waits less,
    so this errs towards the CPU). Waiting beyond that happened while CPU was to spare: a worker,
    lock or process limit — server_concurrency. Without S (no request count), u·(waiting) is the
    PASTA share: the fraction of waiting requests that found the CPU busy.
    """
    utilisation = server.utilisation
    if utilisation is None:
        return None
    if utilisation >= CPU_SATURATED:
        return math.inf
    if server.cpu_ms_per_request is None:
        return None
    return server.cpu_ms_per_request * utilisation / (1.0 - utilisation)


def cpu_shares(server: ServerEvidence, means: Mapping[str, float]) -> dict[str, float]:
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
        span_ms = dec.components[stage]
        base = float(np.percentile(span_ms, 10))
        excess = np.maximum(span_ms - base, 0.0)
        dec.components[stage] = span_ms - excess
        dec.components["server_queue"] = dec.components.get("server_queue", 0.0 * span_ms) + excess


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


def baseline_samples(
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
