"""The report as the HTML sections read it: frozen dataclasses built from report.json.

Each ``from_json(raw)`` reads defensively, like the readers in :mod:`pathprobe.reports.fields`:
a missing key or one of the wrong type gives None, an empty tuple or the documented fallback,
numbers are finite floats or None (bools, strings, NaN and infinities are not numbers), and
nothing raises. Text is kept whole; display caps (:func:`.fields.clip`) are the sections' business.
Only the reading side: report.json is written by :mod:`pathprobe.reports.payload` as before.

Modules: :mod:`.values` (shared readers), :mod:`.verdict` (verdict, targets), :mod:`.steps`
(a path's steps), :mod:`.probes` (network, client), :mod:`.server` and :mod:`.run` (the run,
its load generators).
"""

from __future__ import annotations

from pathprobe.reports.model.probes import (
    ClientProbe,
    ClientWindow,
    CpuPercent,
    NetworkProbe,
    NetworkWindow,
    ProbeStatus,
    RetransStalls,
)
from pathprobe.reports.model.run import LoadGenerator, LostWork, RunInfo
from pathprobe.reports.model.server import ServerProbe, ServerWindow, Worker, WorkerDeath
from pathprobe.reports.model.steps import Histogram, PayloadBin, Step, TimelinePoint
from pathprobe.reports.model.values import Percentiles
from pathprobe.reports.model.verdict import (
    HopDelta,
    LedgerHalf,
    PathAttribution,
    RankedStage,
    Targets,
    TargetStep,
    Verdict,
)

__all__ = [
    "ClientProbe",
    "ClientWindow",
    "CpuPercent",
    "Histogram",
    "HopDelta",
    "LedgerHalf",
    "LoadGenerator",
    "LostWork",
    "NetworkProbe",
    "NetworkWindow",
    "PathAttribution",
    "PayloadBin",
    "Percentiles",
    "ProbeStatus",
    "RankedStage",
    "RetransStalls",
    "RunInfo",
    "ServerProbe",
    "ServerWindow",
    "Step",
    "TargetStep",
    "Targets",
    "TimelinePoint",
    "Verdict",
    "Worker",
    "WorkerDeath",
]
