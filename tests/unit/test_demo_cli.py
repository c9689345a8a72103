"""``pathprobe demo``'s pure parts: which faults a run injects, and the line that says what was
injected and what was found."""

from __future__ import annotations

import pytest

from pathprobe.cli.demo import DEFAULT_FAULT, demo_faults, injected_found_line
from pathprobe.errors import UsageError


def test_demo_faults() -> None:
    assert demo_faults(None) == [DEFAULT_FAULT]
    assert demo_faults([]) == [DEFAULT_FAULT]
    assert demo_faults(["none"]) == []
    assert demo_faults(["oom", "lb_queue"]) == ["oom", "lb_queue"]
    with pytest.raises(UsageError):
        demo_faults(["none", "oom"])


def test_injected_found_line() -> None:
    assert (
        injected_found_line(["heavy_preprocessing"], "preprocessing")
        == "injected: heavy_preprocessing (expect preprocessing) — found: preprocessing"
    )
    assert injected_found_line([], "none") == "injected: none (expect none) — found: none"
    assert injected_found_line(["oom"], None).endswith("found: nothing")


def test_demo_faults_unknown_names_none_too() -> None:
    with pytest.raises(UsageError, match="or none"):
        demo_faults(["nope"])
