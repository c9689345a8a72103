"""cgroup readers on fake v1 and v2 directories (the files' formats as the kernel writes them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pathprobe.probes import cgroups
from pathprobe.probes.cgroups import CgroupPaths, CgroupWatch, KernelOomLog


def _write(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)


@pytest.fixture
def v1(tmp_path: Path) -> CgroupPaths:
    mem = tmp_path / "memory" / "srv"
    cpu = tmp_path / "cpu" / "srv"
    _write(mem, {
        "memory.limit_in_bytes": "268435456\n",
        "memory.usage_in_bytes": "1000\n",
        "memory.failcnt": "5\n",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        "cgroup.procs": "10\n11\n",
    })  # fmt: skip
    _write(cpu, {
        "cpu.stat": "nr_periods 100\nnr_throttled 4\nthrottled_time 2000000\n",
        "cpu.cfs_quota_us": "50000\n",
        "cpu.cfs_period_us": "100000\n",
    })  # fmt: skip
    return CgroupPaths(1, mem, cpu, "/srv")


@pytest.fixture
def v2(tmp_path: Path) -> CgroupPaths:
    d = tmp_path / "unified" / "srv"
    _write(d, {
        "memory.max": "max\n",
        "memory.current": "2048\n",
        "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        "cpu.stat": "usage_usec 10\nnr_periods 5\nnr_throttled 2\nthrottled_usec 1500\n",
        "cpu.max": "200000 100000\n",
        "cgroup.procs": "20\n",
    })  # fmt: skip
    return CgroupPaths(2, d, d, "/srv")


def test_v1_window_deltas(v1: CgroupPaths) -> None:
    assert v1.memory is not None
    assert v1.cpu is not None
    watch = CgroupWatch(v1)
    watch.begin()  # the eventfd registration fails on a plain directory: oom_events None
    (v1.memory / "memory.usage_in_bytes").write_text("9000\n")
    watch.memory_usage_bytes()
    (v1.memory / "memory.usage_in_bytes").write_text("3000\n")
    (v1.memory / "memory.failcnt").write_text("12\n")
    (v1.memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    (v1.cpu / "cpu.stat").write_text("nr_periods 300\nnr_throttled 54\nthrottled_time 502000000\n")
    summary = watch.end()
    assert summary["version"] == 1
    assert summary["memory_limit_bytes"] == 268435456
    assert summary["memory_usage_max_bytes"] == 9000
    assert summary["failcnt_delta"] == 7
    assert summary["oom_kill_events"] == 2
    assert summary["oom_events"] is None
    assert summary["cpu_nr_throttled_delta"] == 50
    assert summary["cpu_throttled_ms_delta"] == pytest.approx(500.0)
    assert summary["cpu_limit_cores"] == pytest.approx(0.5)
    assert cgroups.cgroup_pids(v1) == {10, 11}


def test_v1_unlimited_and_missing_quota(v1: CgroupPaths) -> None:
    assert v1.memory is not None
    assert v1.cpu is not None
    (v1.memory / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (v1.cpu / "cpu.cfs_quota_us").write_text("-1\n")
    watch = CgroupWatch(v1)
    assert watch.memory_limit_bytes() is None
    assert watch.cpu_limit_cores() is None


def test_v2_window_deltas(v2: CgroupPaths) -> None:
    assert v2.memory is not None
    watch = CgroupWatch(v2)
    watch.begin()
    (v2.memory / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\n")
    (v2.memory / "cpu.stat").write_text("usage_usec 10\nnr_throttled 7\nthrottled_usec 9500\n")
    summary = watch.end()
    assert summary["version"] == 2
    assert summary["memory_limit_bytes"] is None  # "max"
    assert summary["memory_usage_max_bytes"] == 2048
    assert (summary["oom_events"], summary["oom_kill_events"], summary["failcnt_delta"]) == (
        1,
        1,
        6,
    )
    assert summary["cpu_nr_throttled_delta"] == 5
    assert summary["cpu_throttled_ms_delta"] == pytest.approx(8.0)
    assert summary["cpu_limit_cores"] == pytest.approx(2.0)


def test_v2_from_path(v2: CgroupPaths) -> None:
    assert v2.memory is not None
    found = cgroups.cgroup_from_path(v2.memory)
    assert found is not None
    assert found.version == 2
    assert cgroups.cgroup_pids(found) == {20}


def test_unreadable_or_missing(tmp_path: Path) -> None:
    assert cgroups.cgroup_from_path(tmp_path / "nope") is None
    missing = cgroups.check_cgroup(None)
    assert missing is not None
    assert "not found" in missing.reason
    gone = cgroups.check_cgroup(CgroupPaths(1, tmp_path / "gone", None, "/gone"))
    assert gone is not None
    assert "not readable" in gone.reason
    # Counters of a vanished cgroup read as None, never raise.
    watch = CgroupWatch(CgroupPaths(2, tmp_path / "gone", tmp_path / "gone", "/gone"))
    watch.begin()
    summary = watch.end()
    assert summary["oom_kill_events"] is None
    assert summary["cpu_nr_throttled_delta"] is None


def test_cgroup_of_this_process() -> None:
    # Whatever the host's layout, reading our own cgroup must not raise.
    paths = cgroups.cgroup_of(1 if Path("/proc/1/cgroup").exists() else 0)
    assert paths is None or paths.version in (1, 2)


def test_kmsg_filter(tmp_path: Path) -> None:
    import os

    log = tmp_path / "kmsg"
    log.write_text(
        "6,1,100,-;Memory cgroup out of memory: Killed process 4242 (python) total-vm:1kB\n"
        "6,2,101,-;eth0: link up\n"
        "3,3,102,-;oom-kill:constraint=CONSTRAINT_MEMCG,task=python,pid=4242,uid=0\n"
    )
    fd = os.open(log, os.O_RDONLY)
    try:
        # A regular file returns everything in one read; /dev/kmsg returns one record per read.
        lines = KernelOomLog._read_kmsg(fd)
    finally:
        os.close(fd)
    assert lines
    assert lines[0].startswith("Memory cgroup out of memory: Killed process 4242")
