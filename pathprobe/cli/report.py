"""``pathprobe report`` (re-render report.html from report.json) and ``pathprobe compare``.

Both read report.json files only — the run that made them may be long gone. Bad input (missing
file, not JSON, not a pathprobe report, unwritable output) raises :class:`UsageError`, which the
root command turns into one line on stderr and exit 2; output is written to a
temporary file beside the target and renamed into place, so a reader never sees half a page.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from pathprobe.errors import UsageError

# The renderers (jinja2, matplotlib) are imported inside the commands: every other command, and
# `pathprobe --help`, import this module too.

__all__ = ["compare", "load_report", "report", "write_atomic"]


def load_report(path: Path) -> dict[str, Any]:
    """The report.json at ``path`` as a dict; :class:`UsageError` when it cannot be one."""
    from pathprobe.reports.render import SCHEMA

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory; give DIR/report.json") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise UsageError(f"{path}: not a pathprobe report (schema {found!r}, expected {SCHEMA!r})")
    for section in ("verdict", "paths", "probes", "run"):
        if section in data and not isinstance(data[section], dict):
            raise UsageError(f"{path}: malformed report: {section!r} is not an object")
    return data


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def report(
    report_json: Annotated[Path, typer.Argument(help="DIR/report.json written by diagnose.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="HTML file to write \\[default: report.html beside the JSON]."),
    ] = None,
) -> None:
    """Re-render report.html from a report.json (offline; the run is not needed)."""
    from pathprobe.reports.render import render_html

    target = out if out is not None else report_json.with_name("report.html")
    write_atomic(target, render_html(load_report(report_json)))
    typer.echo(str(target))


def compare(
    before: Annotated[Path, typer.Argument(help="report.json of the earlier run.")],
    after: Annotated[Path, typer.Argument(help="report.json of the later run.")],
    out: Annotated[Path, typer.Option("--out", help="HTML file to write.")],
) -> None:
    """Render a before/after page: what changed per path, step and stage."""
    from pathprobe.reports.compare import render_compare

    write_atomic(out, render_compare(load_report(before), load_report(after)))
    typer.echo(str(out))
