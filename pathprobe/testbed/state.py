"""What a running testbed owns, and tearing it down from that record alone.

The record is written to a state file after every resource is created, so ``pathprobe testbed
down`` (another process, maybe after a crash) can remove exactly what was made — processes by PID
and start time, the namespace, the cgroups — and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from pathprobe.testbed import cgroup, netns
from pathprobe.testbed.procs import ProcRecord, stop_all

DEFAULT_STATE_DIR = Path("/tmp/pathprobe-testbed")
STATE_FILE_NAME = "state.json"


def empty_state(tag: str, workdir: Path, owns_workdir: bool) -> dict[str, Any]:
    return {
        "schema": "pathprobe.testbed-state/v1",
        "tag": tag,
        "owner_pid": os.getpid(),
        "workdir": str(workdir),
        "owns_workdir": owns_workdir,
        "processes": [],
        "netns": None,
        "cgroups": [],
        "urls": {},
        "server_pids": [],
    }


def save(state: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


#: How long the testbed's processes get to exit on SIGTERM before SIGKILL. Nothing of theirs needs
#: a graceful end (their state dies with the workdir); gunicorn's gthread workers, measured, take
#: 2 s to stop and their master 1 s more, which every testbed of a CI run would otherwise wait out.
TEARDOWN_GRACE_S = 1.0


def teardown(state: dict[str, Any], keep_workdir: bool = False) -> list[str]:
    """Undo everything ``state`` records, last created first. Returns problems (empty = clean)."""
    problems: list[str] = []
    records = [ProcRecord.from_json(raw) for raw in reversed(state.get("processes", []))]
    try:
        stop_all([(record, None) for record in records], grace_s=TEARDOWN_GRACE_S)
    except Exception:  # one at a time then, so one failure leaves the rest removed
        for record in records:
            try:
                stop_all([(record, None)], grace_s=TEARDOWN_GRACE_S)
            except Exception as exc:  # keep going: the rest must still be removed
                problems.append(f"process {record.name} ({record.pid}): {exc}")
    ns = state.get("netns")
    if ns:
        try:
            netns.destroy(ns["name"], ns["outer_if"])
        except Exception as exc:
            problems.append(f"netns {ns['name']}: {exc}")
    for path in state.get("cgroups", []):
        try:
            cgroup.remove(Path(path))
        except Exception as exc:
            problems.append(f"cgroup {path}: {exc}")
    if state.get("owns_workdir") and not keep_workdir:
        shutil.rmtree(state["workdir"], ignore_errors=True)
    return problems
