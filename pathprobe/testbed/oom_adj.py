"""Make the OOM killer take a worker, never the master that restarts workers.

Workers raise their own ``oom_score_adj`` (raising needs no privilege; lowering the master's
needs CAP_SYS_RESOURCE and some sandboxes refuse it even to root). Kubernetes and systemd
protect their supervisors the same way.
"""

from __future__ import annotations

from pathlib import Path

WORKER_OOM_SCORE_ADJ = 500


def mark_as_worker() -> bool:
    """Call in each freshly forked worker; False when the kernel refused."""
    try:
        Path("/proc/self/oom_score_adj").write_text(str(WORKER_OOM_SCORE_ADJ))
    except OSError:
        return False
    return True
