"""The few lines ``pathprobe diagnose`` prints at the end: the verdict and a rich table.

Contract: :func:`print_summary` reads only the report.json dict (like the HTML renderer), never
raises on missing fields, and prints to the console it is given (the CLI passes a stderr console:
stdout stays parseable). Every string from the report is passed as plain :class:`rich.text.Text`,
never as markup, so a hostile ``[bold red]`` or ``[link=…]`` in a server's data is printed as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pathprobe.reports.fields import (
    as_list,
    as_map,
    fmt_explains,
    fmt_ms,
    fmt_rps,
    get,
    stage_title,
)

TOP_RANKING_ROWS = 3


def clip(value: Any, max_chars: int) -> str:
    """One line of at most ``max_chars`` characters (a terminal has no room for a cut note)."""
    text = " ".join(str(value).split()) if value is not None else ""
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def _targets_text(report: Mapping[str, Any]) -> Text:
    met = get(report, "verdict", "targets_met")
    targets = as_map(report.get("targets"))
    given = any(targets.get(k) is not None for k in ("p99_ms", "rps", "error_rate"))
    if not given and targets:
        return Text("no targets given", style="dim")
    if met is True:
        return Text("met", style="bold green")
    if met is False:
        return Text("missed", style="bold red")
    return Text("unknown", style="dim")


def summary_table(report: Mapping[str, Any]) -> Table:
    """Per path, p50/p99 (and achieved rate, errors) at each step."""
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for name, justify in (
        ("path", "left"),
        ("step", "right"),
        ("achieved", "right"),
        ("p50", "right"),
        ("p99", "right"),
        ("errors", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for path, entry in as_map(report.get("paths")).items():
        for i, step in enumerate(as_list(get(entry, "steps"))):
            offered = get(step, "offered_rps")
            label = fmt_rps(offered) if offered is not None else f"step {i + 1}"
            errors = get(step, "errors")
            table.add_row(
                Text(clip(path, 40)),
                Text(label),
                Text(fmt_rps(get(step, "achieved_rps"))),
                Text(fmt_ms(get(step, "latency_ms", "p50"))),
                Text(fmt_ms(get(step, "latency_ms", "p99")), style="bold"),
                Text(
                    clip(errors, 20) if errors is not None else "—", style="red" if errors else ""
                ),
            )
    return table


def ranking_table(report: Mapping[str, Any]) -> Table | None:
    rows = as_list(get(report, "verdict", "ranking"))[:TOP_RANKING_ROWS]
    if not rows:
        return None
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("stage")
    table.add_column("explains", justify="right")
    table.add_column("evidence")
    for row in rows:
        evidence = as_list(get(row, "evidence"))
        table.add_row(
            Text(clip(get(row, "stage"), 40)),
            Text(fmt_explains(as_map(row))),
            Text(clip(evidence[0], 100) if evidence else ""),
        )
    return table


def print_summary(
    report: Mapping[str, Any], console: Console, report_path: str | Path | None = None
) -> None:
    """Print the verdict in a few lines plus the per-path table; ``report_path`` (the HTML or
    JSON written) is named last so the user knows where the evidence is."""
    verdict = as_map(report.get("verdict"))
    stage = verdict.get("bottleneck")
    if report.get("interrupted") is True:
        console.print(Text("Interrupted: partial report.", style="bold yellow"))
    if verdict.get("trustworthy") is False:
        console.print(
            Text(
                "The client could not keep its schedule: numbers beyond it are not trustworthy.",
                style="bold red",
            )
        )
    head = Text.assemble(
        ("Bottleneck: ", "bold"),
        (clip(stage, 60) if stage is not None else "none reported", "bold cyan"),
    )
    if stage is not None:
        head.append(f" — {stage_title(stage)}")
    console.print(head)
    console.print(Text.assemble(("Targets: ", "bold"), _targets_text(report)))
    if verdict.get("summary"):
        console.print(Text(clip(verdict.get("summary"), 400)))
    if verdict.get("advice"):
        console.print(Text.assemble(("What to do: ", "bold"), clip(verdict.get("advice"), 400)))
    level = get(verdict, "confidence", "level")
    if level is not None:
        reasons = "; ".join(clip(r, 90) for r in as_list(get(verdict, "confidence", "reasons"))[:3])
        console.print(
            Text.assemble(
                ("Confidence: ", "bold"), clip(level, 20), (f" ({reasons})" if reasons else "")
            )
        )
    ranking = ranking_table(report)
    if ranking is not None:
        console.print(ranking)
    console.print(summary_table(report))
    if report_path is not None:
        console.print(Text.assemble(("Report: ", "bold"), str(report_path)))
