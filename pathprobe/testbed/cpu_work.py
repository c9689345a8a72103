"""Real CPU work with a budget in CPU milliseconds, so a fault's size does not depend on contention.

Budgets are measured with ``time.thread_time`` (CPU time of the calling thread): on a busy core a
request still costs the same CPU, and its wall time grows as it would on a real server.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def spend_cpu_ms(budget_ms: float, step: Callable[[], object]) -> int:
    """Call ``step`` until this thread has used ``budget_ms`` of CPU; return the number of calls."""
    if budget_ms <= 0:
        return 0
    deadline = time.thread_time() + budget_ms / 1000.0
    calls = 0
    while True:
        step()
        calls += 1
        if time.thread_time() >= deadline:
            return calls
