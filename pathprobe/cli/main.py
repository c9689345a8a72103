"""The root ``pathprobe`` command: joins one Typer app (or command) per module."""

from __future__ import annotations

import typer

from pathprobe import __version__

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


def main() -> None:
    """Console-script entry point."""
    app()
