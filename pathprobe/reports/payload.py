"""Build report.json (schema ``pathprobe.report/v1``, design.md §5) from a run, and write it.

The payload is plain data: the HTML renderer and ``pathprobe report`` work from it alone.
Everything user-supplied that may hold a secret passes through :mod:`pathprobe.redact`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from pathprobe import __version__
from pathprobe.config import DiagnoseConfig
from pathprobe.redact import redact_argv, redact_config, redact_url
from pathprobe.run import RunResult

SCHEMA = "pathprobe.report/v1"


def build_report(
    run: RunResult, verdict: dict[str, Any], judgement: dict[str, Any]
) -> dict[str, Any]:
    """The whole report.json payload."""
    argv = redact_argv(run.argv)
    paths: dict[str, Any] = {}
    for spec in run.config.paths:
        paths[spec.name] = {
            "url": redact_url(spec.url),
            "steps": run.step_summaries.get(spec.name, []),
        }
        if spec.name in run.unreachable:
            paths[spec.name]["unreachable"] = run.unreachable[spec.name]
    targets = run.config.targets
    return {
        "schema": SCHEMA,
        "interrupted": run.interrupted,
        "verdict": verdict,
        "targets": {
            "p99_ms": targets.p99_ms,
            "rps": targets.rps,
            "error_rate": targets.error_rate,
            "judged_on": run.config.outermost.name,
            **judgement,
        },
        "paths": paths,
        "probes": {
            "client": run.probes.get("client", {}),
            "network": run.probes.get("network", {}),
            "server": run.probes.get("server", {}),
            **{k: v for k, v in run.probes.items() if k not in ("client", "network", "server")},
        },
        "notes": run.notes,
        "run": {
            "started_at": run.started_at,
            "ended_at": run.ended_at,
            "argv": argv,
            "command": shlex.join(["pathprobe", *argv]),
            "config": config_json(run.config),
            "versions": versions(),
            "host": host_facts(),
            "load_generators": run.load_generators,
        },
    }


def config_json(config: DiagnoseConfig) -> dict[str, Any]:
    """The resolved configuration as JSON, secrets redacted."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    raw = plain(dataclasses.asdict(config))
    raw["load"]["headers"] = [f"{k}: {v}" for k, v in config.load.headers]
    redacted: dict[str, Any] = redact_config(raw)
    return redacted


def versions() -> dict[str, str]:
    """Versions of pathprobe, Python and the libraries whose behaviour shapes the numbers."""
    from importlib import metadata

    out = {"pathprobe": __version__, "python": platform.python_version()}
    for dist in ("aiohttp", "numpy", "scapy", "psutil", "py-spy", "httptools", "uvloop"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def host_facts() -> dict[str, Any]:
    import psutil

    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "memory_bytes": psutil.virtual_memory().total,
        "python_executable": sys.executable,
    }


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` via a temporary file and rename (never a half-written file)."""
    write_text_atomic(path, json.dumps(payload, indent=1, allow_nan=False, default=_default))


def write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        # mkstemp makes the file private; a report is meant to be shared like any file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _default(value: Any) -> Any:
    """numpy scalars and paths that slipped through become plain JSON values."""
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
