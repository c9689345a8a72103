"""The server's cgroup: memory limit and OOM events, CPU throttling, kernel OOM lines.

Both cgroup versions are read (design.md §3):

* **v1** — ``memory.limit_in_bytes``, ``memory.usage_in_bytes``, ``memory.failcnt`` and
  ``memory.oom_control`` (``oom_kill`` counter, kernel ≥ 4.13); OOM *events* are counted through
  the v1 notification API (an eventfd registered on ``memory.oom_control`` via
  ``cgroup.event_control``; needs write access there, i.e. root). CPU: ``cpu.stat``
  ``nr_throttled`` / ``throttled_time`` (ns), quota from ``cpu.cfs_quota_us`` ÷
  ``cpu.cfs_period_us``.
* **v2** — ``memory.max``, ``memory.current``, ``memory.events`` (``max``, ``oom``, ``oom_kill``),
  ``cpu.stat`` ``nr_throttled`` / ``throttled_usec``, quota from ``cpu.max``.

Counters are read at window start and end; the summary holds deltas. Usage is sampled by the
process sampler (:meth:`CgroupWatch.memory_usage_bytes`); a spike between samples is caught by
the kernel's high-water mark (``memory.max_usage_in_bytes`` / ``memory.peak``) when that rose
during the window — never reset, as other readers may rely on it.

Kernel OOM lines come from ``/dev/kmsg`` (opened at window start and positioned at its end, so
only new records are read) or, when that is not readable, from ``dmesg`` filtered by time.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pathprobe.probes.base import JSONDict, Unavailable

# Limits at or above this are "no limit" (v1 writes PAGE_COUNTER_MAX * page size).
_UNLIMITED_BYTES = 1 << 60
_OOM_LINE = re.compile(
    r"out of memory|oom-kill|oom_reaper|killed process|invoked oom-killer|memory cgroup out of",
    re.IGNORECASE,
)
MAX_KERNEL_LINES = 50
CGROUP_HOW_TO = (
    "run pathprobe (or `pathprobe agent`) as root on the server's host, with /sys/fs/cgroup "
    "mounted (in Kubernetes: a sidecar sharing the pod's cgroup)"
)


@dataclass(frozen=True)
class CgroupPaths:
    """Where the server's cgroup lives. ``memory``/``cpu`` are directories, None if not found."""

    version: int
    memory: Path | None
    cpu: Path | None
    name: str  # the cgroup's path inside its hierarchy, e.g. "/kubepods/pod…"


def _mounts() -> dict[str, Path]:
    """Controller (or "unified") → mount point, from /proc/self/mountinfo."""
    mounts: dict[str, Path] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return mounts
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        fstype, _source, *opts = right.split()
        mount_point = Path(fields[4])
        if fstype == "cgroup2":
            mounts.setdefault("unified", mount_point)
        elif fstype == "cgroup":
            for opt in (opts[0] if opts else "").split(","):
                if opt in ("memory", "cpu"):
                    mounts.setdefault(opt, mount_point)
    return mounts


def cgroup_of(pid: int) -> CgroupPaths | None:
    """The memory and cpu cgroup directories of ``pid`` (v1 preferred where it holds memory)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    mounts = _mounts()
    v1: dict[str, str] = {}
    unified: str | None = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            unified = path
        for controller in controllers.split(","):
            if controller in ("memory", "cpu"):
                v1[controller] = path
    if "memory" in v1 and "memory" in mounts:
        memory = mounts["memory"] / v1["memory"].lstrip("/")
        cpu = mounts["cpu"] / v1["cpu"].lstrip("/") if "cpu" in v1 and "cpu" in mounts else None
        return CgroupPaths(1, memory, cpu, v1["memory"])
    if unified is not None and "unified" in mounts:
        directory = mounts["unified"] / unified.lstrip("/")
        memory2 = directory if (directory / "memory.current").exists() else None
        cpu2 = directory if (directory / "cpu.stat").exists() else None
        if memory2 is None and cpu2 is None:
            return None
        return CgroupPaths(2, memory2, cpu2, unified)
    return None


def cgroup_from_path(path: str | Path) -> CgroupPaths | None:
    """A cgroup named by its directory (``--cgroup`` of the agent): v2 or a v1 memory dir."""
    directory = Path(path)
    if (directory / "memory.current").exists() or (directory / "cgroup.controllers").exists():
        cpu = directory if (directory / "cpu.stat").exists() else None
        memory = directory if (directory / "memory.current").exists() else None
        return CgroupPaths(2, memory, cpu, str(directory))
    if (directory / "memory.limit_in_bytes").exists():
        mounts = _mounts()
        name = "/"
        if "memory" in mounts:
            with contextlib.suppress(ValueError):
                name = "/" + str(directory.relative_to(mounts["memory"]))
        cpu = None
        if "cpu" in mounts and (mounts["cpu"] / name.lstrip("/") / "cpu.stat").exists():
            cpu = mounts["cpu"] / name.lstrip("/")
        return CgroupPaths(1, directory, cpu, name)
    return None


def cgroup_pids(paths: CgroupPaths) -> set[int]:
    """Every process in the cgroup (``cgroup.procs``; v1 memory hierarchy)."""
    directory = paths.memory or paths.cpu
    if directory is None:
        return set()
    try:
        return {int(x) for x in (directory / "cgroup.procs").read_text().split()}
    except (OSError, ValueError):
        return set()


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _read_kv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


@dataclass
class CgroupCounters:
    """One reading of the cumulative counters."""

    failcnt: int | None = None
    oom: int | None = None
    oom_kill: int | None = None
    nr_throttled: int | None = None
    throttled_ms: float | None = None


def _delta(end: int | float | None, start: int | float | None) -> Any:
    if end is None or start is None:
        return None
    return end - start


@dataclass
class CgroupWatch:
    """Reads one cgroup over one window: counters at start and end, usage maximum in between."""

    paths: CgroupPaths
    start: CgroupCounters = field(default_factory=CgroupCounters)
    usage_max_bytes: int | None = None
    _oom_eventfd: int | None = None
    _peak_at_start: int | None = None

    def memory_limit_bytes(self) -> int | None:
        if self.paths.memory is None:
            return None
        name = "memory.limit_in_bytes" if self.paths.version == 1 else "memory.max"
        limit = _read_int(self.paths.memory / name)
        return None if limit is None or limit >= _UNLIMITED_BYTES else limit

    def memory_usage_bytes(self) -> int | None:
        """Current usage; also folds it into the window's maximum (called by the sampler)."""
        if self.paths.memory is None:
            return None
        name = "memory.usage_in_bytes" if self.paths.version == 1 else "memory.current"
        usage = _read_int(self.paths.memory / name)
        if usage is not None and (self.usage_max_bytes is None or usage > self.usage_max_bytes):
            self.usage_max_bytes = usage
        return usage

    def memory_peak_bytes(self) -> int | None:
        """The kernel's own high-water mark (v1 ``max_usage_in_bytes``, v2 ``memory.peak``)."""
        if self.paths.memory is None:
            return None
        name = "memory.max_usage_in_bytes" if self.paths.version == 1 else "memory.peak"
        return _read_int(self.paths.memory / name)

    def cpu_limit_cores(self) -> float | None:
        """The CFS quota in cores (quota ÷ period); None without a quota."""
        if self.paths.cpu is None:
            return None
        if self.paths.version == 1:
            quota = _read_int(self.paths.cpu / "cpu.cfs_quota_us")
            period = _read_int(self.paths.cpu / "cpu.cfs_period_us")
        else:
            try:
                quota_text, _, period_text = (self.paths.cpu / "cpu.max").read_text().partition(" ")
                quota = None if quota_text == "max" else int(quota_text)
                period = int(period_text)
            except (OSError, ValueError):
                return None
        if quota is None or period is None or quota <= 0 or period <= 0:
            return None
        return quota / period

    def read_counters(self) -> CgroupCounters:
        counters = CgroupCounters()
        if self.paths.memory is not None:
            if self.paths.version == 1:
                counters.failcnt = _read_int(self.paths.memory / "memory.failcnt")
                oom_control = _read_kv(self.paths.memory / "memory.oom_control")
                counters.oom_kill = oom_control.get("oom_kill")
            else:
                events = _read_kv(self.paths.memory / "memory.events")
                counters.failcnt = events.get("max")
                counters.oom = events.get("oom")
                counters.oom_kill = events.get("oom_kill")
        if self.paths.cpu is not None:
            stat = _read_kv(self.paths.cpu / "cpu.stat")
            counters.nr_throttled = stat.get("nr_throttled")
            if "throttled_time" in stat:  # v1: nanoseconds
                counters.throttled_ms = stat["throttled_time"] / 1e6
            elif "throttled_usec" in stat:  # v2: microseconds
                counters.throttled_ms = stat["throttled_usec"] / 1e3
        return counters

    def begin(self) -> None:
        """Take the start reading; on v1, register for OOM notifications."""
        self.start = self.read_counters()
        self.usage_max_bytes = None
        self._peak_at_start = self.memory_peak_bytes()
        self.memory_usage_bytes()
        if self.paths.version == 1 and self.paths.memory is not None:
            self._oom_eventfd = _register_v1_oom_eventfd(self.paths.memory)

    def end(self) -> JSONDict:
        """The window's summary (deltas); releases the eventfd."""
        self.memory_usage_bytes()
        # A spike between two samples (an allocation that ends in an OOM kill within 100 ms) is
        # caught by the kernel's high-water mark: if it rose during the window, the new peak
        # happened in the window. (It is never reset: other readers may rely on it.)
        peak = self.memory_peak_bytes()
        if peak is not None and self._peak_at_start is not None and peak > self._peak_at_start:
            self.usage_max_bytes = max(self.usage_max_bytes or 0, peak)
        now = self.read_counters()
        oom_events: int | None
        if self.paths.version == 1:
            oom_events = None
            if self._oom_eventfd is not None:
                oom_events = _drain_eventfd(self._oom_eventfd)
        else:
            oom_events = _delta(now.oom, self.start.oom)
        self.close()
        return {
            "available": True,
            "version": self.paths.version,
            "path": self.paths.name,
            "memory_limit_bytes": self.memory_limit_bytes(),
            "memory_usage_max_bytes": self.usage_max_bytes,
            "oom_events": oom_events,
            "oom_kill_events": _delta(now.oom_kill, self.start.oom_kill),
            "failcnt_delta": _delta(now.failcnt, self.start.failcnt),
            "cpu_limit_cores": self.cpu_limit_cores(),
            "cpu_nr_throttled_delta": _delta(now.nr_throttled, self.start.nr_throttled),
            "cpu_throttled_ms_delta": _delta(now.throttled_ms, self.start.throttled_ms),
        }

    def close(self) -> None:
        if self._oom_eventfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._oom_eventfd)
            self._oom_eventfd = None


def _register_v1_oom_eventfd(memory_dir: Path) -> int | None:
    """An eventfd the kernel bumps on every OOM in the v1 memory cgroup; None if refused."""
    efd: int | None = None
    ofd: int | None = None
    try:
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        ofd = os.open(memory_dir / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        # No O_CREAT: the control file exists only in a real v1 memory cgroup.
        cfd = os.open(memory_dir / "cgroup.event_control", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(cfd, f"{efd} {ofd}".encode())
        finally:
            os.close(cfd)
    except (OSError, AttributeError):
        if efd is not None:
            os.close(efd)
        efd = None
    finally:
        # The kernel holds its own reference to the control file once registered.
        if ofd is not None:
            os.close(ofd)
    return efd


def _drain_eventfd(efd: int) -> int:
    try:
        return os.eventfd_read(efd)
    except BlockingIOError:
        return 0
    except OSError:
        return 0


def check_cgroup(paths: CgroupPaths | None) -> Unavailable | None:
    """Why the cgroup cannot be read, or None when it can."""
    if paths is None:
        return Unavailable("the server's cgroup was not found (/proc/PID/cgroup)", CGROUP_HOW_TO)
    directory = paths.memory or paths.cpu
    if directory is None or not os.access(directory, os.R_OK):
        return Unavailable(f"cgroup {paths.name} is not readable", CGROUP_HOW_TO)
    return None


class KernelOomLog:
    """Kernel log lines about OOM kills written during a window.

    ``/dev/kmsg`` is opened and positioned at its end at ``begin``; ``end`` reads the records
    written since. Without ``/dev/kmsg``, ``dmesg`` output is filtered by its timestamps (seconds
    since boot, the same clock as CLOCK_MONOTONIC up to suspend time).
    """

    def __init__(self) -> None:
        self._fd: int | None = None
        self._start_s = 0.0
        self.unavailable: Unavailable | None = None

    def begin(self) -> None:
        self._start_s = time.clock_gettime(time.CLOCK_MONOTONIC)
        try:
            self._fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self._fd, 0, os.SEEK_END)
        except OSError:
            self._fd = None

    def end(self) -> list[str]:
        """OOM-related lines since ``begin`` (at most :data:`MAX_KERNEL_LINES`)."""
        if self._fd is not None:
            lines = self._read_kmsg(self._fd)
            os.close(self._fd)
            self._fd = None
            return lines
        return self._read_dmesg()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def _read_kmsg(fd: int) -> list[str]:
        lines: list[str] = []
        for _ in range(100_000):  # bounded: the ring buffer holds far fewer records
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError:  # EPIPE: records overwritten while we read; go on
                continue
            if not record:
                break
            text = record.decode("utf-8", "replace")
            _, _, message = text.partition(";")
            message = message.split("\n", 1)[0]
            if _OOM_LINE.search(message) and len(lines) < MAX_KERNEL_LINES:
                lines.append(message[:300])
        return lines

    def _read_dmesg(self) -> list[str]:
        try:
            result = subprocess.run(
                ["dmesg"], capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            self.unavailable = Unavailable(
                "kernel log not readable (/dev/kmsg, dmesg)", "run as root or set dmesg_restrict=0"
            )
            return []
        if result.returncode != 0:
            self.unavailable = Unavailable(
                "kernel log not readable (/dev/kmsg, dmesg)", "run as root or set dmesg_restrict=0"
            )
            return []
        lines: list[str] = []
        for line in result.stdout.splitlines():
            match = re.match(r"\[\s*(\d+\.\d+)\]\s*(.*)", line)
            if not match or float(match.group(1)) < self._start_s:
                continue
            if _OOM_LINE.search(match.group(2)) and len(lines) < MAX_KERNEL_LINES:
                lines.append(match.group(2)[:300])
        return lines
