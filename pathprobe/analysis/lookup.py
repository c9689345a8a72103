"""One (path, step) window of a run: its step result, its JSON summary, its hop timings."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from pathprobe.decode.hopheaders import per_request_hop_times
from pathprobe.model.results import StepResult, header_values
from pathprobe.run import RunResult

FloatArray = npt.NDArray[np.float64]


def result_at(run: RunResult, path: str, step: int) -> StepResult | None:
    """The step result of ``path`` at ``step``, or None when that window was not run."""
    for res in run.steps.get(path, []):
        if res.step == step:
            return res
    return None


def summary_at(run: RunResult, path: str, step: int) -> dict[str, Any] | None:
    """The JSON step summary of ``path`` at ``step``, or None."""
    for summary, res in zip(
        run.step_summaries.get(path, []), run.steps.get(path, []), strict=False
    ):
        if res.step == step:
            return summary
    return None


def offered_at(run: RunResult, path: str, step: int) -> float | None:
    """The rate offered to ``path`` at ``step`` (None for a concurrency step or no window)."""
    res = result_at(run, path, step)
    return None if res is None else res.offered_rps


def hop_times_of(res: StepResult, run: RunResult) -> dict[str, FloatArray]:
    """Every hop timing header of the window per request, in ms (NaN where absent)."""
    values = {name: header_values(res, name) for name in set(res.headers)}
    return per_request_hop_times(values, run.config.probes)
