"""The server probe against real processes: py-spy, psutil, cgroups v1, kernel OOM kills.

The model server is tests/integration/serverprobe_app.py (pre-forking, restarts dead workers).
These run as root (CI does): py-spy attaches with CAP_SYS_PTRACE, cgroups are created under
/sys/fs/cgroup and removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from serverprobe_helpers import App, drive, jpeg, move_to_cgroup, start_app, v1_cgroup

from pathprobe.config import ProbeOptions
from pathprobe.probes import pyspy, sample_budget
from pathprobe.probes.base import Probe, Window
from pathprobe.probes.server import ServerProbe

pytestmark = [pytest.mark.integration, pytest.mark.root]

IMAGE = jpeg(512, seed=3)


def _window(path: str = "direct", step: int = 0) -> Window:
    return Window(path, "http://127.0.0.1/", step, None, time.monotonic_ns())


async def _observe(probe: Probe, load: Any, settle_s: float = 0.0) -> dict[str, Any]:
    """One window around ``load`` (an awaitable); returns the summary."""
    window = _window()
    await probe.start_window(window)
    try:
        await load
        await asyncio.sleep(settle_s)
    finally:
        summary = await probe.stop_window(
            Window(
                window.path, window.url, window.step, None, window.start_ns, time.monotonic_ns()
            )  # fmt: skip
        )
    return summary


async def _profile_under_load(app: App, requests: int) -> tuple[dict[str, Any], dict[str, Any]]:
    # 50 Hz rather than the (overhead-bound) default: enough samples on a busy shared machine.
    probe = ServerProbe(ProbeOptions(server_pids=(app.pid,)), rate_hz=50)
    await probe.open()
    try:
        load = drive(app.url + "/predict", IMAGE, requests, concurrency=2, time_limit_s=40)
        summary = await _observe(probe, load)
    finally:
        section = await probe.close()
    return summary, section


def test_preprocessing_share_high_under_heavy_preprocessing_and_low_without() -> None:
    with start_app("heavy", workers=2) as app:
        heavy, section = asyncio.run(_profile_under_load(app, requests=80))
        workers = set(app.workers())
    with start_app("light", workers=2) as app:
        light, _ = asyncio.run(_profile_under_load(app, requests=200))

    assert section["available"] is True
    assert section["profiler"]["available"] is True
    assert section["profiler"]["rate_hz"] == 50
    assert heavy["profile"]["available"] is True
    assert heavy["samples"] > 50
    print("stage shares: heavy", heavy["stage_share"], "light", light["stage_share"])
    assert heavy["stage_share"]["preprocessing"] > 0.5, heavy["stage_share"]
    assert light["samples"] > 20
    assert light["stage_share"]["preprocessing"] < 0.2, light["stage_share"]
    assert light["stage_share"]["inference"] > 0.5, light["stage_share"]
    # Samples came from the workers (children of the given PID), not only the master.
    assert workers & set(heavy["pids_profiled"])
    # The flame graph data names the real functions.
    assert any("preprocess_image (" in stack for stack in heavy["folded"])
    assert all(n > 0 for n in heavy["folded"].values())
    # psutil side: both workers seen, busy, memory measured, timeline aligned.
    seen = {w["pid"] for w in heavy["workers"]}
    assert workers <= seen
    busy = [w for w in heavy["workers"] if w["pid"] in workers]
    assert all(w["rss_bytes_max"] > 10_000_000 for w in busy)
    assert all(w["uss_bytes_max"] and w["uss_bytes_max"] > 0 for w in busy)
    assert max(w["cpu_percent_max"] or 0 for w in busy) > 20
    assert heavy["timeline"]
    assert len(heavy["timeline"]) <= 200
    # Both workers share the server's one core, so neither need pass 50 %: only presence here.
    assert 0 <= heavy["busy_workers_mean"] <= 2
    assert heavy["cpu_seconds_total"] > 0
    assert heavy["profiler_cpu_seconds"] is not None
    assert heavy["worker_deaths"] == []
    json.dumps(heavy)  # the summary is JSON as it is


def test_the_sample_budget_goes_to_the_workers_that_work() -> None:
    """Two servers given, one loaded: the loaded server's workers are promoted to the busy rate,
    every other process (both masters, the idle server's workers) stays a scout."""

    async def scenario(loaded: App, idle: App) -> dict[str, Any]:
        probe = ServerProbe(ProbeOptions(server_pids=(loaded.pid, idle.pid)))  # no rate: budget
        await probe.open()
        try:
            load = drive(loaded.url + "/predict", IMAGE, 10_000, concurrency=2, time_limit_s=4)
            return await _observe(probe, load)
        finally:
            await probe.close()

    with start_app("light", workers=2) as loaded, start_app("light", workers=2) as idle:
        summary = asyncio.run(scenario(loaded, idle))
        loaded_workers = set(loaded.workers())
        everyone = {loaded.pid, idle.pid, *loaded_workers, *idle.workers()}

    busy = set(summary["busy_pids"])
    print("busy", busy, "rates", summary["rates_hz"], "samples", summary["samples"])
    assert busy, summary
    assert busy <= loaded_workers  # neither master, nor the idle server
    rates = {int(pid): rate for pid, rate in summary["rates_hz"].items()}
    assert set(rates) == everyone
    busy_rate = sample_budget.plan(len(everyone), len(busy))
    assert summary["rate_hz"] == busy_rate
    assert all(rates[pid] == busy_rate for pid in busy)
    assert all(rates[pid] == sample_budget.SCOUT_RATE_HZ for pid in everyone - busy)
    # Two busy workers of six processes run at (100 - 4 × 2) / 2 = 46 Hz instead of an even 16.
    assert busy_rate > sample_budget.rate_for(len(everyone))
    assert summary["samples_recorded"] > 50
    assert summary["stage_share"]["inference"] > 0.5, summary["stage_share"]


def test_sigkilled_worker_is_a_death_and_its_replacement_a_birth() -> None:
    async def scenario(app: App) -> tuple[dict[str, Any], int]:
        probe = ServerProbe(ProbeOptions(server_pids=(app.pid,)), sample_hz=10)
        await probe.open()
        victim = app.workers()[0]

        async def load() -> None:
            background = asyncio.ensure_future(
                drive(app.url + "/predict", IMAGE, 60, concurrency=1, time_limit_s=4)
            )
            await asyncio.sleep(1.0)
            os.kill(victim, signal.SIGKILL)
            await background
            await asyncio.sleep(1.5)  # the master restarts the worker; the sampler sees it

        try:
            summary = await _observe(probe, load())
        finally:
            await probe.close()
        return summary, victim

    with start_app("light", workers=2) as app:
        summary, victim = asyncio.run(scenario(app))
        replacements = set(app.workers())

    deaths = {d["pid"]: d for d in summary["worker_deaths"]}
    assert victim in deaths
    assert deaths[victim]["t_ms"] > 500
    assert deaths[victim]["oom_killed"] is False
    births = {b["pid"] for b in summary["worker_births"]}
    assert births & replacements, (births, replacements)
    # The replacement was profiled too (py-spy started on it when the sampler saw it born).
    assert births & replacements & set(summary["pids_recorded"])
    assert any(w["pid"] == victim and w["died"] for w in summary["workers"])


def test_oom_kill_in_a_memory_cgroup_is_seen_with_the_cgroup_event() -> None:
    limit = 192 * 1024 * 1024

    async def scenario(app: App, cgroup: Path) -> dict[str, Any]:
        probe = ServerProbe(ProbeOptions(server_pids=(app.pid,), profile=False), sample_hz=10)
        await probe.open()

        async def blow_up() -> None:
            # The worker that takes this request allocates past the limit and is OOM-killed.
            await drive(app.url + "/alloc?mb=400", b"", 1, concurrency=1, time_limit_s=20)
            await asyncio.sleep(2.0)

        try:
            return await _observe(probe, blow_up())
        finally:
            await probe.close()

    with v1_cgroup("memory", {"memory.limit_in_bytes": str(limit)}) as cgroup:
        with start_app("light", workers=2) as app:
            before = app.workers()
            # Point the OOM killer at the workers, not the master (a real gunicorn master is
            # small): the master must live to restart the killed worker. Raising a score needs no
            # privilege (lowering the master's would need CAP_SYS_RESOURCE).
            for pid in before:
                Path(f"/proc/{pid}/oom_score_adj").write_text("1000")
            move_to_cgroup(cgroup, [app.pid, *before])
            summary = asyncio.run(scenario(app, cgroup))
            after = app.workers()

    group = summary["cgroup"]
    assert group["available"] is True
    assert group["version"] == 1
    assert group["path"] == "/" + cgroup.name
    assert group["memory_limit_bytes"] == limit
    assert group["oom_kill_events"] >= 1
    assert group["oom_events"] >= 1  # counted by the eventfd on memory.oom_control
    assert group["failcnt_delta"] > 0
    assert group["memory_usage_max_bytes"] > limit // 2
    dead = {d["pid"] for d in summary["worker_deaths"]}
    assert dead & set(before)
    assert any(d["oom_killed"] for d in summary["worker_deaths"])
    assert any(
        "Killed process" in line or "oom-kill" in line for line in summary["kernel_oom_lines"]
    )
    # The master restarted the killed worker; the replacement was followed.
    assert {b["pid"] for b in summary["worker_births"]} & set(after)


def test_cpu_throttling_counters_of_a_cpu_cgroup_with_a_quota() -> None:
    settings = {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "20000"}

    async def scenario(pid: int) -> tuple[dict[str, Any], dict[str, Any]]:
        probe = ServerProbe(ProbeOptions(server_pids=(pid,), profile=False))
        await probe.open()
        try:
            summary = await _observe(probe, asyncio.sleep(2.5))
        finally:
            section = await probe.close()
        return summary, section

    with v1_cgroup("cpu", settings) as cgroup:
        hog = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: pass"])
        try:
            move_to_cgroup(cgroup, [hog.pid])
            time.sleep(0.3)
            summary, section = asyncio.run(scenario(hog.pid))
        finally:
            hog.kill()
            hog.wait(timeout=10)

    group = summary["cgroup"]
    assert group["cpu_limit_cores"] == pytest.approx(0.2)
    assert group["cpu_nr_throttled_delta"] >= 10
    assert group["cpu_throttled_ms_delta"] > 100
    assert summary["cpu_cores_available"] == pytest.approx(0.2)
    (worker,) = summary["workers"]
    assert worker["cpu_percent_mean"] < 35  # the quota holds it near 20 % of a core
    # Profiling was turned off: that part says so, the rest still observed.
    assert summary["samples"] == 0
    assert summary["profile"]["available"] is False
    assert "--no-profile" in summary["profile"]["reason"]
    assert section["profiler"]["available"] is False


def test_no_server_pid_means_unavailable_with_how_to_enable() -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        probe = ServerProbe(ProbeOptions())
        await probe.open()
        summary = await _observe(probe, asyncio.sleep(0))
        return summary, await probe.close()

    summary, section = asyncio.run(scenario())
    assert section["available"] is False
    assert section["how_to_enable"] == "pass --server-pid PID or --agent URL"
    assert summary["available"] is False
    assert summary["path"] == "direct"


def test_py_spy_missing_leaves_the_process_sampler_working(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pyspy, "find_py_spy", lambda: None)

    async def scenario(app: App) -> tuple[dict[str, Any], dict[str, Any]]:
        probe = ServerProbe(ProbeOptions(server_pids=(app.pid,)), cgroup="/nonexistent-cgroup")
        await probe.open()
        try:
            load = drive(app.url + "/predict", IMAGE, 40, concurrency=2, time_limit_s=10)
            summary = await _observe(probe, load)
        finally:
            section = await probe.close()
        return summary, section

    with start_app("light", workers=2) as app:
        summary, section = asyncio.run(scenario(app))
        workers = set(app.workers())

    assert section["available"] is True
    assert section["profiler"]["available"] is False
    assert section["profiler"]["reason"] == "py-spy not found"
    assert "pip install py-spy" in section["profiler"]["how_to_enable"]
    assert summary["samples"] == 0
    assert workers <= {w["pid"] for w in summary["workers"]}
    assert summary["timeline"]
    # The named cgroup does not exist: that part degrades on its own too.
    assert summary["cgroup"]["available"] is False
    assert "/nonexistent-cgroup" in summary["cgroup"]["reason"]


_AS_NOBODY = r"""
import asyncio, asyncio.subprocess, concurrent.futures.thread, json, os, sys, time
# Import everything first: the interpreter's own files may not be readable by nobody.
from pathprobe.config import ProbeOptions
from pathprobe.probes.base import Window
from pathprobe.probes.server import ServerProbe
os.setgroups([]); os.setgid(65534); os.setuid(65534)

async def main():
    probe = ServerProbe(ProbeOptions(server_pids=(int(sys.argv[1]),)))
    await probe.open()
    w = Window("direct", "", 0, None, time.monotonic_ns())
    await probe.start_window(w)
    await asyncio.sleep(1.0)
    summary = await probe.stop_window(w)
    section = await probe.close()
    print(json.dumps({"summary": summary, "section": section}))

asyncio.run(main())
"""


def test_ptrace_refused_for_an_unprivileged_user_degrades_with_a_reason(tmp_path: Path) -> None:
    with start_app("light", workers=1) as app:
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]), HOME=str(tmp_path))
        tmp_path.chmod(0o777)
        result = subprocess.run(
            [sys.executable, "-c", _AS_NOBODY, str(app.pid)],
            capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=False,
        )  # fmt: skip
        workers = set(app.workers())
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    profiler = out["section"]["profiler"]
    assert profiler["available"] is False
    assert "ptrace refused" in profiler["reason"]
    assert "CAP_SYS_PTRACE" in profiler["how_to_enable"]
    # Without ptrace the process sampler still sees the workers (their /proc/PID/stat is public).
    assert out["section"]["available"] is True
    assert workers <= {w["pid"] for w in out["summary"]["workers"]}


def test_py_spy_is_reaped_when_a_window_is_abandoned() -> None:
    async def scenario(app: App) -> list[int]:
        probe = ServerProbe(ProbeOptions(server_pids=(app.pid,)))
        await probe.open()
        await probe.start_window(_window())
        await asyncio.sleep(0.5)
        me = psutil.Process()
        spies = [c.pid for c in me.children() if "py-spy" in c.name()]
        await probe.close()  # never stopped: close must kill and reap it
        return spies

    with start_app("light", workers=1) as app:
        spies = asyncio.run(scenario(app))
    assert spies
    for pid in spies:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() != "zombie"
        assert not psutil.pid_exists(pid)


def test_a_cancelled_stop_leaves_no_py_spy_behind() -> None:
    """Ctrl-C while a window is being stopped: the probe's py-spy processes still end."""

    async def scenario(app: App) -> list[int]:
        probe = ServerProbe(ProbeOptions(server_pids=(app.pid,)))
        await probe.open()
        window = _window()
        await probe.start_window(window)
        await asyncio.sleep(0.5)
        spies = [c.pid for c in psutil.Process().children() if "py-spy" in c.name()]
        stopping = asyncio.ensure_future(probe.stop_window(window))
        await asyncio.sleep(0)  # it has begun stopping
        stopping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopping
        await probe.close()
        return spies

    with start_app("light", workers=2) as app:
        spies = asyncio.run(scenario(app))
        # Checked while the server lives (py-spy also ends when its target exits).
        assert spies
        deadline = time.monotonic() + 10
        while any(psutil.pid_exists(pid) for pid in spies) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(psutil.pid_exists(pid) for pid in spies)


def test_py_spy_starts_at_a_lower_priority_and_a_discarded_recording_ends_unread(
    tmp_path: Path,
) -> None:
    """The spawner's py-spy runs at PY_SPY_NICE from the start; a discarded recording is killed
    and reaped, and its stop gives an empty profile and no error, while a stopped one is read
    once, however many wait for it."""
    exe = pyspy.find_py_spy()
    assert exe is not None

    async def scenario(pid: int) -> dict[str, Any]:
        kept = pyspy.Recording(exe, pid, tmp_path / "kept.txt", 20, 60, subprocesses=False)
        thrown = pyspy.Recording(exe, pid, tmp_path / "thrown.txt", 2, 60, subprocesses=False)
        await kept.start()
        await thrown.start()
        spies = [c for c in psutil.Process().children() if "py-spy" in c.name()]
        nice = {spy.pid: spy.nice() for spy in spies}
        await asyncio.sleep(1.5)
        await thrown.discard()
        first, second = await asyncio.gather(kept.stop(), kept.stop())
        return {"nice": nice, "kept": (first, second), "thrown": await thrown.stop(),
                "rec": (kept, thrown)}  # fmt: skip

    busy = subprocess.Popen([sys.executable, "-c", "while True: sum(range(1000))"])
    try:
        out = asyncio.run(scenario(busy.pid))
    finally:
        busy.kill()
        busy.wait()
    kept, thrown = out["rec"]
    assert len(out["nice"]) == 2
    assert set(out["nice"].values()) == {max(pyspy.PY_SPY_NICE, os.nice(0))}
    first, second = out["kept"]
    assert first is second
    assert first.samples > 0
    assert kept.error is None
    assert thrown.discarded
    assert thrown.error is None
    assert out["thrown"].samples == 0
    assert not thrown.running
