"""A window spoiled by one stall of the client is measured again (session._run_windows).

The stall is the whole client standing still for 0.8 s (``time.sleep`` on its event loop), as a
VM pause does: a quarter of the window's requests leave late, while the loop is on time at every
other tick. The run measures that window again, leaves the first attempt out of every section,
and its verdict stays trustworthy. Real server, real engine, real probes.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from pathprobe.config import build_config
from pathprobe.load.select import loop_factory
from pathprobe.session import Session, finish, prepare
from tests.servers.process import pinned, serve

pytestmark = pytest.mark.integration

STALL_S = 0.8


def test_a_window_spoiled_by_one_stall_is_measured_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[tuple[str, bool]] = []
    original = Session._run_window

    async def stall_the_first(self: Session, *args: Any, **kwargs: Any) -> Any:
        attempts.append((args[3], bool(kwargs.get("again"))))
        if len(attempts) == 1:  # 0.5 s warm-up, then 1.5 s into the measured 3 s
            asyncio.get_running_loop().call_later(2.0, time.sleep, STALL_S)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Session, "_run_window", stall_the_first)
    with serve("tests.servers.fixed_delay", "0.005", cpu=1) as (port, _pid):
        url = f"http://127.0.0.1:{port}/"
        config = build_config(
            {"out": str(tmp_path), "path": {"direct": url, "proxy": url}, "rate": 50,
             "duration": 3, "warmup": 0.5, "target_p99": 200, "no_calibrate": True}
        )  # fmt: skip
        pool, plan = prepare(config)
        session = Session(config, ["diagnose"], pool, plan)
        with pinned(0), asyncio.Runner(loop_factory=loop_factory()) as runner:
            run = runner.run(session.run())
        report, _code = finish(run)

    assert attempts == [("direct", False), ("direct", True), ("proxy", False)]
    notes = [n for n in report["notes"] if "was measured again" in n]
    assert len(notes) == 1, report["notes"]
    assert notes[0].startswith("direct, step 1")
    assert "behind schedule" in notes[0]
    # Only the second attempt is kept: one result per path, each on time.
    assert [len(run.steps[p]) for p in ("direct", "proxy")] == [1, 1]
    for p in ("direct", "proxy"):
        step = report["paths"][p]["steps"][0]
        assert step["requests"] == 150
        assert step["slip_ms"]["max"] < STALL_S * 1000 / 2, step["slip_ms"]
    # ... and one window per (path, step) in every probe section.
    for name, section in report["probes"].items():
        keys = [(w["path"], w["step"]) for w in section.get("windows") or []]
        assert len(keys) == len(set(keys)), (name, keys)
    assert report["verdict"]["trustworthy"] is True, report["verdict"]["summary"]
