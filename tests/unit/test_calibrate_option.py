"""The calibration option: on by default, off with ``--no-calibrate`` or ``no_calibrate = true``."""

from __future__ import annotations

from pathlib import Path

from pathprobe.config import build_config
from pathprobe.options import load_toml, merge

BASE = {"path": {"direct": "http://127.0.0.1:9/"}, "out": "/tmp/pathprobe-unit"}


def test_calibration_is_on_by_default() -> None:
    assert build_config(BASE).calibrate is True


def test_the_flag_turns_it_off() -> None:
    assert build_config({**BASE, "no_calibrate": True}).calibrate is False


def test_the_toml_key_turns_it_off_and_a_flag_left_unset_keeps_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('no_calibrate = true\npath = {direct = "http://127.0.0.1:9/"}\n')
    merged = merge(load_toml(config), {"no_calibrate": None, "out": str(tmp_path)})
    assert build_config(merged).calibrate is False
