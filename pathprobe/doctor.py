"""What each probe needs on this host, checked without running a diagnosis.

Every check returns a :class:`Check`: whether the probe (or feature) can run, what was found, and —
when it cannot — how to enable it. ``pathprobe doctor`` prints :func:`format_line` of each;
``pathprobe diagnose`` prints the same line on stderr, at start, for each probe that will not
observe (:func:`diagnose_checks`), so a user learns the fix before the run rather than from the
report afterwards. The facts come from the probes' own helpers (tool lookup, privileges, routes,
cgroup discovery), so the doctor cannot disagree with what a diagnosis would do.

Contract: a check never raises for reasons of the environment, and every subprocess it starts is
bounded in time and reaped. Bad input (a PID that does not exist, a malformed URL) is the caller's
to reject before calling.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pathprobe.probes import cgroups
from pathprobe.probes.capture import (
    bpf_filter,
    die_with_parent,
    find_tcpdump,
    has_capture_privilege,
    tcpdump_argv,
)
from pathprobe.probes.pyspy import find_py_spy, ptrace_refusal, try_dump
from pathprobe.probes.routes import LOOPBACK_IFACE, capture_iface_for, resolve_host

if TYPE_CHECKING:
    from pathprobe.config import DiagnoseConfig

#: How long the capture trial waits for tcpdump to say it is listening.
CAPTURE_TRIAL_TIMEOUT_S = 3.0
#: How long the attach trial gives ``py-spy dump``.
ATTACH_TRIAL_TIMEOUT_S = 10.0

SETUP_HINT = "scripts/setup.sh demo (from a clone), or apt-get install nginx-light haproxy"

#: Python modules each testbed stack imports beyond pathprobe's own dependencies (the
#: ``testbed`` extra). A stack not listed here is checked against all of them.
TESTBED_MODULES: dict[str, tuple[str, ...]] = {
    "fastapi": ("fastapi", "uvicorn", "uvicorn_worker", "gunicorn", "sklearn"),
    "aiohttp": ("sklearn",),
    "wsgi": ("flask", "gunicorn", "sklearn"),
}
#: Programs the testbed runs, with the Debian package that has each.
TESTBED_TOOLS: dict[str, str] = {
    "nginx": "nginx-light",
    "haproxy": "haproxy",
    "taskset": "util-linux",
}

# Memory files the server probe reads, per cgroup version (probes/cgroups.py).
_CGROUP_MEMORY_FILES: dict[int, tuple[str, ...]] = {
    1: ("memory.usage_in_bytes", "memory.limit_in_bytes", "memory.failcnt", "memory.oom_control"),
    2: ("memory.current", "memory.max", "memory.events"),
}


@dataclass(frozen=True)
class Check:
    """One probe's (or feature's) readiness on this host.

    ``required``: whether ``pathprobe doctor`` fails (exit 1) when this check does. The probes a
    diagnosis runs are required; what only the built-in testbed needs is not.
    """

    name: str
    ok: bool
    detail: str
    how_to_enable: str | None = None
    required: bool = True


def format_line(check: Check) -> str:
    """One line: name, ``ok`` or ``NO``, what was found, and how to enable it when not ok."""
    status = "ok" if check.ok else ("NO" if check.required else "no")
    line = f"{check.name:<10} {status:<3} {check.detail}"
    if not check.ok and check.how_to_enable:
        line += f" — to enable: {check.how_to_enable}"
    return " ".join(line.split("\n"))


def exit_code(checks: Iterable[Check]) -> int:
    """0 when every required check passed, else 1 (the doctor's contract)."""
    return 0 if all(c.ok for c in checks if c.required) else 1


# -- capture (tcpdump) ----------------------------------------------------------------------------


def capture_ifaces(urls: Sequence[str], iface_override: str | None) -> dict[str, str | None]:
    """Interface the capture would listen on, per URL (``lo`` when no URL is given); None when
    the host does not resolve or no route is known. Same rule as the network probe."""
    if iface_override:
        return {url: iface_override for url in urls} or {"": iface_override}
    if not urls:
        return {"": LOOPBACK_IFACE}
    out: dict[str, str | None] = {}
    for url in urls:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addrs = resolve_host(host, port) if host else []
        out[url] = capture_iface_for(addrs) if addrs else None
    return out


def check_capture(
    urls: Sequence[str] = (), iface_override: str | None = None, *, trial: bool = True
) -> Check:
    """tcpdump present, privileges to capture, an interface for every URL, and (``trial``) a
    real start of tcpdump on each interface until it says it is listening."""
    tcpdump = find_tcpdump()
    if tcpdump is None:
        return Check(
            "capture", False, "tcpdump is not installed", "apt-get install tcpdump (Debian/Ubuntu)"
        )
    if not has_capture_privilege():
        return Check(
            "capture",
            False,
            "packet capture needs root or CAP_NET_RAW",
            f"run as root, or setcap cap_net_raw,cap_net_admin=eip {tcpdump} and run pathprobe "
            "with CAP_NET_RAW",
        )
    ifaces = capture_ifaces(urls, iface_override)
    unrouted = [url for url, iface in ifaces.items() if iface is None]
    if unrouted:
        return Check(
            "capture",
            False,
            f"no route found to {unrouted[0]} to pick an interface",
            "check the URL's host resolves, or pass --capture-iface IFACE",
        )
    names = sorted({iface for iface in ifaces.values() if iface is not None})
    for iface in names:
        if iface != "any" and not Path("/sys/class/net", iface).exists():
            return Check(
                "capture",
                False,
                f"interface {iface} does not exist",
                "pass --capture-iface with an interface from `ip link`",
            )
        if trial:
            problem = capture_trial(tcpdump, iface)
            if problem is not None:
                return Check(
                    "capture",
                    False,
                    f"tcpdump cannot capture on {iface}: {problem}",
                    "run as root (in a container: --cap-add NET_RAW --cap-add NET_ADMIN)",
                )
    where = ", ".join(names)
    how = "can capture on" if trial else "allowed to capture on"
    hint = "" if urls else " (give --path URL to check the interface to your target)"
    return Check("capture", True, f"tcpdump ({tcpdump}) {how} {where}{hint}")


def capture_trial(
    tcpdump: str, iface: str, timeout_s: float = CAPTURE_TRIAL_TIMEOUT_S
) -> str | None:
    """Start tcpdump on ``iface`` as the network probe would, wait until it says "listening",
    stop it. None on success, else tcpdump's last complaint. Captures nothing to keep: the
    filter names the discard port and the file is deleted."""
    with tempfile.TemporaryDirectory(prefix="pathprobe-doctor-") as tmp:
        argv = die_with_parent(
            tcpdump_argv(
                tcpdump, iface, Path(tmp, "trial.pcap"), bpf_filter([], 9), buffer_kib=1024
            )
        )
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        except OSError as exc:
            return f"cannot run tcpdump: {exc.strerror or exc}"
        assert proc.stderr is not None
        text = b""
        deadline = time.monotonic() + timeout_s
        try:
            while b"listening on" not in text:
                left = deadline - time.monotonic()
                if left <= 0:
                    return f"no answer within {timeout_s:g} s"
                ready, _, _ = select.select([proc.stderr], [], [], left)
                chunk = os.read(proc.stderr.fileno(), 4096) if ready else b""
                if ready and not chunk:  # tcpdump exited
                    lines = text.decode(errors="replace").strip().splitlines()
                    return (lines[-1] if lines else f"exit code {proc.wait()}")[:200]
                text += chunk
            return None
        finally:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stderr.close()


# -- profiler (py-spy) ----------------------------------------------------------------------------


def check_profiler(pids: Sequence[int] = (), *, trial: bool = True) -> Check:
    """py-spy present and allowed to attach: ptrace scope, CAP_SYS_PTRACE, owner of each PID;
    with ``trial``, one real ``py-spy dump`` of each PID."""
    exe = find_py_spy()
    if exe is None:
        return Check(
            "profiler",
            False,
            "py-spy not found",
            "pip install py-spy (a pathprobe dependency) or put py-spy on PATH",
        )
    for pid in pids or (os.getpid(),):
        refusal = ptrace_refusal(pid)
        if refusal is not None:
            return Check("profiler", False, refusal.reason, refusal.how_to_enable)
    if not pids:
        return Check(
            "profiler",
            True,
            f"py-spy ({exe}) allowed to attach "
            "(give --server-pid PID to try attaching to your server)",
        )
    if trial:
        for pid in pids:
            problem = asyncio.run(try_dump(exe, pid, ATTACH_TRIAL_TIMEOUT_S))
            if problem is not None:
                return Check(
                    "profiler",
                    False,
                    f"py-spy cannot attach to PID {pid}: {problem}",
                    "give the PID of a running Python server; in a container add SYS_PTRACE",
                )
    how = "attached to" if trial else "allowed to attach to"
    return Check("profiler", True, f"py-spy ({exe}) {how} PID {', '.join(map(str, pids))}")


# -- cgroup (memory) ------------------------------------------------------------------------------


def check_cgroup(pid: int | None = None) -> Check:
    """The memory cgroup of ``pid`` (else of this process): found, its version, and the memory
    files the server probe reads all readable."""
    paths = cgroups.cgroup_of(pid if pid is not None else os.getpid())
    unavailable = cgroups.check_cgroup(paths)
    if unavailable is not None or paths is None:
        reason = unavailable.reason if unavailable else "no cgroup found"
        return Check("cgroup", False, reason, cgroups.CGROUP_HOW_TO)
    if paths.memory is None:
        return Check(
            "cgroup",
            False,
            f"cgroup v{paths.version} {paths.name}: no memory controller",
            "enable the memory controller (v2: +memory in the parent's cgroup.subtree_control)",
        )
    unreadable = [
        name for name in _CGROUP_MEMORY_FILES[paths.version] if not _readable(paths.memory / name)
    ]
    if unreadable:
        return Check(
            "cgroup",
            False,
            f"cgroup v{paths.version} {paths.memory}: cannot read {', '.join(unreadable)}",
            cgroups.CGROUP_HOW_TO,
        )
    return Check(
        "cgroup", True, f"cgroup v{paths.version}, memory files readable in {paths.memory}"
    )


def _readable(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            fh.read(4096)
    except OSError:
        return False
    return True


# -- the built-in testbed ------------------------------------------------------------------------


def missing_modules(names: Iterable[str]) -> list[str]:
    """The names among ``names`` that cannot be imported (looked up, not imported)."""
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def check_testbed(stack: str | None = None) -> Check:
    """nginx, haproxy (and taskset) on PATH, and the Python modules of ``stack`` (every stack's
    when None). Not required: only ``pathprobe demo`` and ``pathprobe testbed`` need it."""
    tools = [
        f"{tool} (Debian: {pkg})"
        for tool, pkg in TESTBED_TOOLS.items()
        if shutil.which(tool) is None
    ]
    if tools:
        return Check("testbed", False, f"missing {', '.join(tools)}", SETUP_HINT, required=False)
    wanted = TESTBED_MODULES.get(stack or "") or tuple(
        dict.fromkeys(m for mods in TESTBED_MODULES.values() for m in mods)
    )
    modules = missing_modules(wanted)
    if modules:
        return Check(
            "testbed",
            False,
            f"missing Python modules {', '.join(modules)}",
            "pip install 'pathprobe[testbed]'",
            required=False,
        )
    return Check(
        "testbed", True, "nginx, haproxy and the model server's modules found", required=False
    )


def check_net_delay() -> Check:
    """The testbed's network-delay fault: the ``netfilterqueue`` module and iptables."""
    if missing_modules(["netfilterqueue"]):
        return Check(
            "net_delay",
            False,
            "the net_delay fault needs the netfilterqueue module",
            "apt-get install build-essential python3-dev libnetfilter-queue-dev, then "
            "pip install 'pathprobe[netdelay]'",
            required=False,
        )
    if shutil.which("iptables") is None:
        return Check(
            "net_delay",
            False,
            "the net_delay fault needs iptables",
            "apt-get install iptables",
            required=False,
        )
    return Check("net_delay", True, "netfilterqueue and iptables found", required=False)


# -- what a diagnosis will run -------------------------------------------------------------------


def diagnose_checks(config: DiagnoseConfig) -> list[Check]:
    """The checks of the probes ``config`` turns on, without trials (cheap: no subprocess).
    Probes switched off by a flag, or served by ``--agent``, are not checked."""
    checks: list[Check] = []
    opts = config.probes
    if opts.capture:
        checks.append(check_capture([p.url for p in config.paths], opts.capture_iface, trial=False))
    if opts.agent_url is None and opts.server_pids:
        if opts.profile:
            checks.append(check_profiler(opts.server_pids, trial=False))
        checks.append(check_cgroup(opts.server_pids[0]))
    return checks
