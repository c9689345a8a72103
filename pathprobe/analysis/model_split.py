"""The server's own split, when it keeps one: Triton's statistics (``probes.model_stats``).

Triton and the KServe runtimes count, per model, the time requests spent queued in the model's
scheduler, preparing their inputs, in the model, and extracting outputs. The probe differences
those counters over each window and divides by the requests completed: mean milliseconds per
request in each phase. That is the server split for servers no Python profiler sees into (Triton
is C++), with two limits the report states: it is model-wide (every client's requests count) and
it is read from the server behind the innermost path.

Phases map onto stages: ``queue`` → ``server_concurrency``, ``compute_input`` →
``preprocessing``, ``compute_infer`` and ``compute_output`` → ``inference`` (extracting outputs is
part of running the model; the stage vocabulary has no post-processing).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PHASE_STAGES: dict[str, str] = {
    "queue": "server_concurrency",
    "compute_input": "preprocessing",
    "compute_infer": "inference",
    "compute_output": "inference",
}
#: The stages whose phases are work, not waiting: their time per request hardly depends on load.
WORK_STAGES = ("preprocessing", "inference")
#: A window's means speak for its requests only when several completed in it: with fewer, one
#: request's phases are the mean, and whatever it met (a cold cache, a GC pause) is the split.
MIN_STATS_REQUESTS = 5


@dataclass(frozen=True)
class ModelPhases:
    """Mean milliseconds per completed request, by stage, in one window of the statistics."""

    requests: int
    stage_ms: Mapping[str, float]

    @property
    def total_ms(self) -> float:
        return sum(self.stage_ms.values())

    @property
    def work_ms(self) -> float:
        return sum(self.stage_ms.get(stage, 0.0) for stage in WORK_STAGES)


def model_phases(model_stats: Mapping[str, Any] | None, path: str, step: int) -> ModelPhases | None:
    """The statistics of window (``path``, ``step``) from the probe's JSON; None when the probe
    was unavailable, the window is missing or unusable, or too few requests completed in it."""
    if not model_stats or not model_stats.get("available"):
        return None
    for window in model_stats.get("windows") or []:
        if window.get("path") != path or window.get("step") != step:
            continue
        requests = window.get("requests")
        if not isinstance(requests, int) or requests < MIN_STATS_REQUESTS:
            return None
        stage_ms: dict[str, float] = {}
        for phase, stage in PHASE_STAGES.items():
            value = window.get(f"{phase}_ms")
            if value is None:
                return None
            stage_ms[stage] = stage_ms.get(stage, 0.0) + max(float(value), 0.0)
        if sum(stage_ms.values()) <= 0:
            return None
        return ModelPhases(requests, stage_ms)
    return None


def split_unsplit(
    unsplit_ms: float, phases: ModelPhases, window_unsplit_ms: float, queue_cut_out: bool = False
) -> dict[str, float]:
    """Cut one request set's unsplit server time (mean ms per request) into stages.

    The work phases (preprocessing, inference) get their window means as they are, since a
    request's work hardly depends on load; when the set's server time is shorter than that work
    (its requests were the quick ones), the work is scaled down to fit. The rest of the server
    time is waiting: in the model's queue, or in the server's frontend (protocol handling, its
    own thread pool), which the statistics do not time. It is shared the way the window's means
    share it: the queue's mean against the frontend's, the window's mean unsplit server time
    (``window_unsplit_ms``, over all its requests) less every phase. The frontend's part stays
    ``server`` (unsplit): no statistic says what it was. With ``queue_cut_out`` the waiting was
    already taken out of the server's time (the work model's ``server_queue``): the queue's mean
    is then not in ``window_unsplit_ms`` and the rest is all frontend.
    """
    if unsplit_ms <= 0:
        return {}
    work = phases.work_ms
    scale = min(1.0, unsplit_ms / work) if work > 0 else 0.0
    out = {
        stage: phases.stage_ms[stage] * scale for stage in WORK_STAGES if stage in phases.stage_ms
    }
    rest = unsplit_ms - work * scale
    if rest > 0:
        queue = 0.0 if queue_cut_out else phases.stage_ms.get("server_concurrency", 0.0)
        frontend = max(window_unsplit_ms - phases.work_ms - queue, 0.0)
        if queue + frontend > 0:
            out["server_concurrency"] = rest * queue / (queue + frontend)
            out["server"] = rest * frontend / (queue + frontend)
        else:
            out["server"] = rest
    return {stage: ms for stage, ms in out.items() if ms > 0}
