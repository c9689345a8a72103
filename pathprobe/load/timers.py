"""Precise one-shot timers for open-loop sends: Linux ``timerfd``, else the loop's own timers.

The event loops' own timers round to the millisecond, which would add up to a millisecond of
schedule slip to every latency; a ``timerfd`` at an absolute CLOCK_MONOTONIC time has no timer
slack.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import time
from collections.abc import Callable


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _Timerfd:
    """A one-shot timer at an absolute CLOCK_MONOTONIC time with microsecond precision.

    Linux ``timerfd`` through libc (``os.timerfd_create`` arrives only in Python 3.13): the loop
    watches the fd like a socket, so the wake-up costs no thread and no GIL hand-off.
    """

    CLOCK_MONOTONIC = 1
    TFD_NONBLOCK = 0o4000
    TFD_CLOEXEC = 0o2000000
    TFD_TIMER_ABSTIME = 1

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._settime = libc.timerfd_settime
        fd = int(libc.timerfd_create(self.CLOCK_MONOTONIC, self.TFD_NONBLOCK | self.TFD_CLOEXEC))
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self._fd = fd
        self._spec = _Itimerspec()
        self._spec_ref = ctypes.byref(self._spec)
        self._loop = loop
        self._callback = callback
        loop.add_reader(fd, self._fire)

    def arm(self, at_ns: int) -> None:
        at_ns = max(at_ns, 1)  # 0 would disarm
        self._spec.it_value.tv_sec = at_ns // 1_000_000_000
        self._spec.it_value.tv_nsec = at_ns % 1_000_000_000
        self._settime(self._fd, self.TFD_TIMER_ABSTIME, self._spec_ref, None)

    def _fire(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:  # re-armed after it became readable
            return
        self._callback()

    def close(self) -> None:
        self._loop.remove_reader(self._fd)
        os.close(self._fd)


class _LoopTimer:
    """Fallback where ``timerfd`` is missing: the loop's own (millisecond) timers."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, at_ns: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        delay_s = max(at_ns - time.monotonic_ns(), 0) / 1e9
        self._handle = self._loop.call_later(delay_s, self._callback)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


def make_precise_timer(
    loop: asyncio.AbstractEventLoop, callback: Callable[[], None]
) -> _Timerfd | _LoopTimer:
    """A re-armable one-shot timer: ``arm(at_ns)`` runs ``callback`` in ``loop`` at ``at_ns``.

    ``at_ns`` is CLOCK_MONOTONIC (``time.monotonic_ns()``). Microsecond precision with
    ``timerfd`` (Linux); elsewhere the loop's own millisecond timers. ``close()`` when done.
    """
    try:
        return _Timerfd(loop, callback)
    except (OSError, AttributeError, NotImplementedError):
        return _LoopTimer(loop, callback)
