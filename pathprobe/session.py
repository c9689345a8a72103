"""Runs one diagnosis: paths × steps with probes around each window — the one place that knows
the order of things.

Order: validate and check ``--out`` (before any load) → build payloads (before the clock) →
preflight connect to each path → open probes → for each step, each path (alternating order, so slow
drift does not pass for the cost of a hop): start probe windows, run the step, stop windows →
close probes → summarise, judge targets, decide the verdict → write report.json and report.html
atomically. SIGINT/SIGTERM stop the load at once and still write a partial report (exit 130).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from pathprobe.analysis.client_gate import one_stall, window_gate
from pathprobe.analysis.stats import quick_summary
from pathprobe.analysis.steps import step_summary
from pathprobe.analysis.targets import judge
from pathprobe.analysis.verdict import decide
from pathprobe.config import DiagnoseConfig, TLSOptions, check_out_dir
from pathprobe.decode.hopheaders import summarize_hop_headers
from pathprobe.errors import (
    EXIT_INTERRUPTED,
    EXIT_TARGETS_MET,
    EXIT_TARGETS_MISSED,
    CannotRunError,
)
from pathprobe.grpc_url import is_grpc_url
from pathprobe.load import heap
from pathprobe.load.engine import EngineOptions
from pathprobe.load.generators import GeneratorLedger
from pathprobe.load.payloads import PayloadPool, build_pool
from pathprobe.load.schedule import StepPlan, plan_step
from pathprobe.load.select import Engine, engine_name, loop_factory, make_engine
from pathprobe.model.records import completed
from pathprobe.model.results import StepResult, header_values, measured
from pathprobe.probes.base import Probe, Window
from pathprobe.probes.registry import build_probes
from pathprobe.redact import redact_url
from pathprobe.reports.payload import build_report, write_json_atomic, write_text_atomic
from pathprobe.run import RunResult
from pathprobe.signals import STOP_SIGNALS, signals_ignored

PREFLIGHT_TIMEOUT_S = 3.0
# The watchdog on each window: a step is due to end after its warm-up and duration, plus at most
# one request timeout for the requests still in flight. Past that and this margin the engine is
# stuck (a bug, never a measurement): it is told to stop like on Ctrl-C, then cancelled.
WATCHDOG_MARGIN_S = 30.0
WATCHDOG_STOP_GRACE_S = 10.0
#: Windows a run may measure again after one stall of the client (client_gate.one_stall): each
#: costs one more window of load, and a client that stalls this often is not stalling by chance.
MAX_WINDOW_RETRIES = 2
#: How long the baseline sends requests one at a time. A second gives ~10 samples of a 100 ms
#: server (enough for a median and a size slope), and the requests that find the server empty
#: during the load add more; a slower server gets fewer here but is sampled in its windows too.
BASELINE_S = 1.0
#: ... and at most this many: against a fast server a second would be a thousand requests, which
#: is load, not a baseline; twelve give a median and a size slope.
BASELINE_MAX_REQUESTS = 12
#: The latency-floor calibration before the first step (probes/calibration.py): short enough to
#: add about a second to a run, long enough for a p99 of the floor (~150 requests).
CALIBRATION_S = 0.7
CALIBRATION_RPS = 250.0

ProgressCallback = Callable[[str, float], None]


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a run will do, for ``--dry-run`` and the progress bar."""

    steps: list[StepPlan]
    windows: list[tuple[int, str]]  # (step, path) in run order
    total_s: float
    total_requests: int | None  # None under closed loop

    def describe(self, config: DiagnoseConfig) -> list[str]:
        lines = [f"paths: {', '.join(f'{p.name}={redact_url(p.url)}' for p in config.paths)}"]
        for step in self.steps:
            shape = (
                f"{step.offered_rps:g} requests/s ({config.load.arrival})"
                if step.offered_rps is not None
                else f"closed loop, concurrency {step.concurrency}"
            )
            count = "" if step.offsets_ns is None else f", {len(step.offsets_ns)} requests per path"
            lines.append(
                f"step {step.step + 1}: {shape}, {config.load.warmup_s:g} s warm-up + "
                f"{config.load.duration_s:g} s measured{count}"
            )
        lines.append(
            f"baseline: up to {BASELINE_MAX_REQUESTS} requests one at a time to the innermost "
            f"path (at most {BASELINE_S:g} s), before the first step"
        )
        total = "unknown (closed loop)" if self.total_requests is None else self.total_requests
        lines.append(
            f"total: {len(self.windows)} windows, about {self.total_s:.0f} s, requests: {total}"
        )
        return lines


def make_plan(config: DiagnoseConfig, pool: PayloadPool) -> Plan:
    steps = [
        plan_step(config.load, i, len(pool), pool.cycle) for i in range(len(config.load.steps))
    ]
    windows: list[tuple[int, str]] = []
    for step in steps:
        names = [p.name for p in config.paths]
        # Alternate the order (ABBA) so drift over the run does not favour one path.
        if step.step % 2 == 1:
            names.reverse()
        windows.extend((step.step, name) for name in names)
    total_s = sum(s.total_ns / 1e9 for s in steps) * len(config.paths)
    if all(s.offsets_ns is not None for s in steps):
        total_requests: int | None = sum(
            len(s.offsets_ns) for s in steps if s.offsets_ns is not None
        ) * len(config.paths)
    else:
        total_requests = None
    return Plan(steps, windows, total_s, total_requests)


def capture_header_names(config: DiagnoseConfig) -> tuple[str, ...]:
    """Response headers kept per request: hop timing headers (the replica header is separate)."""
    p = config.probes
    names = (p.server_timing_header, p.upstream_time_header, p.lb_timers_header)
    return tuple(dict.fromkeys((*names, p.envoy_time_header)))


class Session:
    """One diagnosis in flight."""

    def __init__(
        self,
        config: DiagnoseConfig,
        argv: list[str],
        pool: PayloadPool,
        plan: Plan,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.plan = plan
        self.progress = progress
        self.stop = asyncio.Event()
        self.calibration: dict[str, Any] | None = None
        self._generators = GeneratorLedger()
        self._done_s = 0.0  # seconds of load driven so far (the progress bar's)
        # (path, step) windows measured twice: the first attempt of each is left out.
        self._discarded: list[tuple[str, int]] = []
        self.run_result = RunResult(
            config=config,
            argv=argv,
            started_at=_now_iso(),
            payload_sizes=pool.sizes_bytes() if len(pool) else None,
        )

    async def run(self) -> RunResult:
        loop = asyncio.get_running_loop()
        self._install_signal_handlers(loop)
        engine: Engine | None = None
        try:
            await self._preflight()
            await self._calibrate()
            engine = self._make_engine()
            await self._baseline(engine)
            probes = build_probes(
                self.config,
                client_pids=lambda: _client_pids(engine),
                load_generators=lambda: _generator_windows(engine),
            )
            await self._open_probes(probes)
            try:
                await self._run_windows(engine, probes)
            finally:
                heap.release()
                await self._close_probes(probes)
        finally:
            close = getattr(engine, "close", None)
            if close is not None:
                result = close()
                if asyncio.iscoroutine(result):
                    await result
            self._remove_signal_handlers(loop)
            self.run_result.ended_at = _now_iso()
        return self.run_result

    def _make_engine(self) -> Engine:
        config = self.config
        options = EngineOptions(
            capture_headers=capture_header_names(config),
            replica_header=config.probes.replica_header,
            abort_on_error_rate=config.abort_on_error_rate,
            max_records=config.max_records,
        )
        return make_engine(
            config.load, self.pool, options, stop=self.stop, urls=[p.url for p in config.paths]
        )

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        def interrupted() -> None:
            if self.stop.is_set():
                # A second Ctrl-C: the user means it. Leave through KeyboardInterrupt.
                raise KeyboardInterrupt
            self.run_result.interrupted = True
            self.stop.set()

        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, interrupted)

    @staticmethod
    def _remove_signal_handlers(loop: asyncio.AbstractEventLoop) -> None:
        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)

    async def _preflight(self) -> None:
        """One TCP connect per path. No path reachable → exit 3 before any load."""
        load = self.config.load
        results = await asyncio.gather(
            *(_try_connect(p.url, load.tls, load.headers) for p in self.config.paths)
        )
        for spec, problem in zip(self.config.paths, results, strict=True):
            if problem is not None:
                self.run_result.unreachable[spec.name] = problem
        if len(self.run_result.unreachable) == len(self.config.paths):
            detail = "; ".join(f"{k}: {v}" for k, v in self.run_result.unreachable.items())
            raise CannotRunError(f"no path reachable ({detail})")
        for name, problem in self.run_result.unreachable.items():
            self.run_result.notes.append(f"path {name} was not reachable before the run: {problem}")

    async def _baseline(self, engine: Engine) -> None:
        """Requests one at a time to the innermost reachable path, before any load: how long the
        server takes when nothing else is in it (analysis/server_work.py). The first step's
        payloads, each request sent when the previous one ended, at most
        :data:`BASELINE_MAX_REQUESTS` and :data:`BASELINE_S`; the first failure ends it."""
        spec = next(
            (p for p in self.config.paths if p.name not in self.run_result.unreachable), None
        )
        if spec is None or self.stop.is_set() or not self.plan.steps:
            return
        first = self.plan.steps[0]
        if self.progress is not None:
            self.progress(f"baseline · {spec.name}", 0.0)
        results: list[StepResult] = []
        started = time.monotonic()
        budget_s = self.config.load.timeout_s + WATCHDOG_MARGIN_S
        for seq in range(BASELINE_MAX_REQUESTS):
            if self.stop.is_set() or time.monotonic() - started >= BASELINE_S:
                break
            plan = StepPlan(
                step=first.step,
                offered_rps=None,
                offsets_ns=np.zeros(1, np.int64),
                payload_idx=np.array([first.payload_for(seq)], np.int32),
                concurrency=None,
                warmup_ns=0,
                duration_ns=0,
            )
            result = await self._abandon_after(engine.run_step(spec.name, spec.url, plan), budget_s)
            if result is None:
                self.run_result.notes.append(
                    f"a baseline request to {spec.name} failed or took over {budget_s:.0f} s; "
                    "the server's time is split without it"
                )
                break
            results.append(result)
            if not completed(result.records).all() or (result.records["status"] >= 400).any():
                break  # a failing server is not measured by hammering it
        self.run_result.baselines[spec.name] = results
        self.run_result.probes["baseline"] = baseline_summary(spec.name, results)

    async def _calibrate(self) -> None:
        """pathprobe's own latency floor, measured before any load: the engine this run uses,
        against a null server it starts on 127.0.0.1 and always stops. Kept for the client
        probe's section (``probes.client.calibration``); a failure is recorded, never fatal."""
        if not self.config.calibrate or self.stop.is_set():
            return
        from pathprobe.probes.calibration import calibrate_async

        if self.progress is not None:
            self.progress("calibrating the latency floor", 0.0)
        engine = engine_name(self.config.load, [p.url for p in self.config.paths])
        if engine == "grpc":
            # The null server speaks HTTP/1.1: a gRPC floor needs a gRPC null server (not yet).
            self.calibration = {
                "available": False,
                "reason": "no latency floor for gRPC runs yet (the null server speaks HTTP/1.1)",
                "how_to_enable": None,
                "floor_ms": None,
            }
            return
        try:
            self.calibration = await calibrate_async(CALIBRATION_S, CALIBRATION_RPS, engine=engine)
        except Exception as exc:  # the floor is context for the numbers, never worth a run
            self.calibration = {
                "available": False,
                "reason": f"calibration failed: {type(exc).__name__}: {exc}",
                "how_to_enable": "report this as a bug; --no-calibrate skips it",
                "floor_ms": None,
            }

    async def _open_probes(self, probes: list[Probe]) -> None:
        for probe in probes:
            await probe.open()

    async def _close_probes(self, probes: list[Probe]) -> None:
        for probe in probes:
            try:
                self.run_result.probes[probe.name] = await probe.close()
            except Exception as exc:  # a probe failing must not lose the measurements
                self.run_result.probes[probe.name] = {
                    "available": False,
                    "reason": f"probe failed while closing: {type(exc).__name__}: {exc}",
                    "how_to_enable": "report this as a bug",
                }
        for path, step in self._discarded:
            for section in self.run_result.probes.values():
                drop_first_window(section, path, step)
        if self.calibration is not None:
            self.run_result.probes.setdefault("client", {})["calibration"] = self.calibration

    async def _run_windows(self, engine: Engine, probes: list[Probe]) -> None:
        retries_left = MAX_WINDOW_RETRIES
        for step_index, path in self.plan.windows:
            if self.stop.is_set():
                break
            result, client_window = await self._run_window(engine, probes, step_index, path)
            if result is None:  # stuck even after being told to stop: the run ends here
                break
            summary = step_summary(result, self.run_result.payload_sizes)
            stall = None
            if retries_left > 0 and not self.stop.is_set():
                stall = self._one_stall(result, summary, client_window, engine)
            if stall is not None:
                retries_left -= 1
                self._discarded.append((path, step_index))
                self.run_result.notes.append(
                    f"{path}, step {step_index + 1} was measured again: {stall}, while the "
                    "client's event loop was on time and its CPU under the bar otherwise. That "
                    "is one stall of the client (a VM pause, a page-in), not a client that "
                    "cannot keep up; the first attempt is left out."
                )
                result, _ = await self._run_window(engine, probes, step_index, path, again=True)
                if result is None:
                    break
                summary = step_summary(result, self.run_result.payload_sizes)
            self._keep(result, summary, engine)

    async def _run_window(
        self, engine: Engine, probes: list[Probe], step_index: int, path: str, again: bool = False
    ) -> tuple[StepResult | None, dict[str, Any] | None]:
        """Drive one (path, step) window with every probe watching. Returns its result (None
        when the engine would not stop, noted) and the client probe's summary of it."""
        config = self.config
        url = next(spec.url for spec in config.paths if spec.name == path)
        plan = self.plan.steps[step_index]
        label = f"step {step_index + 1}/{len(self.plan.steps)} · {path}"
        if again:
            label += " (again)"
        heap.settle()  # no full garbage collection inside the window (load/heap.py)
        window = Window(
            path=path,
            url=url,
            step=step_index,
            offered_rps=plan.offered_rps,
            start_ns=time.monotonic_ns() + plan.warmup_ns,
        )
        for probe in probes:
            await self._guard(probe.name, probe.start_window(window))
        ticker = asyncio.create_task(self._tick(label, self._done_s, plan.total_ns / 1e9))
        budget_s = plan.total_ns / 1e9 + config.load.timeout_s + WATCHDOG_MARGIN_S
        try:
            result = await self._watched(engine.run_step(path, url, plan), budget_s)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        if result is None:
            self.run_result.notes.append(
                f"{path}, step {step_index + 1}: the load engine did not stop when told and "
                "was cancelled; this window has no results"
            )
        else:
            self._done_s += plan.total_ns / 1e9
            window = dataclasses.replace(
                window, start_ns=result.measured_start_ns, end_ns=result.measured_end_ns
            )
        client_window = None
        for probe in probes:
            summary = await self._guard(probe.name, probe.stop_window(window))
            if probe.name == "client" and isinstance(summary, dict):
                client_window = summary
        return result, client_window

    def _one_stall(
        self,
        result: StepResult,
        summary: dict[str, Any],
        client_window: dict[str, Any] | None,
        engine: Engine,
    ) -> str | None:
        """Why ``result``'s window tripped the client gate, when it did so on one stall alone
        (:func:`~pathprobe.analysis.client_gate.one_stall`); None otherwise. Never for load
        workers elsewhere (--ray): each keeps its own accounts of the window."""
        if getattr(engine, "last_generators", None) or result.aborted:
            return None
        latency = summary["latency_ms"]
        reasons, numbers = window_gate(
            measured(result),
            latency.get("p99"),
            result.loop_lag_ns,
            client_window,
            latency.get("p50"),
            result.sample_stride,
        )
        return "; ".join(reasons) if one_stall(reasons, numbers) else None

    def _keep(self, result: StepResult, summary: dict[str, Any], engine: Engine) -> None:
        """File a window's result, its step summary, and what is worth a note about it."""
        path, step_index = result.path, result.step
        self._record(result, summary)
        self._file_generators(engine, path, step_index)
        if result.aborted:
            self.run_result.notes.append(f"{path}, step {step_index + 1}: {result.aborted}")
        if result.sample_stride > 1:
            self.run_result.notes.append(
                f"{path}, step {step_index + 1}: {len(result.records):,} per-request records "
                f"kept, about 1 in {result.sample_stride} (--max-records "
                f"{self.config.max_records:,}); counts and latency percentiles cover every "
                "request (histograms, 0.1 % precision), the breakdowns the sample"
            )

    @staticmethod
    async def _abandon_after(run_step: Any, budget_s: float) -> StepResult | None:
        """``run_step`` awaited for at most ``budget_s``, then cancelled: None then, or when it
        failed. For preparatory requests (the baseline), which must never stop the run."""
        task = asyncio.ensure_future(run_step)
        done, _ = await asyncio.wait({task}, timeout=budget_s)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=WATCHDOG_STOP_GRACE_S)
            return None
        if task.cancelled() or task.exception() is not None:
            return None
        result: StepResult = task.result()
        return result

    async def _watched(self, run_step: Any, budget_s: float) -> StepResult | None:
        """``run_step`` awaited for at most ``budget_s``; past it the engine is told to stop (its
        result, partial, is still used), then cancelled: None when even that did not end it."""
        task = asyncio.ensure_future(run_step)
        done, _ = await asyncio.wait({task}, timeout=budget_s)
        if not done:
            self.run_result.interrupted = True
            self.run_result.notes.append(
                f"a step overran its time budget ({budget_s:.0f} s) and was stopped; the run "
                "ended there (a pathprobe bug: please report it)"
            )
            self.stop.set()
            done, _ = await asyncio.wait({task}, timeout=WATCHDOG_STOP_GRACE_S)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=WATCHDOG_STOP_GRACE_S)
            return None
        result: StepResult = task.result()
        return result

    async def _guard(self, name: str, call: Any) -> Any:
        """Await a probe call; a probe bug is noted, never fatal to the run."""
        try:
            return await call
        except Exception as exc:
            self.run_result.notes.append(f"probe {name} failed: {type(exc).__name__}: {exc}")
            return None

    async def _tick(self, label: str, done_s: float, window_s: float) -> None:
        if self.progress is None:
            return
        started = time.monotonic()
        while True:
            elapsed = min(time.monotonic() - started, window_s)
            self.progress(label, done_s + elapsed)
            await asyncio.sleep(0.25)

    def _file_generators(self, engine: Engine, path: str, step: int) -> None:
        """Per-worker accounts of the window just run (workers that keep them: --ray)."""
        windows = getattr(engine, "last_generators", None)
        if not windows:
            return
        self.run_result.notes.extend(self._generators.add(path, step, windows))
        self.run_result.load_generators = self._generators.entries()

    def _record(self, result: StepResult, summary: dict[str, Any]) -> None:
        self.run_result.steps.setdefault(result.path, []).append(result)
        if result.headers:
            measured_values = {name: header_values(result, name) for name in result.headers}
            summary["hop_headers"] = summarize_hop_headers(measured_values, self.config.probes)
        self.run_result.step_summaries.setdefault(result.path, []).append(summary)


async def _try_connect(
    url: str, tls: TLSOptions | None = None, headers: tuple[tuple[str, str], ...] = ()
) -> str | None:
    """``None`` when a TCP connection to the URL's host and port opens (and, for a gRPC path,
    the server answers gRPC and has the model), else why not."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, port), PREFLIGHT_TIMEOUT_S
        )
    except TimeoutError:
        return f"connect timed out after {PREFLIGHT_TIMEOUT_S:g} s"
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    if is_grpc_url(url):
        from pathprobe.load.grpc_engine import probe_endpoint

        metadata = tuple((k.lower(), v) for k, v in headers)
        return await probe_endpoint(url, tls or TLSOptions(), PREFLIGHT_TIMEOUT_S, metadata)
    return None


def finish(run: RunResult) -> tuple[dict[str, Any], int]:
    """Summaries → targets → verdict → report payload, and the exit code."""
    # Steps appear in run order; sort each path's steps by step index for the report.
    for name, results in run.steps.items():
        order = sorted(range(len(results)), key=lambda i: results[i].step)
        run.steps[name] = [results[i] for i in order]
        run.step_summaries[name] = [run.step_summaries[name][i] for i in order]
    outer = run.config.outermost.name
    judgement = judge(run.step_summaries.get(outer, []), run.config.targets)
    verdict = decide(run, judgement)
    report = build_report(run, verdict, judgement)
    if run.interrupted:
        code = EXIT_INTERRUPTED
    elif verdict["targets_met"]:
        code = EXIT_TARGETS_MET
    else:
        code = EXIT_TARGETS_MISSED
    return report, code


def write_outputs(config: DiagnoseConfig, report: dict[str, Any]) -> None:
    """report.json and report.html, each written atomically."""
    from pathprobe.reports.render import render_html

    write_json_atomic(config.out_dir / "report.json", report)
    write_text_atomic(config.out_dir / "report.html", render_html(report))


def prepare(config: DiagnoseConfig) -> tuple[PayloadPool, Plan]:
    """Everything that can fail on bad input, before any load: out dir, payloads, plan."""
    check_out_dir(config.out_dir)
    # An engine that cannot serve these URLs (--engine fast with https) is a usage error now,
    # before the preflight touches any target.
    name = engine_name(config.load, [p.url for p in config.paths])
    if name == "grpc":  # tensors in ModelInferRequests, checked and serialized once, here
        from pathprobe.load.oip import build_grpc_pool

        pool = build_grpc_pool(config.load.payload, config.load.seed)
    else:
        pool = build_pool(config.load.payload, config.load.seed)
    return pool, make_plan(config, pool)


def run_diagnosis(
    config: DiagnoseConfig,
    argv: list[str],
    progress: ProgressCallback | None = None,
    prepared: tuple[PayloadPool, Plan] | None = None,
) -> tuple[dict[str, Any], int]:
    """Run a whole diagnosis and write its reports; returns (report, exit code).

    ``prepared`` is :func:`prepare`'s result when the caller already has it: the payload pool can
    be a gigabyte read from a directory, and is built once.
    """
    pool, plan = prepared if prepared is not None else prepare(config)
    session = Session(config, argv, pool, plan, progress)
    try:
        # uvloop when available: several times cheaper per request for the fast engine.
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            run = runner.run(session.run())
    except KeyboardInterrupt:
        run = session.run_result
        run.interrupted = True
        run.ended_at = run.ended_at or _now_iso()
    # Whatever happened, what was measured is written: a further Ctrl-C (or SIGTERM) during these
    # few seconds would otherwise lose the report of a run that was just interrupted on purpose.
    with signals_ignored():
        report, code = finish(run)
        write_outputs(config, report)
    return report, code


def _client_pids(engine: Engine | None) -> list[int]:
    """This process plus any load worker processes (for the client probe's CPU sampling)."""
    pids = [os.getpid()]
    worker_pids = getattr(engine, "worker_pids", None)
    if worker_pids is not None:
        pids.extend(worker_pids())
    return pids


def drop_first_window(section: Any, path: str, step: int) -> None:
    """Remove the first window of (path, step) from a probe's section, in place: the attempt
    that was measured again (windows are listed in the order they ran)."""
    windows = section.get("windows") if isinstance(section, dict) else None
    if not isinstance(windows, list):
        return
    for i, w in enumerate(windows):
        if isinstance(w, dict) and w.get("path") == path and w.get("step") == step:
            del windows[i]
            return


def baseline_summary(path: str, results: list[StepResult]) -> dict[str, Any]:
    """report.json ``probes.baseline``: what the baseline sent and how long it took."""
    records = [r.records for r in results]
    recs = np.concatenate(records) if records else None
    if recs is None or not len(recs):
        return {"available": False, "reason": "no baseline request was sent", "path": path}
    ok = completed(recs) & (recs["status"] < 400)
    latency_ms = (recs["end_ns"][ok] - recs["intended_ns"][ok]) / 1e6
    return {
        "available": True,
        "path": path,
        "requests": int(len(recs)),
        "failed": int((~ok).sum()),
        "latency_ms": quick_summary(latency_ms),
    }


def _generator_windows(engine: Engine | None) -> list[dict[str, Any]]:
    """The last window's per-worker accounts, as JSON (for the client probe's window)."""
    windows = getattr(engine, "last_generators", None) or []
    return [w.as_json() for w in windows]


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
