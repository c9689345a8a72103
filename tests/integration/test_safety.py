"""Safety of the load itself: it runs against services already in trouble (issue 8, point 7).

--dry-run sends nothing; ceilings need --allow-high-load; the load stops by itself when errors
explode and says so; every run is bounded in requests (exactly the plan) and in time.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pathprobe.config import build_config
from pathprobe.session import BASELINE_MAX_REQUESTS, run_diagnosis
from tests.conftest import ServerProc, free_env

pytestmark = pytest.mark.integration

PATHPROBE = str(Path(sys.executable).parent / "pathprobe")
ENGINES = ["aiohttp", "fast"]
Spawn = Callable[..., ServerProc]


def cli(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PATHPROBE, "diagnose", *args],
        capture_output=True, text=True, timeout=timeout_s, env=free_env(), check=False,
    )  # fmt: skip


def test_dry_run_prints_the_plan_and_sends_nothing(tmp_path: Path, spawn_server: Spawn) -> None:
    direct, lb = spawn_server("ok"), spawn_server("ok")
    secret_url = f"http://u:pw-5ecret@127.0.0.1:{lb.port}/?token=tok-5ecret"
    done = cli(
        "--path", f"direct={direct.url}", "--path", f"lb={secret_url}", "--rates", "10,20",
        "--duration", "3", "--warmup", "1", "--out", str(tmp_path / "o"), "--dry-run",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"direct={direct.url}" in out
    assert "5ecret" not in out + done.stderr
    assert (
        "step 1: 10 requests/s (uniform), 1 s warm-up + 3 s measured, 40 requests per path" in out
    )
    assert (
        "step 2: 20 requests/s (uniform), 1 s warm-up + 3 s measured, 80 requests per path" in out
    )
    # 2 steps x 2 paths x 4 s; (40 + 80) x 2 paths.
    assert re.search(r"total: 4 windows, about 16 s, requests: 240", out), out
    assert "dry run: nothing sent" in out
    time.sleep(0.2)
    assert direct.stats()["connections"] == 0
    assert lb.stats()["connections"] == 0
    assert not (tmp_path / "o" / "report.json").exists()


def test_ceilings_need_allow_high_load(tmp_path: Path, spawn_server: Spawn) -> None:
    server = spawn_server("ok")
    base = ["--path", f"direct={server.url}", "--out", str(tmp_path / "o")]
    for args in (["--rate", "50000"], ["--duration", "3600"], ["--concurrency", "5000"]):
        done = cli(*base, *args)
        assert done.returncode == 2, done.stderr
        assert "add --allow-high-load if you mean it" in done.stderr
        assert done.stderr.count("\n") == 1
    # With the flag the plan is accepted (shown, not sent: a test must not send 50 000/s).
    done = cli(*base, "--rate", "50000", "--duration", "1", "--allow-high-load", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "50000 requests/s" in done.stdout
    assert server.stats()["connections"] == 0


def diagnose(out: Path, url: str, engine: str, **extra: Any) -> tuple[dict[str, Any], float]:
    raw: dict[str, Any] = {
        "path": {"direct": url}, "out": str(out), "engine": engine, "no_capture": True,
        "no_profile": True, "warmup": 0, "timeout": 5,
    }  # fmt: skip
    raw.update(extra)
    started = time.monotonic()
    run_diagnosis(build_config(raw), ["diagnose"])
    elapsed = time.monotonic() - started
    return json.loads((out / "report.json").read_text()), elapsed


@pytest.mark.parametrize("engine", ENGINES)
def test_errors_exploding_stop_the_step_and_the_report_says_so(
    tmp_path: Path, spawn_server: Spawn, engine: str
) -> None:
    """Every answer is 503: with the default --abort-on-error-rate (0.9) the step stops early."""
    failing = spawn_server("fail")
    report, _ = diagnose(tmp_path, failing.url, engine, rate=100, duration=10)
    step = report["paths"]["direct"]["steps"][0]
    assert step["aborted"] is not None
    assert "stopped early" in step["aborted"]
    assert "--abort-on-error-rate 0.9" in step["aborted"]
    assert any("stopped early" in note for note in report["notes"])
    assert "stopped early" in (tmp_path / "report.html").read_text()
    assert step["errors_by_kind"].get("5xx", 0) == step["errors"] > 0
    # The baseline stopped at its first failure.
    assert report["probes"]["baseline"]["requests"] == 1
    # Far fewer than the 1000 the step planned: it stopped, it did not keep hammering.
    assert failing.stats()["requests"] < 500


@pytest.mark.parametrize("engine", ENGINES)
def test_abort_can_be_turned_off(tmp_path: Path, spawn_server: Spawn, engine: str) -> None:
    failing = spawn_server("fail")
    report, _ = diagnose(
        tmp_path, failing.url, engine, rate=50, duration=2, abort_on_error_rate=1.0
    )
    step = report["paths"]["direct"]["steps"][0]
    assert step["aborted"] is None
    assert step["errors"] == step["requests"] == 100


@pytest.mark.parametrize("engine", ENGINES)
def test_open_loop_run_is_bounded_by_its_plan(
    tmp_path: Path, spawn_server: Spawn, engine: str
) -> None:
    """The server receives exactly the planned number of requests, and the run ends on time."""
    server = spawn_server("ok")
    report, elapsed = diagnose(tmp_path, server.url, engine, rates="20,40", duration=1, warmup=0.5)
    planned = 20 * 1.5 + 40 * 1.5
    # ... plus the baseline's requests one at a time before the load, which the report counts.
    baseline = report["probes"]["baseline"]["requests"]
    assert 0 < baseline <= BASELINE_MAX_REQUESTS
    assert server.stats()["requests"] == planned + baseline
    steps = report["paths"]["direct"]["steps"]
    assert [s["offered_rps"] for s in steps] == [20, 40]
    assert elapsed < 3 + 30  # planned 3 s; generous for a busy machine, catches a hang


@pytest.mark.parametrize("engine", ENGINES)
def test_closed_loop_run_is_bounded_in_time(
    tmp_path: Path, spawn_server: Spawn, engine: str
) -> None:
    server = spawn_server("ok", "--delay-ms", "20")
    report, elapsed = diagnose(tmp_path, server.url, engine, concurrency=4, duration=1.5)
    step = report["paths"]["direct"]["steps"][0]
    assert step["requests"] > 0
    # 4 users x (warm-up 0 + 1.5 s) / 20 ms at most, plus the 4 in flight at the end, plus the
    # baseline's requests before the load.
    baseline = report["probes"]["baseline"]["requests"]
    assert server.stats()["requests"] <= 4 * 1.5 / 0.020 + 4 + baseline
    assert elapsed < 1.5 + 30


def test_silent_server_cannot_stretch_a_run_beyond_its_timeout(
    tmp_path: Path, spawn_server: Spawn
) -> None:
    """In-flight requests are awaited up to the request timeout, never longer."""
    silent = spawn_server("silent")
    report, elapsed = diagnose(tmp_path, silent.url, "aiohttp", rate=5, duration=1, timeout=2)
    step = report["paths"]["direct"]["steps"][0]
    assert step["errors_by_kind"] == {"timeout": 5}
    assert elapsed < 1 + 2 + 30
