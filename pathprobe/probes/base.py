"""The contract every probe keeps with the session.

The session opens each probe once, then brackets every measured (path, step) window with
``start_window`` / ``stop_window``, then closes it. A probe never raises out of these calls for
reasons of the environment (no root, no py-spy, cgroup unreadable): it records *why* it could not
observe, and the report says so (``available: false`` with ``reason`` and ``how_to_enable``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

JSONDict = dict[str, Any]


@dataclass(frozen=True)
class Window:
    """One measured load window: one path at one step.

    ``start_ns``/``end_ns`` are ``time.monotonic_ns()`` values of the measured part (warm-up
    excluded); ``end_ns`` is 0 until the window is stopped.
    """

    path: str
    url: str
    step: int
    offered_rps: float | None
    start_ns: int
    end_ns: int = 0


@dataclass(frozen=True)
class Unavailable:
    """Why a probe (or part of one) observed nothing, and how the user can enable it."""

    reason: str
    how_to_enable: str

    def as_json(self) -> JSONDict:
        return {"available": False, "reason": self.reason, "how_to_enable": self.how_to_enable}


@runtime_checkable
class Probe(Protocol):
    """A sampler. ``name`` is its key under ``report.json`` ``probes``."""

    name: str

    async def open(self) -> None:
        """Prepare (find interfaces, PIDs, tools). Records unavailability instead of raising."""

    async def start_window(self, window: Window) -> None:
        """Begin observing one (path, step) window."""

    async def stop_window(self, window: Window) -> JSONDict:
        """Stop observing ``window`` (now with ``end_ns``) and return its JSON-able summary.

        The summary always carries ``path`` and ``step``. A probe that finishes the window in the
        background returns ``pending: true`` with them; its final summary is in ``close``'s
        ``windows``.
        """

    async def close(self) -> JSONDict:
        """Release everything (reap subprocesses) and return the probe's JSON-able section:
        ``{"available": bool, "reason": str | None, "how_to_enable": str | None,
        "windows": [...], ...}``."""
