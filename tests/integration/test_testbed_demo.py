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


def test_demo_writes_a_report_and_tears_down(tmp_path: Path) -> None:
    before = our_resources()
    out = tmp_path / "demo"
    argv = [PATHPROBE, "demo", "--stack", "aiohttp", "--duration", "1", "--out", str(out)]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report["paths"]) == {"direct", "proxy", "lb"}
    assert (out / "report.html").stat().st_size > 0
    assert f"report: {(out / 'report.html').resolve()}" in run.stdout
    testbed = json.loads((out / "testbed.json").read_text())
    assert testbed["stack"] == "aiohttp"
    assert_gone(testbed["server_pids"])
    assert our_resources() <= before


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
