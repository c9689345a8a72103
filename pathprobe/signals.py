"""Holding off Ctrl-C and SIGTERM for the few seconds that must not be cut short."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM for the duration (main thread only; elsewhere a no-op).

    For short, bounded work that losing would cost more than waiting for: writing the report of
    an interrupted run, tearing down the testbed a second Ctrl-C would otherwise leave behind.
    """
    saved: list[tuple[int, Any]] = []
    try:
        saved.extend((sig, signal.signal(sig, signal.SIG_IGN)) for sig in STOP_SIGNALS)
    except ValueError:  # not the main thread: signals are not ours to manage
        pass
    try:
        yield
    finally:
        for sig, handler in saved:
            signal.signal(sig, handler)
