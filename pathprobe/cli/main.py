"""The root ``pathprobe`` command: joins one Typer app (or command) per module."""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import typer

from pathprobe import __version__
from pathprobe.cli.agent import agent as agent_command
from pathprobe.cli.demo import demo as demo_command
from pathprobe.cli.diagnose import diagnose
from pathprobe.cli.doctor import doctor as doctor_command
from pathprobe.cli.report import compare as compare_command
from pathprobe.cli.report import report as report_command
from pathprobe.cli.testbed import app as testbed_app
from pathprobe.errors import EXIT_CANNOT_RUN, EXIT_INTERRUPTED, EXIT_USAGE, PathprobeError
from pathprobe.redact import redact_text

app = typer.Typer(
    name="pathprobe",
    help="Find where the latency of an ML prediction service goes.",
    no_args_is_help=True,
    # Header values (tokens) must never appear in a traceback.
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pathprobe {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Find where the latency of an ML prediction service goes."""


# Command modules register themselves below, one line each.
app.command(no_args_is_help=True)(diagnose)
app.command(name="agent")(agent_command)
app.command(name="report", no_args_is_help=True)(report_command)
app.command(name="compare", no_args_is_help=True)(compare_command)
app.add_typer(testbed_app, name="testbed")
app.command(name="demo")(demo_command)
app.command(name="doctor")(doctor_command)


# Typer >= 0.2x vendors click as ``typer._click`` and no longer depends on click; older Typer
# raises click's own exceptions and brings click in as its dependency. Catch whichever this Typer
# raises — never import click unconditionally: a plain `pip install pathprobe` may not have it.
try:
    _click_exceptions = importlib.import_module("typer._click.exceptions")
except ImportError:  # pragma: no cover - older Typer
    _click_exceptions = importlib.import_module("click.exceptions")

_USAGE_ERRORS: tuple[type[Exception], ...] = (_click_exceptions.UsageError,)
_CLICK_ERRORS: tuple[type[Exception], ...] = (_click_exceptions.ClickException,)
_ABORTS: tuple[type[BaseException], ...] = (typer.Abort,)


def main() -> None:
    """Console-script entry point: every failure becomes one line on stderr and an exit code."""
    try:
        code = app(standalone_mode=False)
    except _USAGE_ERRORS as exc:
        message = _one_line(exc.format_message())  # type: ignore[attr-defined]
        if not message:  # no arguments at all: the help was printed, there is nothing to add
            sys.exit(EXIT_USAGE)
        _fail(f"{message} (see --help)", EXIT_USAGE)
    except _ABORTS:
        _fail("interrupted", EXIT_INTERRUPTED)
    except _CLICK_ERRORS as exc:
        _fail(_one_line(exc.format_message()), EXIT_USAGE)  # type: ignore[attr-defined]
    except PathprobeError as exc:
        _fail(exc.message, exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED)
    except Exception as exc:
        if os.environ.get("PATHPROBE_DEBUG"):
            # The full traceback, for a bug report, but redacted line by line: an exception's
            # text may quote a header or a URL with a password.
            lines = traceback.format_exception(exc)
            sys.stderr.write("".join(redact_text(line) for line in "".join(lines).splitlines(True)))
            sys.exit(EXIT_CANNOT_RUN)
        _fail(
            f"internal error: {type(exc).__name__}: {exc} (set PATHPROBE_DEBUG=1 for details)",
            EXIT_CANNOT_RUN,
        )
    sys.exit(code if isinstance(code, int) else 0)


def _one_line(message: str) -> str:
    """Messages are one line on stderr: scripts grep them, people read the first line only."""
    return " ".join(message.split())


def _fail(message: str, code: int) -> None:
    sys.stderr.write(f"pathprobe: error: {_one_line(redact_text(message))}\n")
    sys.exit(code)
