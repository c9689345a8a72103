"""The explicit list of probes a diagnosis runs (plugins by Protocol, listed here)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pathprobe.config import DiagnoseConfig
from pathprobe.probes.base import Probe


def build_probes(config: DiagnoseConfig, client_pids: Callable[[], Sequence[int]]) -> list[Probe]:
    """The probes for ``config``, in the order they are started (client first)."""
    probes: list[Probe] = []
    return probes
