"""``pathprobe demo`` end to end: a report on all three paths, and nothing left behind — also when
the demo is interrupted half-way."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pathprobe.testbed import cgroup, netns

pytestmark = [pytest.mark.integration, pytest.mark.root]

PATHPROBE = str(Path(sys.executable).parent / "pathprobe")


def our_resources() -> set[str]:
    names = netns.leftovers()
    return set(names["netns"] + names["links"]) | {str(p) for p in cgroup.leftovers()}


def assert_gone(pids: list[int]) -> None:
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z", pid


def test_default_demo_diagnoses_its_fault_and_tears_down(tmp_path: Path) -> None:
    """A plain `pathprobe demo` injects heavy_preprocessing, and its verdict names that fault's
    stage — the story a newcomer is told (issue 12) — on a report of all three paths."""
    before = our_resources()
    out = tmp_path / "demo"
    run = subprocess.run(
        [PATHPROBE, "demo", "--out", str(out)], capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report["paths"]) == {"direct", "proxy", "lb"}
    assert report["verdict"]["bottleneck"] == "preprocessing", report["verdict"]["summary"]
    line = "injected: heavy_preprocessing (expect preprocessing) — found: preprocessing"
    assert line in run.stdout
    assert (out / "report.html").stat().st_size > 0
    assert f"report: {(out / 'report.html').resolve()}" in run.stdout
    testbed = json.loads((out / "testbed.json").read_text())
    assert testbed["stack"] == "fastapi"
    assert [f["name"] for f in testbed["faults"]] == ["heavy_preprocessing"]
    assert_gone(testbed["server_pids"])
    assert our_resources() <= before


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--fault", "nope"], "unknown fault 'nope'"),
        (["--fault", "none", "--fault", "oom"], "cannot be combined"),
        (["--out", "/proc/pathprobe-demo"], "--out /proc/pathprobe-demo cannot be created"),
    ],
)
def test_demo_bad_input_is_one_line_exit_2(argv: list[str], says: str) -> None:
    run = subprocess.run([PATHPROBE, "demo", *argv], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1, run.stderr
    assert says in run.stderr


def test_demo_not_root_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Not root: one line, exit 2, before anything starts. In-process with a faked uid: a real
    unprivileged user may not even reach the venv of a clone under /root."""
    import pathprobe.cli.demo as demo_cli
    from pathprobe.cli.main import main

    monkeypatch.setattr(demo_cli.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sys, "argv", ["pathprobe", "demo", "--out", str(tmp_path / "demo")])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "needs root" in err
    assert not (tmp_path / "demo").exists()


def test_interrupted_demo_tears_down(tmp_path: Path) -> None:
    before = our_resources()
    out = tmp_path / "demo"
    argv = [PATHPROBE, "demo", "--fault", "oom", "--duration", "5", "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out / "testbed.json").exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.1)
        time.sleep(2)  # the diagnosis is running now
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    testbed = json.loads((out / "testbed.json").read_text())
    assert_gone(testbed["server_pids"])
    assert our_resources() <= before
