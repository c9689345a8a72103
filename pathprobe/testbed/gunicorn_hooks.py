"""gunicorn hooks for the fastapi stack (``-c python:pathprobe.testbed.gunicorn_hooks``)."""

from __future__ import annotations

from typing import Any

from pathprobe.testbed.oom_adj import mark_as_worker


def post_fork(server: Any, worker: Any) -> None:
    """Each worker volunteers for the OOM killer, so an OOM kill never takes the master."""
    mark_as_worker()
