"""``pathprobe report`` and ``pathprobe compare``: re-render from disk, bad input → exit 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pathprobe.cli.main import app

FIXTURES = Path(__file__).parent.parent / "fixtures"
MAIN = "from pathprobe.cli.main import main; main()"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, as a user runs it (errors are formatted by ``main``)."""
    return subprocess.run(
        [sys.executable, "-c", MAIN, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "run1"
    d.mkdir()
    shutil.copy(FIXTURES / "report_minimal.json", d / "report.json")
    return d


def test_report_rerenders_next_to_the_json(run_dir: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(run_dir / "report.json")])
    assert result.exit_code == 0, result.output
    html = (run_dir / "report.html").read_text()
    assert "Model inference on the server" in html
    # Atomic write: no temporary file left behind.
    assert sorted(os.listdir(run_dir)) == ["report.html", "report.json"]


def test_report_out_option(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere.html"
    result = CliRunner().invoke(app, ["report", str(run_dir / "report.json"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_compare_writes_the_before_after_page(run_dir: Path, tmp_path: Path) -> None:
    after = tmp_path / "after.json"
    report = json.loads((run_dir / "report.json").read_text())
    report["paths"]["direct"]["steps"][0]["latency_ms"]["p99"] = 90.0
    after.write_text(json.dumps(report))
    out = tmp_path / "cmp.html"
    result = run_cli("compare", str(run_dir / "report.json"), str(after), "--out", str(out))
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    assert "180 ms → 90.0 ms" in html


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", "not JSON"),
        ('{"schema": "other/v9"}', "not a pathprobe report"),
        ("[1, 2]", "not a pathprobe report"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content)
    result = run_cli("report", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "report.html").exists()


def test_compare_bad_input_and_unwritable_out(run_dir: Path, tmp_path: Path) -> None:
    good = str(run_dir / "report.json")
    missing = run_cli("compare", good, str(tmp_path / "nope.json"), "--out", str(tmp_path / "x"))
    assert missing.returncode == 2
    assert "no such file" in missing.stderr
    unwritable = run_cli("compare", good, good, "--out", str(tmp_path / "no" / "dir" / "x.html"))
    assert unwritable.returncode == 2
    assert len(unwritable.stderr.strip().splitlines()) == 1
