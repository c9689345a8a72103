"""``pathprobe doctor``: what each probe needs on this host, one line per probe.

Exit 0 when every probe a diagnosis runs can observe, 1 when some cannot (each such line says how
to enable it), 2 on bad usage. The testbed and net-delay lines are informational: only ``pathprobe
demo`` / ``pathprobe testbed`` need them, so they never fail the exit code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from pathprobe.errors import UsageError


def doctor(
    path: Annotated[
        list[str] | None,
        typer.Option(
            "--path",
            help="URL (or NAME=URL, as for diagnose) of a target: check the route and capture on "
            "its interface. Repeatable.",
            show_default=False,
        ),
    ] = None,
    server_pid: Annotated[
        list[int] | None,
        typer.Option(
            help="PID of a Python model server: check py-spy can attach, and its cgroup. "
            "Repeatable.",
            show_default=False,
        ),
    ] = None,
    capture_iface: Annotated[
        str | None, typer.Option(help="Check capture on this interface instead of the route's.")
    ] = None,
) -> None:
    """Check what each probe needs on this host (tcpdump, py-spy, cgroups, the testbed) and say
    how to enable what is missing. Exit 0 all probes can run, 1 some cannot, 2 bad usage."""
    from pathprobe import doctor as checks

    urls = [parse_target(value) for value in path or []]
    pids = [check_pid(pid) for pid in server_pid or []]
    results = [
        checks.check_capture(urls, capture_iface),
        checks.check_profiler(pids),
        checks.check_cgroup(pids[0] if pids else None),
        checks.check_testbed(),
        checks.check_net_delay(),
    ]
    for result in results:
        typer.echo(checks.format_line(result))
    raise typer.Exit(checks.exit_code(results))


def parse_target(value: str) -> str:
    """``URL`` or ``NAME=URL`` → the URL, validated like diagnose's; :class:`UsageError` if bad."""
    from pathprobe.config import validate_url

    name, sep, url = value.partition("=")
    # "http://host/?a=b" holds "=" too: only a bare word before it is a path name.
    if sep and "://" not in name:
        value = url.strip()
    return validate_url(value, "--path")


def check_pid(pid: int) -> int:
    """A running Python process, as diagnose's ``--server-pid`` requires. A process this user may
    not inspect passes: the profiler line then says why it cannot attach, which is the answer."""
    from pathprobe.config import looks_like_python

    if pid <= 0 or not Path(f"/proc/{pid}").exists():
        raise UsageError(f"--server-pid {pid}: no such process")
    try:
        os.readlink(f"/proc/{pid}/exe")
    except PermissionError:
        return pid
    except OSError:
        pass  # a kernel thread or a zombie: looks_like_python answers from what is left
    if not looks_like_python(pid):
        raise UsageError(f"--server-pid {pid} is not a Python process; give the model server's PID")
    return pid
