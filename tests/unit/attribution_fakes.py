"""Synthetic runs for the analysis unit tests: StepResults whose every component is known.

Each request ``seq`` of a path is built from parts (ms): schedule slip, pool wait, one network round
trip, each hop's own time, the server's queue and its Server-Timing metrics, and the response body.
Headers are written the way nginx, HAProxy and a server would write them, so the analysis reads
them back through the real parsers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pathprobe.analysis.steps import step_summary
from pathprobe.analysis.targets import judge
from pathprobe.config import build_config
from pathprobe.model.records import ErrorKind, empty_records
from pathprobe.model.results import StepResult
from pathprobe.run import RunResult

MS = 1_000_000


@dataclass
class Parts:
    """Per-request times in ms (arrays of length n, or scalars)."""

    slip: Any = 0.0
    pool: Any = 0.0
    rtt: Any = 0.2
    lb: Any = 0.0  # haproxy's own time (queue)
    proxy: Any = 0.0  # nginx's own time
    queue: Any = 0.5  # server time outside its metrics
    pre: Any = 2.0
    inf: Any = 10.0
    body: Any = 0.1
    failed: Any = None  # bool mask of failed requests (reset)
    rejected: Any = None  # bool mask of requests answered 503 (e.g. by a rate-limiting hop)
    metric_names: tuple[str, str] = ("preprocess", "inference")
    server_timing: bool = True
    lb_header: bool = True
    proxy_header: bool = True
    bytes_out: Any = 20_000


def _arr(value: Any, n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)).copy()


def make_step(
    path: str, step: int, n: int, rate: float | None, parts: Parts, hops: Sequence[str]
) -> StepResult:
    """One (path, step) whose requests cross ``hops`` (e.g. ["lb", "proxy"] for the lb path)."""
    rec = empty_records(n)
    gap_ns = int(1e9 / (rate or 50.0))
    start = 10**12
    rec["seq"] = np.arange(n)
    rec["intended_ns"] = start + np.arange(n) * gap_ns
    slip = _arr(parts.slip, n)
    pool = _arr(parts.pool, n)
    rtt = _arr(parts.rtt, n)
    lb = _arr(parts.lb, n) if "lb" in hops else np.zeros(n)
    proxy = _arr(parts.proxy, n) if "proxy" in hops else np.zeros(n)
    queue = _arr(parts.queue, n)
    pre = _arr(parts.pre, n)
    inf = _arr(parts.inf, n)
    body = _arr(parts.body, n)
    server = queue + pre + inf
    ttfb = pool + rtt + lb + proxy + server
    rec["actual_ns"] = rec["intended_ns"] + (slip * MS).astype(np.int64)
    rec["conn_wait_ns"] = (pool * MS).astype(np.int64)
    rec["connect_ns"] = -1
    # As the engines record it: TTFB from when a pooled connection was free (model/records.py).
    rec["ttfb_ns"] = ((ttfb - pool) * MS).astype(np.int64)
    rec["end_ns"] = rec["actual_ns"] + ((ttfb + body) * MS).astype(np.int64)
    rec["status"] = 200
    rec["bytes_out"] = _arr(parts.bytes_out, n).astype(np.int64)
    rec["bytes_in"] = 100
    rec["payload_idx"] = np.arange(n) % 8
    if parts.failed is not None:
        bad = np.asarray(parts.failed, bool)
        rec["status"][bad] = 0
        rec["error"][bad] = int(ErrorKind.RESET)
        rec["ttfb_ns"][bad] = -1
    if parts.rejected is not None:
        turned_away = np.asarray(parts.rejected, bool)
        rec["status"][turned_away] = 503
        rec["error"][turned_away] = int(ErrorKind.HTTP_5XX)
    headers: dict[str, list[str | None]] = {}
    a, b = parts.metric_names
    if parts.server_timing:
        headers["server-timing"] = [f"{a};dur={pre[i]:.2f}, {b};dur={inf[i]:.2f}" for i in range(n)]
    if "proxy" in hops and parts.proxy_header:
        headers["x-upstream-header-time"] = [f"{server[i] / 1000:.3f}" for i in range(n)]
    if "lb" in hops and parts.lb_header:
        behind = proxy + server
        headers["x-haproxy-timers"] = [f"Tw={lb[i]:.0f} Tc=0 Tr={behind[i]:.0f}" for i in range(n)]
    for name, vals in headers.items():
        for i in np.flatnonzero(rec["status"] == 0):
            vals[i] = None
        headers[name] = vals
    measured_start = int(rec["intended_ns"][0])
    return StepResult(
        path=path,
        url=f"http://127.0.0.1:1/{path}",
        step=step,
        offered_rps=rate,
        concurrency=None if rate else 8,
        engine="fake",
        records=rec,
        first_measured_seq=0,
        start_ns=measured_start,
        measured_start_ns=measured_start,
        measured_end_ns=measured_start + n * gap_ns,
        headers=headers,
        loop_lag_ns=np.full(100, 200_000, np.int64),
    )


HOPS = {"direct": [], "proxy": ["proxy"], "lb": ["lb", "proxy"]}


@dataclass
class FakeRun:
    paths: Sequence[str] = ("direct", "proxy", "lb")
    rates: Sequence[float] = (50.0,)
    n: int = 600
    target_p99: float | None = 100.0
    target_error_rate: float | None = None
    parts: Callable[[str, int], Parts] = lambda path, step: Parts()
    probes: dict[str, Any] = field(default_factory=dict)
    seed: int = 1
    out: Path = Path("/tmp/pathprobe-unit-out")

    def build(self) -> RunResult:
        raw: dict[str, Any] = {
            "path": {p: f"http://127.0.0.1:1/{p}" for p in self.paths},
            "rates": list(self.rates),
            "out": str(self.out),
            "seed": self.seed,
        }
        if self.target_p99 is not None:
            raw["target_p99"] = self.target_p99
        if self.target_error_rate is not None:
            raw["target_error_rate"] = self.target_error_rate
        config = build_config(raw)
        run = RunResult(config=config, argv=["pathprobe"], started_at="now")
        for path in self.paths:
            for step, rate in enumerate(self.rates):
                res = make_step(path, step, self.n, rate, self.parts(path, step), HOPS[path])
                run.steps.setdefault(path, []).append(res)
                run.step_summaries.setdefault(path, []).append(step_summary(res, None))
        run.probes = dict(self.probes)
        return run


def judged(run: RunResult) -> dict[str, Any]:
    return judge(run.step_summaries[run.config.outermost.name], run.config.targets)


def probe_windows(
    name: str, paths: Sequence[str], steps: int, fields: Mapping[str, Any], **section: Any
) -> dict[str, Any]:
    """A probe section with one window per (path, step), each holding ``fields``."""
    windows = [
        {"path": p, "step": s, "available": True, **fields} for p in paths for s in range(steps)
    ]
    return {"available": True, "windows": windows, **section}
