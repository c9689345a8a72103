"""Start and stop the testbed's processes: each in its own process group, stopped only by its id.

A :class:`ProcRecord` remembers pid, process group and the kernel's start time of the process, so a
later ``pathprobe testbed down`` never signals a recycled PID that now belongs to someone else.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ProcRecord:
    name: str
    pid: int
    pgid: int
    start_ticks: int  # field 22 of /proc/PID/stat: identifies this process, not just its number

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ProcRecord:
        return cls(str(raw["name"]), int(raw["pid"]), int(raw["pgid"]), int(raw["start_ticks"]))


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or ``None`` if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def is_alive(record: ProcRecord) -> bool:
    ticks = start_ticks(record.pid)
    if ticks is None or ticks != record.start_ticks:
        return False
    try:
        state = Path(f"/proc/{record.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen[bytes], ProcRecord]:
    """Start ``argv`` in a new session (its own process group), output appended to ``log_path``."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    ticks = start_ticks(proc.pid) or 0
    return proc, ProcRecord(name, proc.pid, proc.pid, ticks)


def stop_all(
    targets: Sequence[tuple[ProcRecord, subprocess.Popen[bytes] | None]], grace_s: float = 5.0
) -> None:
    """SIGTERM each record's process group, wait for all of them to go, SIGKILL what stays.

    Every group is signalled before any is waited for, so a teardown takes the slowest process's
    shutdown, not the sum of them (gunicorn's arbiter alone takes 0.5–1.5 s, measured on each of
    the testbed's stacks). Signals go to a group only while its leader is still the process we
    started, or — leader gone — while every remaining member is younger than it; the group id is
    ours (``start_new_session``), so nothing outside the testbed is touched. Returns when no live
    member of any group is left (or after ``2 × grace_s``)."""
    for record, _ in targets:
        if is_alive(record):
            _signal_group(record.pgid, signal.SIGTERM)

    def running(record: ProcRecord, popen: subprocess.Popen[bytes] | None) -> bool:
        leader_running = popen.poll() is None if popen is not None else is_alive(record)
        return leader_running or bool(_group_members(record.pgid))

    _wait_until_none(lambda: [t for t in targets if running(*t)], grace_s)
    stuck = [
        (record, popen)
        for record, popen in targets
        if _group_members(record.pgid) and (popen is not None or _group_is_ours(record))
    ]
    for record, _ in stuck:
        _signal_group(record.pgid, signal.SIGKILL)
    _wait_until_none(lambda: [r for r, _ in stuck if _group_members(r.pgid)], grace_s)
    for _, popen in targets:
        if popen is not None:
            try:
                popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass


def _wait_until_none(remaining: Callable[[], Sequence[object]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while remaining() and time.monotonic() < deadline:
        time.sleep(0.05)


def pin_process_group(pgid: int, cpu: int) -> None:
    """Pin every thread of every live process in group ``pgid`` to ``cpu``. Affinity belongs to
    threads (``sched_setaffinity`` on a pid sets only its main thread), and children forked or
    threads started later inherit it from the thread that makes them."""
    for pid in _group_members(pgid):
        try:
            tids = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
        except OSError:  # gone meanwhile
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(tid, {cpu})
            except (ProcessLookupError, PermissionError):
                pass


def _group_is_ours(record: ProcRecord) -> bool:
    # Without the Popen handle (``testbed down`` from another process) the leader may be gone; the
    # group is still ours if every remaining member started no earlier than the leader did.
    members = _group_members(record.pgid)
    return bool(members) and all((start_ticks(p) or 0) >= record.start_ticks for p in members)


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields: state, ppid, pgrp, …
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


#: Listening ports are picked below the kernel's ephemeral range: a port from there (what a bind
#: to port 0 returns) can be taken as the source port of any outgoing connection in the seconds
#: between picking it and the server binding it — haproxy once failed to start that way.
LISTEN_PORTS_LOW = 20000
_handed_out: set[int] = set()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range of source ports for outgoing connections (Linux default 32768–60999)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now, outside the ephemeral range when there is room below it, and not
    handed out before by this process (a bind check reserves nothing)."""
    low_ephemeral, _ = ephemeral_range()
    if low_ephemeral - LISTEN_PORTS_LOW >= 1000:
        rng = random.SystemRandom()
        for _ in range(200):
            port = rng.randrange(LISTEN_PORTS_LOW, low_ephemeral)
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port = int(sock.getsockname()[1])
    _handed_out.add(port)
    return port


def run(
    argv: Sequence[str], check: bool = True, timeout_s: float = 20.0
) -> subprocess.CompletedProcess[str]:
    """Run a short command (ip, tc, iptables); raise with its stderr when ``check`` and it fails."""
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip() or result.returncode}")
    return result
