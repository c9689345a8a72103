"""Judging targets (design.md §5), on the outermost path.

A step passes when its p99 ≤ ``target_p99`` and its error rate ≤ ``target_error_rate`` (each only
when given). With ``target_rps``: targets are met when every step offered ≤ target-rps passes and
some passing step achieved ≥ target-rps (a closed-loop step, with no offered rate, must pass);
without it, when every step passes. No targets → nothing to miss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pathprobe.config import Targets


def judge_step(step: Mapping[str, Any], targets: Targets) -> tuple[list[str], list[str]]:
    """The targets one step summary misses (``"p99"``, ``"error_rate"``), and why; none → passes."""
    missed: list[str] = []
    reasons: list[str] = []
    p99 = step.get("latency_ms", {}).get("p99")
    if targets.p99_ms is not None:
        if p99 is None:
            missed.append("p99")
            reasons.append("no successful response to measure p99 on")
        elif p99 > targets.p99_ms:
            missed.append("p99")
            reasons.append(f"p99 {p99:.1f} ms > target {targets.p99_ms:g} ms")
    if targets.error_rate is not None:
        rate = float(step.get("error_rate", 0.0))
        if rate > targets.error_rate:
            missed.append("error_rate")
            reasons.append(f"error rate {rate:.2%} > target {targets.error_rate:.2%}")
    return missed, reasons


def judge(steps: Sequence[Mapping[str, Any]], targets: Targets) -> dict[str, Any]:
    """``{"targets_met": bool | None, "steps": [...], "reasons": [...]}`` for the outermost path.

    Each step: ``{"offered_rps", "passed", "missed": ["p99" | "error_rate", ...], "reasons"}``.

    ``targets_met`` is ``True`` when no targets were given (nothing to miss).
    """
    judged: list[dict[str, Any]] = []
    for step in steps:
        missed, why = judge_step(step, targets)
        judged.append(
            {
                "offered_rps": step.get("offered_rps"),
                "passed": not missed,
                "missed": missed,
                "reasons": why,
            }
        )
    if not targets.any:
        return {"targets_met": True, "given": False, "steps": judged, "reasons": []}
    reasons: list[str] = []
    if targets.rps is not None:
        must_pass = [
            j for j, s in zip(judged, steps, strict=True)
            if s.get("offered_rps") is None or s["offered_rps"] <= targets.rps
        ]  # fmt: skip
        failing = [j for j in must_pass if not j["passed"]]
        reasons.extend(_why(j) for j in failing)
        reached = [
            s for j, s in zip(judged, steps, strict=True)
            if j["passed"] and float(s.get("achieved_rps", 0.0)) >= targets.rps
        ]  # fmt: skip
        if not reached:
            best = max((float(s.get("achieved_rps", 0.0)) for s in steps), default=0.0)
            reasons.append(f"no passing step achieved {targets.rps:g} requests/s (best {best:.1f})")
        met = not failing and bool(reached)
    else:
        reasons.extend(_why(j) for j in judged if not j["passed"])
        met = all(j["passed"] for j in judged)
    return {"targets_met": met, "given": True, "steps": judged, "reasons": reasons}


def _why(judged_step: dict[str, Any]) -> str:
    return f"step at {_rate(judged_step['offered_rps'])}: " + "; ".join(judged_step["reasons"])


def _rate(offered: float | None) -> str:
    return "closed loop" if offered is None else f"{offered:g} requests/s"
