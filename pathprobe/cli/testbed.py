"""``pathprobe testbed up|down|status``: the built-in testbed as long-lived processes.

``up`` starts the stack, writes its state file and exits, leaving the processes running (each in
its own session); ``down`` tears down exactly what the state file records; ``status`` says what is
up. The JSON that ``up`` prints (URLs, server PIDs, faults, magnitudes) goes to stdout.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from pathprobe.errors import UsageError
from pathprobe.testbed import FAULTS, STACKS
from pathprobe.testbed import state as tb_state

app = typer.Typer(
    help="Start and stop the built-in testbed (model server, nginx, haproxy, fault knobs).",
    no_args_is_help=True,
)

StateDir = Annotated[
    Path,
    typer.Option("--state-dir", help="Where the state file of the running testbed lives."),
]


def sigterm_as_interrupt() -> None:
    """Make SIGTERM behave exactly like Ctrl-C, so ``finally`` blocks tear the testbed down.

    The handler re-raises the signal as SIGINT rather than raising ``KeyboardInterrupt`` itself:
    inside ``asyncio.run`` (uvloop) an exception raised from a signal handler can be swallowed as
    a callback error, while asyncio's own SIGINT handling cancels the main task cleanly.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.raise_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, handler)


def parse_magnitudes(values: list[str] | None) -> dict[str, float]:
    """``["net_delay_ms=50", …]`` → ``{"net_delay_ms": 50.0}``."""
    parsed: dict[str, float] = {}
    for value in values or []:
        key, sep, number = value.partition("=")
        if not sep:
            raise UsageError(f"--magnitude expects KEY=NUMBER, got {value!r}")
        try:
            parsed[key.strip()] = float(number)
        except ValueError:
            raise UsageError(f"--magnitude {key}: {number!r} is not a number") from None
    return parsed


#: ``--bare``, shared by ``testbed up`` and ``demo``.
BARE_OPTION = typer.Option(
    help="No timing headers anywhere: the servers send no Server-Timing, nginx and haproxy add "
    "none (as most production services run)."
)


def check_faults(faults: list[str] | None, stack: str) -> tuple[list[str], str]:
    for name in faults or []:
        if name not in FAULTS:
            raise UsageError(f"unknown fault {name!r}: use one of {', '.join(FAULTS)}")
    if stack not in STACKS:
        raise UsageError(f"unknown stack {stack!r}: use {' or '.join(STACKS)}")
    return list(faults or []), stack


def check_testbed_ready(faults: list[str], stack: str) -> None:
    """What the testbed needs for ``faults`` on ``stack`` is here (nginx, haproxy, the stack's
    modules; netfilterqueue for ``net_delay``), else :class:`UsageError` — one line naming what
    is missing and how to get it, before anything starts."""
    from pathprobe.doctor import check_net_delay, check_testbed

    checks = [check_testbed(stack)]
    if "net_delay" in faults:
        checks.append(check_net_delay())
    for check in checks:
        if not check.ok:
            raise UsageError(f"{check.detail}; to enable: {check.how_to_enable}")


@app.command()
def up(
    fault: Annotated[
        list[str] | None,
        typer.Option("--fault", help=f"Fault to inject; repeatable. One of: {', '.join(FAULTS)}."),
    ] = None,
    stack: Annotated[
        str, typer.Option(help=f"Model server stack: {', '.join(STACKS)}.")
    ] = "fastapi",
    magnitude: Annotated[
        list[str] | None,
        typer.Option("--magnitude", help="Override a fault magnitude, KEY=NUMBER; repeatable."),
    ] = None,
    bare: Annotated[bool, BARE_OPTION] = False,
    grpc: Annotated[
        bool,
        typer.Option(
            help="Also serve ModelInfer over gRPC, through nginx grpc_pass and haproxy in "
            "HTTP/2 (aiohttp stack); its URLs are grpc_urls."
        ),
    ] = False,
    server_cpu: Annotated[
        int, typer.Option(help="CPU the testbed is pinned to (-1: no pinning).")
    ] = 1,
    state_dir: StateDir = tb_state.DEFAULT_STATE_DIR,
) -> None:
    """Bring the testbed up and leave it running; print its URLs and PIDs as JSON."""
    from pathprobe.testbed import Testbed

    faults, stack = check_faults(fault, stack)
    check_testbed_ready(faults, stack)
    state_file = state_dir / tb_state.STATE_FILE_NAME
    if state_file.exists():
        raise UsageError(f"a testbed is already up ({state_file}); run `pathprobe testbed down`")
    sigterm_as_interrupt()
    bed = Testbed(
        faults=faults,
        stack=stack,
        server_cpu=None if server_cpu < 0 else server_cpu,
        magnitudes=parse_magnitudes(magnitude),
        state_file=state_file,
        instrumented=not bare,
        grpc=grpc,
    )
    bed.start()
    info = bed.describe()
    info["state_file"] = str(state_file)
    typer.echo(json.dumps(info, indent=2))


@app.command()
def down(state_dir: StateDir = tb_state.DEFAULT_STATE_DIR) -> None:
    """Tear down the testbed recorded in the state file: processes, namespace, rules, cgroups."""
    state_file = state_dir / tb_state.STATE_FILE_NAME
    if not state_file.exists():
        typer.echo(f"no testbed is up ({state_file} does not exist)", err=True)
        return
    problems = tb_state.teardown(tb_state.load(state_file))
    state_file.unlink(missing_ok=True)
    for problem in problems:
        typer.echo(f"warning: {problem}", err=True)
    typer.echo("testbed down")


@app.command()
def status(state_dir: StateDir = tb_state.DEFAULT_STATE_DIR) -> None:
    """Print the running testbed's URLs and which of its processes are alive (JSON)."""
    from pathprobe.testbed.procs import ProcRecord, is_alive

    state_file = state_dir / tb_state.STATE_FILE_NAME
    if not state_file.exists():
        typer.echo(json.dumps({"up": False}))
        raise typer.Exit(1)
    data = tb_state.load(state_file)
    procs: list[dict[str, Any]] = [
        {**raw, "alive": is_alive(ProcRecord.from_json(raw))} for raw in data.get("processes", [])
    ]
    summary = {"up": True, "processes": procs}
    summary.update({k: data.get(k) for k in ("urls", "faults", "stack", "netns", "cgroups")})
    typer.echo(json.dumps(summary, indent=2))
