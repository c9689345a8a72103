"""``pathprobe diagnose``: drive one load profile through each hop and name the bottleneck."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pathprobe.options import CLI_OPTIONS, Option, flag_values

if TYPE_CHECKING:
    from rich.console import Console

# The heavy modules (the load engine, numpy, the report renderer) are imported inside the
# command, not here: `pathprobe --help` and every other command import this module too.

# The Python type of each kind of option as Typer sees it.
_TYPES: dict[str, Any] = {
    "float": float | None,
    "int": int | None,
    "str": str | None,
    "path": Path | None,
    "flag": bool,
    "strs": list[str] | None,
    "ints": list[int] | None,
}


def _parameter(option: Option) -> inspect.Parameter:
    """The Typer parameter of one declared option."""
    decls = [option.flag] if option.short is None else [option.flag, option.short]
    info = typer.Option(
        *decls,
        help=option.help_text,
        rich_help_panel=option.panel,
        envvar=option.envvar,
        # A repeatable flag's default is "not given", not an empty list worth showing.
        show_default=option.kind not in ("strs", "ints"),
    )
    return inspect.Parameter(
        option.key,
        inspect.Parameter.KEYWORD_ONLY,
        default=False if option.kind == "flag" else None,
        annotation=Annotated[_TYPES[option.kind], info],
    )


def diagnose(**values: Any) -> None:
    """Drive one load profile through each hop, watch client, wire and server, name the
    bottleneck. Exit 0 targets met (or none), 1 missed, 2 bad usage, 3 could not run,
    130 interrupted."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from pathprobe.config import build_config
    from pathprobe.options import load_toml, merge
    from pathprobe.session import prepare, run_diagnosis

    flags = flag_values(values)
    config = values["config"]
    file_values = load_toml(config) if config is not None else {}
    cfg = build_config(merge(file_values, flags))
    argv = _argv(flags)
    if cfg.dry_run:
        _pool, plan = prepare(cfg)
        for line in plan.describe(cfg):
            typer.echo(line)
        typer.echo("dry run: nothing sent")
        raise typer.Exit(0)
    console = Console(stderr=True)
    pool, plan = prepare(cfg)
    _print_probe_hints(cfg)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        # A bar is for people: into a pipe or a log it only adds a blank line before the result
        # or before the one-line error.
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task("starting", total=max(plan.total_s, 1e-3))

        def update(label: str, done_s: float) -> None:
            progress.update(task, description=label, completed=done_s)

        report, code = run_diagnosis(cfg, argv, update, prepared=(pool, plan))
    _print_summary(report, console)
    typer.echo(f"report: {cfg.out_dir / 'report.html'}")
    typer.echo(f"json:   {cfg.out_dir / 'report.json'}")
    raise typer.Exit(code)


# One Typer parameter per declared option (pathprobe.options), in their order.
diagnose.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [_parameter(option) for option in CLI_OPTIONS], return_annotation=None
)


def _argv(flags: dict[str, Any]) -> list[str]:
    """The command line as typed when run as ``pathprobe``; else rebuilt from the flags given."""
    if sys.argv and Path(sys.argv[0]).name == "pathprobe":
        return sys.argv[1:]
    argv = ["diagnose"]
    for name, value in flags.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        values = value if isinstance(value, list) else [value]
        for item in values:
            argv.extend([flag] if item is True else [flag, str(item)])
    return argv


def _print_probe_hints(cfg: Any) -> None:
    """Before the run, on stderr: the doctor's line for each probe that will not observe, so the
    fix is known now rather than from the report's "not observed" sections afterwards."""
    from pathprobe.doctor import diagnose_checks, format_line

    for check in diagnose_checks(cfg):
        if not check.ok:
            typer.echo(format_line(check), err=True)


def _print_summary(report: dict[str, Any], console: Console) -> None:
    from pathprobe.reports.terminal import print_summary

    print_summary(report, console)
