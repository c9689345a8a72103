"""Ctrl-C and SIGTERM during a real ``pathprobe diagnose``: the load stops at once, probe
subprocesses (tcpdump, py-spy) are reaped, a partial report marked ``"interrupted": true`` is
written atomically, exit 130 (issue 8, point 3)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from pathprobe.session import BASELINE_MAX_REQUESTS
from tests.conftest import ServerProc, free_env

pytestmark = pytest.mark.integration

PATHPROBE = str(Path(sys.executable).parent / "pathprobe")
# Generous: the report is still rendered after the signal (charts), on a busy 2-core machine.
PROMPT_EXIT_S = 30.0


def start_diagnose(server: ServerProc, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    argv = [
        PATHPROBE, "diagnose", "--path", f"direct={server.url}", "--rate", "50",
        "--duration", "60", "--warmup", "0", "--out", str(out), *extra,
    ]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=free_env())


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def name_of(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.NoSuchProcess:
        return "(gone)"


def alive(procs: list[psutil.Process], grace_s: float = 5.0) -> list[str]:
    """Which of ``procs`` still run after ``grace_s`` (multiprocessing's resource tracker leaves a
    moment after its parent; zombies of a dead parent are init's to reap, not ours)."""
    deadline = time.monotonic() + grace_s
    while _running(procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _running(procs)


def _running(procs: list[psutil.Process]) -> list[str]:
    left = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{p.pid} {p.name()}")
        except psutil.NoSuchProcess:
            continue
    return left


def stop_all(proc: subprocess.Popen[bytes], children: list[psutil.Process]) -> None:
    """Cleanup on failure: the diagnose process and anything it started, by PID."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            continue


@pytest.mark.parametrize(
    ("sig", "kind", "workers"),
    [
        (signal.SIGINT, "ok", 1),
        (signal.SIGTERM, "ok", 1),
        (signal.SIGINT, "silent", 1),
        (signal.SIGTERM, "ok", 2),
    ],
    ids=["sigint", "sigterm", "sigint-requests-in-flight", "sigterm-two-workers"],
)
def test_signal_mid_run_writes_partial_report_and_exits_130(
    tmp_path: Path,
    spawn_server: Callable[..., ServerProc],
    sig: signal.Signals,
    kind: str,
    workers: int,
) -> None:
    server = spawn_server(kind)
    out = tmp_path / "out"
    # Probes on: tcpdump for the capture, py-spy on the (Python) server.
    # A silent server holds the baseline's first request for the whole timeout before the load
    # starts: 5 s keeps that short, and still far longer than the 1 s the load runs before the
    # signal, so the requests in flight then are still waiting.
    timeout = "5" if kind == "silent" else "30"
    proc = start_diagnose(
        server, out, "--server-pid", str(server.proc.pid), "--timeout", timeout,
        "--workers", str(workers),
    )  # fmt: skip
    children: list[psutil.Process] = []
    try:
        # Mid-run: the load has reached the server (beyond the baseline's requests, sent one at
        # a time before it).
        wait_until(
            lambda: server.stats()["requests"] >= BASELINE_MAX_REQUESTS + 3, 60, "the load to start"
        )
        time.sleep(1.0)
        children = descendants(proc.pid)
        child_names = [name_of(c) for c in children]
        names = sorted(set(child_names))
        signalled = time.monotonic()
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=PROMPT_EXIT_S + 30)
        exit_s = time.monotonic() - signalled
        assert proc.returncode == 130, stderr.decode()
        assert exit_s < PROMPT_EXIT_S, f"took {exit_s:.1f} s to stop"
        # The probes had subprocesses, and none outlived the run.
        assert "tcpdump" in names, names
        assert "py-spy" in names, names
        if workers > 1:  # load worker processes too
            workers_seen = [n for n in child_names if n.startswith(("python", "pathp"))]
            assert len(workers_seen) >= 2, child_names
        assert alive(children) == []
        report = json.loads((out / "report.json").read_text())
        assert report["interrupted"] is True
        assert (out / "report.html").exists()
        assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
        # Partial, not empty-handed: what was sent before the signal is in the report.
        steps = report["paths"]["direct"]["steps"]
        assert len(steps) == 1
        # Requests still in flight at the signal are cancelled: neither successes nor errors.
        sent = steps[0]["requests"] + steps[0]["cancelled"]
        assert sent > 0
        assert sent < 50 * 60
        assert b"Traceback" not in stderr
    finally:
        stop_all(proc, children)


def test_second_ctrl_c_still_leaves_cleanly(
    tmp_path: Path, spawn_server: Callable[..., ServerProc]
) -> None:
    """Two Ctrl-C in a row (an impatient user): exit 130, no traceback, no probe left behind."""
    server = spawn_server("silent")
    out = tmp_path / "out"
    # --timeout 5: the silent server holds the baseline's request that long (see above).
    proc = start_diagnose(server, out, "--server-pid", str(server.proc.pid), "--timeout", "5")
    children: list[psutil.Process] = []
    try:
        wait_until(lambda: server.stats()["connections"] >= 3, 60, "the load to start")
        children = descendants(proc.pid)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _stdout, stderr = proc.communicate(timeout=PROMPT_EXIT_S + 30)
        assert proc.returncode == 130, stderr.decode()
        assert b"Traceback" not in stderr
        lines = [line for line in stderr.decode().splitlines() if line.strip()]
        assert lines, "a word on stderr about the interruption"
        assert alive(children) == []
    finally:
        stop_all(proc, children)


# --- atomic writes ------------------------------------------------------------------------------


def test_report_write_is_atomic_when_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C at the worst moment (just before the rename) leaves the old report whole and no
    temporary file behind; a write that fails half-way likewise."""
    import os

    from pathprobe.reports import payload

    target = tmp_path / "report.json"
    payload.write_json_atomic(target, {"schema": "old"})

    def interrupted_replace(*_args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(payload.os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        payload.write_json_atomic(target, {"schema": "new", "big": "x" * 100_000})
    monkeypatch.setattr(payload.os, "replace", os.replace)
    assert json.loads(target.read_text()) == {"schema": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    # Half-way: the text cannot be encoded after part of it was written.
    with pytest.raises(UnicodeEncodeError):
        payload.write_text_atomic(tmp_path / "report.html", "<html>" * 10_000 + "\ud800")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
