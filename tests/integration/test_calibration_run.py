"""The latency floor is measured in every diagnosis (issue 12): before the first step, against a
null server pathprobe starts and stops itself; the report's floor section then shows numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.conftest import ServerProc, free_env

pytestmark = pytest.mark.integration

PATHPROBE = str(Path(sys.executable).parent / "pathprobe")


def diagnose(url: str, out: Path, *extra: str) -> dict[str, object]:
    run = subprocess.run(
        [PATHPROBE, "diagnose", "--path", f"direct={url}", "--rate", "5", "--duration", "1",
         "--warmup", "0", "--no-capture", "--out", str(out), *extra],
        capture_output=True, text=True, timeout=120, env=free_env(),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    report: dict[str, object] = json.loads((out / "report.json").read_text())
    return report


def test_the_floor_is_measured_and_reported(
    spawn_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    server = spawn_server("ok")
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    report = diagnose(server.url, tmp_path / "out")
    calibration = report["probes"]["client"]["calibration"]  # type: ignore[index]
    assert calibration["available"] is True, calibration
    floor = calibration["floor_ms"]
    assert 0 < floor["p50"] <= floor["p99"] < 50, floor
    assert calibration["completed"] >= 100
    assert calibration["wall_s"] < 2.0  # "about a second"
    html = (tmp_path / "out" / "report.html").read_text()
    assert "no calibration run in this report" not in html
    assert "measured against a local no-op server before the run" in html
    # The null server is gone with the run.
    children_after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert children_after <= children_before


def test_no_calibrate_skips_it(spawn_server: Callable[..., ServerProc], tmp_path: Path) -> None:
    server = spawn_server("ok")
    report = diagnose(server.url, tmp_path / "out", "--no-calibrate")
    assert "calibration" not in report["probes"]["client"]  # type: ignore[index, operator]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "no calibration run in this report" in html
