"""What each stage explains on one path: component means over the tail and median sets.

design.md §4: percentiles do not add. "What stage X explains at p99" is, among the requests at or
above the p99 of that path and step, the mean time attributable to X (at p50: among the requests
around the median). :func:`path_sets` averages the components of a
:class:`~pathprobe.analysis.decompose.Decomposition` over both sets and :func:`map_to_stages` maps
them to stages:

* ``pool_wait`` is time queued in the client for a connection that something slower held: it is
  charged to the other non-client components of the same request set, in proportion.
* ``server_queue`` (server time outside every Server-Timing metric, plus the waiting found inside
  awaiting spans by :func:`~pathprobe.analysis.server_split.reassign_waiting`) is split by
  :func:`~pathprobe.analysis.server_split.cpu_caused_wait_ms`: the waiting CPU contention alone
  explains goes to the CPU stages by their profile shares (or Server-Timing proportions without a
  usable profile), the rest — waiting while CPU was to spare — to ``server_concurrency``. Without
  a server probe it all goes to ``server_concurrency`` (and the evidence says so).
* an unsplit ``server`` (no Server-Timing) is split by the server's own statistics when it keeps
  them (:mod:`~pathprobe.analysis.model_split`, Triton's extension), else by the profile's busy
  shares when there is a profile, else stays the category ``server``.
* failed requests rank above every success; in the tail set each contributes
  max(its elapsed time, the tail latency of the successes) — a failure costs the user at least a
  slow answer — to ``oom`` when the OOM evidence clears its bar, else to the category ``errors``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pathprobe.analysis.decompose import Decomposition
from pathprobe.analysis.deltas import tail_percentile
from pathprobe.analysis.evidence import ServerEvidence
from pathprobe.analysis.model_split import split_unsplit
from pathprobe.analysis.server_split import (
    MIN_PROFILE_SAMPLES_ALONE,
    cpu_caused_wait_ms,
    cpu_shares,
)
from pathprobe.model.stages import RANKED_STAGES

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Hop (path) names → the stage the hop is. Paths not listed are proxies of some kind.
HOP_STAGES = {"proxy": "proxy", "lb": "load_balancer"}
#: The median set: requests between these percentiles of latency ("around the median").
MEDIAN_BAND = (45.0, 55.0)


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
    cpu_share = cpu_shares(server, means)
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
        if server.model_phases is not None:
            # The server's own account of its phases is more direct than a sampled profile.
            phases = split_unsplit(
                unsplit, server.model_phases, server.unsplit_mean_ms, server.queue_cut_out
            )
            for stage, value in phases.items():
                add(stage, value)
        elif total > 0 and server.busy_samples >= MIN_PROFILE_SAMPLES_ALONE:
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
            for key, value in others.items():
                out[key] += pool * value / total
        else:
            add("pool_wait", pool)
    return out


@dataclass(frozen=True)
class PathSets:
    """The stage means of one path at the focus step over its tail set and its median set."""

    #: The tail percentile the path's request count supports ("p99", "p90"…).
    label: str
    tail_requests: int
    #: Stage (or category) → mean ms over the tail set, and over the median set.
    tail: dict[str, float]
    p50: dict[str, float]
    #: The tail latency of the successes (None without any).
    tail_latency_ms: float | None
    #: Mean latency of the tail set (failures at their cost), what ``tail`` shares.
    tail_mean_ms: float | None
    p50_latency_ms: float | None
    #: Mean latency of the median set, what ``p50`` shares.
    p50_mean_ms: float | None
    hop_sources: dict[str, str]

    def as_json(self, step: int, offered_rps: float | None) -> dict[str, Any]:
        """The path's entry of report.json ``verdict.attribution``."""
        return {
            "step": step,
            "offered_rps": offered_rps,
            "p50": {k: round(v, 3) for k, v in sorted(self.p50.items())},
            self.label: {k: round(v, 3) for k, v in sorted(self.tail.items())},
            "percentile_label": self.label,
            "tail_requests": self.tail_requests,
            "hop_sources": dict(self.hop_sources),
            # The ledger: each millisecond attributed once, so the parts add up to the measured
            # mean of each set; "no_stage_ms" is what belongs to no stage (framework, other,
            # unsplit server, failures without a cause).
            "ledger": {
                "p50": _ledger(self.p50, self.p50_mean_ms),
                self.label: _ledger(self.tail, self.tail_mean_ms),
            },
        }


def path_sets(dec: Decomposition, server: ServerEvidence, oom_bar: bool) -> PathSets:
    """Average ``dec``'s components over its tail and median sets and map them to stages.

    The tail set is the k slowest requests, failures first (they rank above every success).
    """
    n_all = dec.total_ms.size + dec.failed_ms.size
    label, percentile = tail_percentile(n_all)
    tail_size = max(1, math.ceil(n_all * (1.0 - percentile / 100.0)))
    failed_in = min(tail_size, dec.failed_ms.size)
    ok_total = dec.total_ms
    ok_tail_cut = (
        float(np.percentile(ok_total, percentile, method="higher")) if ok_total.size else 0.0
    )
    tail_mask = np.zeros(ok_total.size, bool)
    if failed_in < tail_size:
        order = np.argsort(-ok_total, kind="stable")
        tail_mask[order[: tail_size - failed_in]] = True
    failed_cost = (
        float(np.maximum(np.sort(dec.failed_ms)[::-1][:failed_in], ok_tail_cut).mean())
        if failed_in
        else 0.0
    )
    median_mask = _median_mask(ok_total)
    return PathSets(
        label=label,
        tail_requests=int(tail_size),
        tail=map_to_stages(_set_means(dec, tail_mask, failed_in, failed_cost), server, oom_bar),
        p50=map_to_stages(_set_means(dec, median_mask, 0, 0.0), server, oom_bar),
        tail_latency_ms=ok_tail_cut if ok_total.size else None,
        tail_mean_ms=_tail_mean(ok_total[tail_mask], failed_in, failed_cost),
        p50_latency_ms=float(np.percentile(ok_total, 50)) if ok_total.size else None,
        p50_mean_ms=_mean_or_none(ok_total[median_mask]),
        hop_sources=dict(dec.hop_source),
    )


def _median_mask(total: FloatArray) -> BoolArray:
    if total.size == 0:
        return np.zeros(0, bool)
    lo, hi = np.percentile(total, MEDIAN_BAND)
    mask: BoolArray = (total >= lo) & (total <= hi)
    if not mask.any():
        mask = np.abs(total - np.median(total)) == np.min(np.abs(total - np.median(total)))
    return mask


def _set_means(
    dec: Decomposition, mask: BoolArray, failed_in_set: int, failed_ms: float
) -> dict[str, float]:
    """Mean of each component over the masked successes plus ``failed_in_set`` failures."""
    in_set = int(mask.sum()) + failed_in_set
    if in_set == 0:
        return {}
    out = {k: float(v[mask].sum()) / in_set for k, v in dec.components.items()}
    if failed_in_set:
        out["failed"] = failed_ms * failed_in_set / in_set
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
    in_set = ok_tail_ms.size + failed_in_set
    if in_set == 0:
        return None
    return (float(ok_tail_ms.sum()) + failed_ms * failed_in_set) / in_set
