"""``pathprobe agent``: run the server probe beside a model server, for ``diagnose --agent``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pathprobe.errors import UsageError

if TYPE_CHECKING:
    from pathprobe.agent.server import AgentSettings

# The agent's defaults, as its flags show them. Copies, on purpose: the modules that own them
# (agent.server, probes.remote, probes.pyspy) import aiohttp, asyncio and the server probe, which
# `pathprobe --help` and every other command would then pay for (tests/unit/test_cli_startup.py
# checks each copy against its owner).
TOKEN_ENV = "PATHPROBE_AGENT_TOKEN"
DEFAULT_PORT = 9787
DEFAULT_MAX_RECORD_S = 120.0
DEFAULT_MAX_CONCURRENT = 2
DEFAULT_RATE_HZ = 0

# Hard ceilings: the agent bounds every recording, and its flags cannot lift the bound far.
MAX_RECORD_CEILING_S = 600.0
MAX_CONCURRENT_CEILING = 8


def agent(
    pid: Annotated[
        list[int] | None,
        typer.Option("--pid", help="Server process to watch (its children too); repeatable."),
    ] = None,
    cgroup: Annotated[
        Path | None,
        typer.Option(help="Also watch every process of this cgroup directory (v1 memory or v2)."),
    ] = None,
    listen: Annotated[
        str, typer.Option(help="HOST:PORT to listen on (loopback unless you say otherwise).")
    ] = f"127.0.0.1:{DEFAULT_PORT}",
    token_file: Annotated[
        Path | None,
        typer.Option(help=f"File holding the bearer token (else the env var {TOKEN_ENV})."),
    ] = None,
    max_record: Annotated[
        float, typer.Option("--max-record", help="Seconds after which a recording stops itself.")
    ] = DEFAULT_MAX_RECORD_S,
    max_concurrent: Annotated[
        int, typer.Option(help="Recordings allowed at the same time.")
    ] = DEFAULT_MAX_CONCURRENT,
    rate: Annotated[
        int,
        typer.Option(
            help="py-spy samples per second per process; 0 spends a budget of 100 samples/s "
            "on the processes that work."
        ),
    ] = DEFAULT_RATE_HZ,
) -> None:
    """Serve server-probe recordings of the given processes to `pathprobe diagnose --agent URL`.

    Every request needs `Authorization: Bearer TOKEN`. Prints `listening URL` when ready; stops
    on Ctrl-C / SIGTERM, reaping any py-spy it started.
    """
    from pathprobe.agent.server import run_agent

    settings = build_settings(
        pid or [], cgroup, listen, token_file, max_record, max_concurrent, rate
    )
    run_agent(settings)


def build_settings(
    pids: list[int],
    cgroup: Path | None,
    listen: str,
    token_file: Path | None,
    max_record_s: float,
    max_concurrent: int,
    rate_hz: int,
) -> AgentSettings:
    """Validate the flags; raises :class:`UsageError` naming the first problem."""
    from pathprobe.agent.server import AgentSettings
    from pathprobe.probes import cgroups

    if not pids and cgroup is None:
        raise UsageError("pathprobe agent needs --pid PID (repeatable) or --cgroup PATH")
    for pid in pids:
        if pid <= 0 or not Path(f"/proc/{pid}").exists():
            raise UsageError(f"--pid {pid}: no such process")
    if cgroup is not None and cgroups.cgroup_from_path(cgroup) is None:
        raise UsageError(f"--cgroup {cgroup}: not a readable cgroup directory")
    host, port = parse_listen(listen)
    token = read_token(token_file)
    if not 0 < max_record_s <= MAX_RECORD_CEILING_S:
        raise UsageError(f"--max-record must be in (0, {MAX_RECORD_CEILING_S:g}] seconds")
    if not 1 <= max_concurrent <= MAX_CONCURRENT_CEILING:
        raise UsageError(f"--max-concurrent must be 1 to {MAX_CONCURRENT_CEILING}")
    if not 0 <= rate_hz <= 1000:
        raise UsageError("--rate must be 0 (the sample budget) to 1000 samples per second")
    return AgentSettings(
        token=token,
        pids=tuple(pids),
        cgroup=cgroup,
        host=host,
        port=port,
        max_record_s=max_record_s,
        max_concurrent=max_concurrent,
        rate_hz=rate_hz,
    )


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` → (host, port); port 0 picks a free one."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host:
        raise UsageError(f"--listen expects HOST:PORT, got {listen!r}")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"--listen: port must be a number, got {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"--listen: port {port} out of range")
    return host, port


def read_token(token_file: Path | None) -> str:
    """The token from ``token_file`` or the environment; at least 16 characters."""
    from pathprobe.agent.server import MIN_TOKEN_CHARS

    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"--token-file {token_file}: {exc.strerror or exc}") from None
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            raise UsageError(f"a token is required: --token-file FILE or {TOKEN_ENV}")
    if len(token) < MIN_TOKEN_CHARS or any(ch.isspace() for ch in token):
        raise UsageError(
            f"the agent token must be at least {MIN_TOKEN_CHARS} characters without spaces"
        )
    return token
