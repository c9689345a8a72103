"""The verdict: which stage explains the missed target, from the step summaries and probes.

Attribution by stage lives in :mod:`pathprobe.analysis.attribution` when present; this module owns
the final word and the rules that never change: ``none`` only when targets are met and nothing
stands out, ``inconclusive`` when targets are missed and no stage clears its bar.
"""

from __future__ import annotations

from typing import Any

from pathprobe.config import Targets
from pathprobe.run import RunResult


def decide(run: RunResult, judgement: dict[str, Any]) -> dict[str, Any]:
    """The ``verdict`` section of report.json."""
    targets_met = bool(judgement["targets_met"])
    targets: Targets = run.config.targets
    outer = run.config.outermost.name
    if targets_met:
        summary = (
            f"Targets met on {outer}."
            if targets.any
            else f"No targets given; measured {len(run.config.paths)} path(s)."
        )
        bottleneck = "none"
        advice = "Nothing to fix at this load." if targets.any else "Give --target-p99 to judge."
    else:
        bottleneck = "inconclusive"
        first = judgement["reasons"][0] if judgement["reasons"] else "targets missed"
        summary = f"Targets missed on {outer} ({first}); no stage clears its evidence bar."
        advice = "Rerun longer, with --server-pid (or --agent) and packet capture enabled."
    return {
        "bottleneck": bottleneck,
        "targets_met": targets_met,
        "summary": summary,
        "advice": advice,
        "trustworthy": True,
        "ranking": [],
        "next_steps": [] if targets_met else [advice],
    }
