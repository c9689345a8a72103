"""A memory cgroup for the model servers (fault ``oom``): cgroup v1 or v2, created and removed here.

The cgroup is named ``pathprobe-tb-<id>``; a process joins it at start (the launcher writes its own
PID into ``cgroup.procs`` before exec'ing the server, so every forked worker is inside).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_PREFIX = "pathprobe-tb-"
V1_ROOT = Path("/sys/fs/cgroup/memory")
V2_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class MemoryCgroup:
    path: Path
    version: int  # 1 or 2

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def usage_bytes(self) -> int:
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        return int((self.path / name).read_text().split()[0])

    def anonymous_bytes(self) -> int:
        """Usage less the page cache of files, which the kernel reclaims before it OOM-kills.

        A cold page cache (the servers' first reads of their libraries) is charged here too and
        can be hundreds of MB: a limit of ``usage + headroom`` would then leave far more headroom
        than meant, and the OOM fault would not happen.
        """
        stat: dict[str, int] = {}
        for line in (self.path / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            stat[key] = int(value) if value.strip().isdigit() else 0
        keys = (
            ("total_active_file", "total_inactive_file")
            if self.version == 1
            else ("active_file", "inactive_file")
        )
        return max(0, self.usage_bytes() - sum(stat.get(k, 0) for k in keys))

    def set_limit_bytes(self, limit: int) -> None:
        if self.version == 1:
            # No swap: the limit is a hard wall and the kernel's OOM killer acts at it.
            _try_write(self.path / "memory.swappiness", "0")
            (self.path / "memory.limit_in_bytes").write_text(str(limit))
        else:
            _try_write(self.path / "memory.swap.max", "0")
            (self.path / "memory.max").write_text(str(limit))

    def oom_kills(self) -> int:
        """OOM kills inside this cgroup so far (v1 ``memory.oom_control``, v2 ``memory.events``)."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        for line in (self.path / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def failcnt(self) -> int | None:
        if self.version != 1:
            return None
        return int((self.path / "memory.failcnt").read_text())

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in self.procs_file.read_text().split()]
        except OSError:
            return []


def detect_version() -> int | None:
    """1 if the v1 memory controller is mounted, 2 for unified with memory, else None."""
    if (V1_ROOT / "memory.limit_in_bytes").exists() or (V1_ROOT / "cgroup.procs").exists():
        return 1
    controllers = V2_ROOT / "cgroup.controllers"
    if controllers.exists() and "memory" in controllers.read_text().split():
        return 2
    return None


def create(tag: str) -> MemoryCgroup:
    version = detect_version()
    if version is None:
        raise RuntimeError("no memory cgroup controller is mounted (needed for the oom fault)")
    root = V1_ROOT if version == 1 else V2_ROOT
    if version == 2:
        # The memory controller must be enabled for children of the root (usually is).
        _try_write(V2_ROOT / "cgroup.subtree_control", "+memory")
    path = root / f"{CGROUP_PREFIX}{tag}"
    path.mkdir(exist_ok=False)
    return MemoryCgroup(path, version)


def remove(path: Path, timeout_s: float = 5.0) -> None:
    """Kill what is left inside (only our servers can be there) and remove the directory."""
    if not path.name.startswith(CGROUP_PREFIX) or not path.exists():
        return
    cg = MemoryCgroup(path, 1 if str(path).startswith(str(V1_ROOT)) else 2)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = cg.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            path.rmdir()
            return
        except OSError:
            time.sleep(0.1)
    path.rmdir()


def leftovers() -> list[Path]:
    """Every ``pathprobe-tb-*`` cgroup that exists now, under either hierarchy."""
    found: list[Path] = []
    for root in (V1_ROOT, V2_ROOT):
        if root.is_dir():
            found.extend(p for p in root.glob(f"{CGROUP_PREFIX}*") if p.is_dir())
    return found


def _try_write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError:
        pass
