"""The server's profile: py-spy's folded stacks as a flame graph (with a static top-stacks
fallback for readers without JavaScript) and the share of samples per stage, per window."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pathprobe.reports import charts
from pathprobe.reports.fields import as_map, clip, fmt_num, fmt_pct, num
from pathprobe.reports.sections.common import window_label

FLAME_MAX_STACKS = 2000
FLAME_MAX_DEPTH = 96
FLAME_MIN_FRACTION = 1 / 5000  # narrower than 0.2 px at 1000 px: not drawn
FRAME_MAX_CHARS = 200
TOP_STACKS = 12


def flame_entries(by_path: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One flame graph per path, its windows' stacks added together."""
    flames = []
    for path, ws in by_path.items():
        folded: dict[str, float] = {}
        for w in ws:
            for stack, v in as_map(w.get("folded")).items():
                if (n := num(v)) and n > 0:
                    folded[str(stack)] = folded.get(str(stack), 0.0) + n
        total = sum(folded.values())
        if folded:
            top, leaves = _top_stacks(folded, total)
            flames.append(
                {
                    "path": clip(path, 60),
                    "samples": fmt_num(total),
                    "distinct": fmt_num(len(folded)),
                    "capped": len(folded) > FLAME_MAX_STACKS,
                    "tree": folded_to_tree(folded),
                    "top": top,
                    "leaves": leaves,
                }
            )
    return flames


def stage_shares(
    report: Mapping[str, Any], by_path: Mapping[str, Sequence[Mapping[str, Any]]]
) -> dict[str, Any]:
    """The share of each window's samples per stage: the stage columns (first seen first) and
    one row per window that has shares."""
    share_rows: list[dict[str, Any]] = []
    share_stages: list[str] = []
    for ws in by_path.values():
        for w in ws:
            plabel, step = window_label(report, w)
            shares = as_map(w.get("stage_share"))
            if not shares:
                continue
            for s in shares:
                if str(s) not in share_stages:
                    share_stages.append(str(s))
            share_rows.append(
                {
                    "path": plabel,
                    "step": step,
                    "samples": fmt_num(w.get("samples")),
                    "shares": {str(s): num(v) for s, v in shares.items()},
                }
            )
    table = [
        {
            "path": r["path"],
            "step": r["step"],
            "samples": r["samples"],
            "cells": [fmt_pct(r["shares"].get(s)) for s in share_stages],
        }
        for r in share_rows
    ]
    return {
        "share_stages": [
            {"name": clip(s, 40), "color": charts.stage_color(s)} for s in share_stages
        ],
        "share_rows": table,
    }


def folded_to_tree(
    folded: Mapping[str, Any],
    max_stacks: int = FLAME_MAX_STACKS,
    min_fraction: float = FLAME_MIN_FRACTION,
) -> dict[str, Any]:
    """d3-flame-graph's input (``{name, value, children}``, values inclusive) from folded stacks
    ``{"a;b;c": samples}``. Kept small on purpose: only the ``max_stacks`` heaviest stacks (the
    rest become one "[other stacks]" node), and frames lighter than ``min_fraction`` of all
    samples are left out (their time stays in the parent's width) — they would be narrower than
    a pixel, and deep, distinct stacks would otherwise make the page megabytes long."""
    items = sorted(
        ((str(k), n) for k, v in folded.items() if (n := num(v)) and n > 0),
        key=lambda kv: -kv[1],
    )
    kept = items[:max_stacks]
    rest = sum(n for _, n in items[max_stacks:])
    root: dict[str, Any] = {"name": "all", "value": 0.0, "children": {}}
    names: dict[str, str] = {}  # frame → display name; frames repeat across stacks
    for stack, n in kept:
        node = root
        node["value"] += n
        for frame in stack.split(";")[:FLAME_MAX_DEPTH]:
            name = names.get(frame)
            if name is None:
                name = names[frame] = clip(frame, FRAME_MAX_CHARS)
            children = node["children"]
            child = children.get(name)
            if child is None:
                child = children[name] = {"name": name, "value": 0.0, "children": {}}
            node = child
            node["value"] += n
    if rest:
        root["value"] += rest
        root["children"]["[other stacks]"] = {
            "name": "[other stacks]",
            "value": rest,
            "children": {},
        }
    threshold = root["value"] * min_fraction

    def finish(node: dict[str, Any]) -> dict[str, Any]:
        value = node["value"]
        out: dict[str, Any] = {
            "name": node["name"],
            "value": int(value) if value == int(value) else value,
        }
        kids = [finish(c) for c in node["children"].values() if c["value"] >= threshold]
        if kids:
            out["children"] = kids
        return out

    return finish(root)


def _stack_text(stack: str, frames_shown: int = 6) -> str:
    """Leaf first, the callers that matter most next; the root end of a deep stack is elided."""
    frames = [clip(f, 120) for f in reversed(stack.split(";"))]
    text = " ← ".join(frames[:frames_shown])
    if len(frames) > frames_shown:
        text += f" ← … ({len(frames) - frames_shown} more frames)"
    return text


def _top_stacks(
    folded: Mapping[str, float], total: float
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    stacks = sorted(folded.items(), key=lambda kv: -kv[1])[:TOP_STACKS]
    top = [
        {
            "share": fmt_pct(n / total) if total else "—",
            "samples": fmt_num(n),
            "leaf": clip(stack.split(";")[-1], 160),
            "stack": _stack_text(stack),
        }
        for stack, n in stacks
    ]
    self_samples: dict[str, float] = {}
    for stack, n in folded.items():
        leaf = stack.split(";")[-1]
        self_samples[leaf] = self_samples.get(leaf, 0.0) + n
    leaves = [
        {
            "share": fmt_pct(n / total) if total else "—",
            "samples": fmt_num(n),
            "frame": clip(name, 200),
        }
        for name, n in sorted(self_samples.items(), key=lambda kv: -kv[1])[:TOP_STACKS]
    ]
    return top, leaves
