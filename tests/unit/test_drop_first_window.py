"""A window measured again leaves its first attempt out of every probe section."""

from __future__ import annotations

from typing import Any

from pathprobe.session import drop_first_window


def test_only_the_first_attempt_of_that_window_goes() -> None:
    section: dict[str, Any] = {
        "available": True,
        "windows": [
            {"path": "direct", "step": 0, "n": "first attempt"},
            {"path": "direct", "step": 0, "n": "again"},
            {"path": "proxy", "step": 0, "n": "proxy"},
        ],
    }
    drop_first_window(section, "direct", 0)
    assert [w["n"] for w in section["windows"]] == ["again", "proxy"]


def test_sections_without_that_window_or_any_windows_are_left_alone() -> None:
    section: dict[str, Any] = {"windows": [{"path": "proxy", "step": 0}]}
    drop_first_window(section, "direct", 0)
    assert section == {"windows": [{"path": "proxy", "step": 0}]}
    unavailable: dict[str, Any] = {"available": False, "reason": "no py-spy"}
    drop_first_window(unavailable, "direct", 0)
    assert unavailable == {"available": False, "reason": "no py-spy"}
    drop_first_window(None, "direct", 0)  # a probe that wrote no section
