"""What one diagnosis produced, handed from the session to analysis and the report builder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pathprobe.config import DiagnoseConfig
from pathprobe.model.results import StepResult


@dataclass
class RunResult:
    """Raw results (``steps``: path → one StepResult per step, in step order) and probe sections.

    ``step_summaries`` mirrors ``steps`` with the JSON summaries of :mod:`pathprobe.analysis.steps`.
    """

    config: DiagnoseConfig
    argv: list[str]
    started_at: str
    ended_at: str = ""
    steps: dict[str, list[StepResult]] = field(default_factory=dict)
    step_summaries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    payload_sizes: npt.NDArray[np.int64] | None = None
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)
    # Requests sent one at a time before the load (path → one result per request): the server's
    # uncontended work.
    baselines: dict[str, list[StepResult]] = field(default_factory=dict)
    # One entry per load worker that accounts for itself (--ray): report.json run.load_generators.
    load_generators: list[dict[str, Any]] = field(default_factory=list)
