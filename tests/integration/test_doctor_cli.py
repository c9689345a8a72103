"""``pathprobe doctor`` as a real subprocess: one line per probe, exit 0/1/2, never a traceback;
and ``diagnose`` printing the same line when it starts with a probe that cannot observe."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProc, free_env

pytestmark = pytest.mark.integration

PATHPROBE = str(Path(sys.executable).parent / "pathprobe")
LINES = ("capture", "profiler", "cgroup", "testbed", "net_delay")


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PATHPROBE, "doctor", *args], capture_output=True, text=True, timeout=60, env=free_env()
    )


@pytest.fixture
def python_sleeper() -> Iterator[int]:
    """The PID of an idle Python process (something py-spy can attach to)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_one_line_per_probe() -> None:
    run = doctor()
    assert run.returncode in (0, 1), run.stderr
    lines = run.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(LINES)
    for line in lines:
        assert line.split()[1] in ("ok", "NO", "no"), line
        if line.split()[1] != "ok":
            assert "— to enable: " in line
    assert "Traceback" not in run.stderr


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: capture and attach as root")
def test_as_root_a_server_and_its_path_check_out(
    python_sleeper: int, spawn_server: Callable[..., ServerProc]
) -> None:
    server = spawn_server("ok")
    run = doctor("--path", f"direct={server.url}", "--server-pid", str(python_sleeper))
    lines = {line.split()[0]: line for line in run.stdout.splitlines()}
    assert lines["capture"].split()[1] == "ok", lines["capture"]
    assert "can capture on lo" in lines["capture"]
    assert f"attached to PID {python_sleeper}" in lines["profiler"], lines["profiler"]
    probes_ok = all(lines[name].split()[1] == "ok" for name in ("capture", "profiler", "cgroup"))
    assert run.returncode == (0 if probes_ok else 1)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--server-pid", "999999999"], "--server-pid 999999999: no such process"),
        (["--path", "ftp://example"], "URL must start with http:// or https://"),
        (["--path", "http://[::1"], "malformed URL"),
        (["--bogus"], "No such option"),
    ],
)
def test_bad_usage_is_one_line_exit_2(args: list[str], says: str) -> None:
    run = doctor(*args)
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr.count("\n") == 1, run.stderr
    assert says in run.stderr


def test_a_pid_that_is_not_python_is_bad_usage() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        run = doctor("--server-pid", str(proc.pid))
    finally:
        proc.kill()
        proc.wait()
    assert run.returncode == 2
    assert "is not a Python process" in run.stderr


def test_diagnose_prints_the_doctor_line_for_a_probe_that_cannot_run(
    spawn_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    server = spawn_server("ok")
    run = subprocess.run(
        [PATHPROBE, "diagnose", "--path", f"direct={server.url}", "--rate", "5",
         "--duration", "1", "--warmup", "0", "--capture-iface", "nosuch0",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, env=free_env(),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "capture    NO  interface nosuch0 does not exist — to enable: " in run.stderr
