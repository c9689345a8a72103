"""The watchdog on each window: a stuck load engine never outlives its step's time budget.

A stuck engine is a bug, not a measurement; these tests make one on purpose (wrapping the real
engine) and check that the run still ends on time with a partial report that says what happened.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from pathprobe import session as session_mod
from pathprobe.config import build_config
from pathprobe.load.schedule import StepPlan
from pathprobe.model.results import StepResult
from pathprobe.session import Session, run_diagnosis
from tests.servers.process import serve

pytestmark = pytest.mark.integration


class Stuck:
    """Wraps the real engine: its steps hang until told to stop (``obeys``), or for ever."""

    def __init__(self, real: Any, stop: asyncio.Event, obeys: bool) -> None:
        self.real, self.stop, self.obeys = real, stop, obeys

    async def run_step(self, path: str, url: str, plan: StepPlan) -> StepResult:
        if not self.obeys:
            await asyncio.Event().wait()  # nothing will ever set it
        await self.stop.wait()
        result: StepResult = await self.real.run_step(path, url, plan)
        return result


@pytest.mark.parametrize("obeys", [True, False], ids=["stops-when-told", "ignores-stop"])
def test_a_stuck_engine_is_stopped_and_the_report_says_so(
    obeys: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_mod, "WATCHDOG_MARGIN_S", 1.0)
    monkeypatch.setattr(session_mod, "WATCHDOG_STOP_GRACE_S", 1.0)
    real_make = Session._make_engine

    def make(self: Session) -> Any:
        return Stuck(real_make(self), self.stop, obeys)

    monkeypatch.setattr(Session, "_make_engine", make)
    with serve("tests.servers.fixed_delay", "0.001") as (port, _pid):
        config = build_config(
            {
                "path": {"direct": f"http://127.0.0.1:{port}/"},
                "rates": "20,40",
                "duration": 0.5,
                "warmup": 0,
                "timeout": 1,
                "no_capture": True,
                "no_profile": True,
                "out": str(tmp_path / "out"),
            }
        )
        t0 = time.monotonic()
        report, code = run_diagnosis(config, ["diagnose"])
        wall_s = time.monotonic() - t0
    # Budget of the first step: 0.5 s + 1 s timeout + 1 s margin, then 1 s to stop (and 1 s to
    # cancel); never the second step.
    assert wall_s < 20, wall_s
    assert report["interrupted"] is True
    assert code == 130
    notes = " ".join(report["notes"])
    assert "overran its time budget" in notes
    steps = report["paths"]["direct"]["steps"]
    if obeys:
        assert len(steps) == 1  # the partial window it returned once told to stop is kept
    else:
        assert "did not stop when told" in notes
        assert steps == []
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["notes"] == report["notes"]
    assert (tmp_path / "out" / "report.html").exists()
