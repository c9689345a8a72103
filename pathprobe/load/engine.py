"""The full-featured load engine on aiohttp: runs one step of one path and times every request.

Open loop: request ``i`` is due at ``start + offsets_ns[i]`` whatever happened to earlier requests
(coordinated-omission safe, like wrk2); latency is measured from that due time. Closed loop: each of
``concurrency`` users sends its next request when the previous one finished.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import errno
import socket
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Protocol

import aiohttp

from pathprobe.config import LoadProfile
from pathprobe.load.payloads import PayloadPool
from pathprobe.load.schedule import StepPlan
from pathprobe.load.store import BoundedSamples, RecordStore
from pathprobe.load.tls import TimedSSLObject, client_context
from pathprobe.model.records import RECORD_DTYPE, ErrorKind
from pathprobe.model.results import StepResult
from pathprobe.options import DEFAULT_MAX_RECORDS

# Response bodies are read and counted, never kept; above this size the request fails TOO_LARGE
# (a hostile or broken server answering 2 GB must not exhaust the client).
MAX_RESPONSE_BYTES = 256 << 20
READ_CHUNK_BYTES = 256 << 10
# Header values kept per request for hop timing and replica identity, truncated: a hostile server
# can send huge headers.
MAX_HEADER_VALUE_CHARS = 512
# Bound on requests in flight at once: a dead server must not make the client hold millions of
# pending tasks. Past it the scheduler waits, which shows up as schedule slip.
MAX_IN_FLIGHT = 50_000
LOOP_LAG_TICK_S = 0.010
# The abort check looks at the last requests only once this many have finished, so a few early
# failures do not stop a run.
ABORT_MIN_REQUESTS = 50
ABORT_CHECK_INTERVAL_S = 0.5
ABORT_WINDOW = 500
SPIN_NS = 1_000_000
# Replicas named in one step's table at most: a hostile server must not grow it forever (one that
# names a new replica per response gets -1, "unknown", past this).
MAX_REPLICAS = 1000


def abort_reason(finished: int, recent: Sequence[bool], threshold: float) -> str | None:
    """The abort rule, shared by every engine: why a step stops early (nearly everything fails:
    the service is down, or we are hurting it), or None. ``recent`` holds the outcomes (True:
    failed) of the last :data:`ABORT_WINDOW` requests; ``finished`` counts all of the step's."""
    if threshold >= 1.0 or finished < ABORT_MIN_REQUESTS or not recent:
        return None
    rate = sum(recent) / len(recent)
    if rate < threshold:
        return None
    return (
        f"stopped early: {rate:.0%} of the last {len(recent)} requests failed "
        f"(--abort-on-error-rate {threshold:g})"
    )


class _LagSink(Protocol):
    def append(self, value: int, /) -> None: ...


async def measure_loop_lag(sink: _LagSink) -> None:
    """Append, every :data:`LOOP_LAG_TICK_S`, how late a periodic timer ran (ns): how long the
    event loop was too busy to run it. Runs until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        expected = loop.time() + LOOP_LAG_TICK_S
        await asyncio.sleep(LOOP_LAG_TICK_S)
        sink.append(int(max(loop.time() - expected, 0.0) * 1e9))


@dataclass(frozen=True)
class EngineOptions:
    """What the engine keeps beside the timings, and when it gives up."""

    capture_headers: tuple[str, ...] = ()
    replica_header: str | None = None
    abort_on_error_rate: float = 1.0
    max_response_bytes: int = MAX_RESPONSE_BYTES
    max_records: int = DEFAULT_MAX_RECORDS  # rows kept per window before thinning (load.store)
    # A load worker's own seq i is the plan's seq i × seq_scale + seq_offset (for thinning).
    seq_scale: int = 1
    seq_offset: int = 0


class StepState:
    """What every engine's step keeps while it runs: its rows and exact tallies, the replicas it
    met, the outcomes the abort check reads. :func:`build_step_result` turns it into the result;
    each engine's step adds its own sending state."""

    start_ns: int  # CLOCK_MONOTONIC; set by the step as it starts, before the first request

    def __init__(
        self,
        engine: EngineBase,
        path: str,
        url: str,
        plan: StepPlan,
        fields: Sequence[str] = RECORD_DTYPE.names or (),
    ) -> None:
        self.profile = engine._profile
        self.options = engine._options
        self.path = path
        self.url = url
        self.plan = plan
        # Rows go to a store that counts every request and keeps at most max_records rows.
        self.store = record_store(self.options, fields)
        self.replica_index: dict[str, int] = {}
        # Only the last ABORT_WINDOW outcomes matter to the abort check: a bounded deque keeps
        # the send path from growing a list by one entry per request.
        self.recent: collections.deque[bool] = collections.deque(maxlen=ABORT_WINDOW)
        self.finished = 0
        self.aborted: str | None = None
        self.in_flight = 0
        self.in_flight_cap_hits = 0
        self.loop_lag: BoundedSamples[int] = BoundedSamples()


def record_store(
    options: EngineOptions, fields: Sequence[str] = RECORD_DTYPE.names or ()
) -> RecordStore:
    """The store of one step's rows: every request counted, at most ``options.max_records`` rows
    kept, numbered as this worker's share of the plan (``seq_scale``, ``seq_offset``)."""
    return RecordStore(fields, options.max_records, options.seq_scale, options.seq_offset)


def build_step_result(run: StepState, engine: str, *, interrupted: bool) -> StepResult:
    """The :class:`StepResult` of the window ``run`` ran from its ``start_ns`` (shared by
    engines); ``interrupted``: the engine's stop event was set."""
    plan = run.plan
    store = run.store
    start_ns = run.start_ns
    records = store.records()
    warmup_end = start_ns + plan.warmup_ns
    if plan.offsets_ns is not None:
        first_measured = plan.first_measured_seq
    else:
        later = records["seq"][records["intended_ns"] >= warmup_end]
        first_measured = int(later.min()) if len(later) else int(records["seq"].max(initial=-1)) + 1
    return StepResult(
        path=run.path,
        url=run.url,
        step=plan.step,
        offered_rps=plan.offered_rps,
        concurrency=plan.concurrency,
        engine=engine,
        records=records,
        first_measured_seq=first_measured,
        start_ns=start_ns,
        measured_start_ns=warmup_end,
        measured_end_ns=start_ns + plan.total_ns,
        replicas=list(run.replica_index),
        headers=store.header_columns(records, run.options.capture_headers),
        loop_lag_ns=run.loop_lag.array(),
        in_flight_cap_hits=run.in_flight_cap_hits,
        aborted=run.aborted,
        interrupted=interrupted,
        tally=store.tally,
        sample_stride=store.stride,
    )


def replica_id(index: dict[str, int], name: str) -> int:
    """The number of replica ``name`` in a step's ``index``, numbered on first sight; -1 once
    the table holds :data:`MAX_REPLICAS` names."""
    number = index.get(name)
    if number is None:
        if len(index) >= MAX_REPLICAS:
            return -1
        number = index[name] = len(index)
    return number


async def watch_errors(run: StepState) -> None:
    """Set ``run.aborted`` when :func:`abort_reason` says so, checking every
    :data:`ABORT_CHECK_INTERVAL_S` (never, when the threshold is 1). Runs until cancelled or
    aborted."""
    if run.options.abort_on_error_rate >= 1.0:
        return
    while run.aborted is None:
        await asyncio.sleep(ABORT_CHECK_INTERVAL_S)
        run.aborted = abort_reason(run.finished, run.recent, run.options.abort_on_error_rate)


@contextlib.asynccontextmanager
async def step_watchers(run: StepState) -> AsyncIterator[None]:
    """While the block runs, measure the loop's lag into ``run.loop_lag`` and watch the error
    rate (:func:`watch_errors`); both tasks are cancelled and awaited when it ends."""
    tasks = (
        asyncio.create_task(measure_loop_lag(run.loop_lag)),
        asyncio.create_task(watch_errors(run)),
    )
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def drain(tasks: set[asyncio.Task[None]], stop: asyncio.Event) -> None:
    """Await in-flight requests (each ends by its own timeout); once ``stop`` is set, cancel the
    rest and wait for them to unwind."""
    if not tasks:
        return
    stop_wait = asyncio.create_task(stop.wait())
    pending: set[asyncio.Task[Any]] = set(tasks)
    while pending:
        done, pending = await asyncio.wait(
            pending | {stop_wait}, return_when=asyncio.FIRST_COMPLETED
        )
        pending.discard(stop_wait)
        if stop_wait in done:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            break
    stop_wait.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await stop_wait


class RequestTasks(StepState):
    """A step that sends each request as a task of its own (the aiohttp and gRPC engines), run
    by :func:`run_open_loop` or :func:`run_closed_loop`."""

    async def send_request(self, seq: int, intended_ns: int | None) -> None:
        """Send request ``seq`` and record it; ``intended_ns`` None (closed loop): now."""
        raise NotImplementedError

    async def send_plan(self, stop: asyncio.Event) -> None:
        """Start the step's clock now and send its plan, open or closed loop, with the loop lag
        measured and the error rate watched; returns when every request has ended (cancelled
        once ``stop`` is set)."""
        self.start_ns = time.monotonic_ns()
        self.store.begin(self.start_ns + self.plan.warmup_ns, self.start_ns + self.plan.total_ns)
        async with step_watchers(self):
            if self.plan.offsets_ns is not None:
                await run_open_loop(self, stop)
            else:
                await run_closed_loop(self, stop)


async def run_open_loop(run: RequestTasks, stop: asyncio.Event) -> None:
    """Send request ``i`` at ``run.start_ns + offsets_ns[i]`` whatever became of the earlier ones,
    until the plan is sent, ``stop`` is set or the step aborted; then drain what is in flight.
    Past :data:`MAX_IN_FLIGHT` the schedule waits (and counts ``in_flight_cap_hits``)."""
    offsets = run.plan.offsets_ns
    assert offsets is not None
    start = run.start_ns
    tasks: set[asyncio.Task[None]] = set()
    i = 0
    n = len(offsets)
    while i < n and not stop.is_set() and run.aborted is None:
        now = time.monotonic_ns()
        due = start + int(offsets[i])
        if due > now:
            # The event loop rounds timeouts up to the next millisecond, which would make
            # every send up to 1 ms late. Sleep to within SPIN_NS of the due time, then
            # yield (sleep(0)) until it: a slip well under 0.1 ms for ≤ 1 ms of yielding.
            remaining = due - now
            await asyncio.sleep((remaining - SPIN_NS) / 1e9 if remaining > SPIN_NS else 0)
            continue
        if run.in_flight >= MAX_IN_FLIGHT:
            run.in_flight_cap_hits += 1
            await asyncio.sleep(0.001)
            continue
        # Send everything that is due now, then yield to the loop.
        while i < n and start + int(offsets[i]) <= now and run.in_flight < MAX_IN_FLIGHT:
            task = asyncio.create_task(run.send_request(i, start + int(offsets[i])))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.sleep(0)
    await drain(tasks, stop)


async def run_closed_loop(run: RequestTasks, stop: asyncio.Event) -> None:
    """``plan.concurrency`` users, each sending its next request when the previous one ended,
    until the step's end, ``stop`` or an abort; ``seq`` numbers the requests in sending order."""
    deadline = run.start_ns + run.plan.total_ns
    counter = iter(range(10**12))

    async def user() -> None:
        while time.monotonic_ns() < deadline and not stop.is_set():
            if run.aborted is not None:
                return
            await run.send_request(next(counter), None)

    users = [asyncio.create_task(user()) for _ in range(run.plan.concurrency or 1)]
    await drain(set(users), stop)


@dataclass
class _Timing:
    """Filled by the trace hooks during one request."""

    headers_sent_ns: int = -1
    conn_wait_ns: int = 0
    connect_start_ns: int = -1
    connect_ns: int = -1
    tls_ns: int = -1


# The request being sent by the current task: the connector reads it to note the TLS handshake
# time of a connection it just created for that request.
_CURRENT_TIMING: contextvars.ContextVar[_Timing | None] = contextvars.ContextVar(
    "pathprobe_timing", default=None
)


class _TimingConnector(aiohttp.TCPConnector):
    """A TCPConnector that records each new connection's TLS handshake time.

    aiohttp creates a connection inside the task of the request that needs it, so the request's
    :class:`_Timing` is in the context; the handshake time comes from :class:`TimedSSLObject`.
    (The response's connection cannot be used for this: aiohttp releases it as soon as a small
    body has been read.)
    """

    async def _create_connection(self, *args: Any, **kwargs: Any) -> Any:
        proto = await super()._create_connection(*args, **kwargs)
        timing = _CURRENT_TIMING.get()
        transport = getattr(proto, "transport", None)
        if timing is not None and transport is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            if isinstance(ssl_object, TimedSSLObject):
                timing.tls_ns = ssl_object.handshake_ns
        return proto


def _trace_config() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()

    async def headers_sent(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
        # The request reached a connection. (aiohttp's connection-queued hooks fire once per
        # request even when a woken waiter loses the free connection and waits again, so they
        # under-count pool waits; the moment the headers went out does not.)
        ctx.trace_request_ctx.headers_sent_ns = time.monotonic_ns()

    async def create_start(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
        ctx.trace_request_ctx.connect_start_ns = time.monotonic_ns()

    async def create_end(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
        timing: _Timing = ctx.trace_request_ctx
        timing.connect_ns = time.monotonic_ns() - timing.connect_start_ns

    trace.on_request_headers_sent.append(headers_sent)
    trace.on_connection_create_start.append(create_start)
    trace.on_connection_create_end.append(create_end)
    return trace


def classify_exception(exc: BaseException) -> ErrorKind:
    """Map a client exception to an :class:`ErrorKind`."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ErrorKind.CONNECT_TIMEOUT
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError | TimeoutError):
        return ErrorKind.TIMEOUT
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return ErrorKind.TLS
    if isinstance(exc, ssl.SSLError):
        return ErrorKind.TLS
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return ErrorKind.DNS
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, socket.gaierror):
            return ErrorKind.DNS
        if isinstance(os_error, ConnectionRefusedError) or os_error.errno == errno.ECONNREFUSED:
            return ErrorKind.REFUSED
        if isinstance(os_error, ssl.SSLError):
            return ErrorKind.TLS
        return ErrorKind.OTHER
    if isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError):
        return ErrorKind.RESET
    if isinstance(exc, aiohttp.ClientOSError):
        if exc.errno in (errno.ECONNRESET, errno.EPIPE):
            return ErrorKind.RESET
        if exc.errno == errno.ECONNREFUSED:
            return ErrorKind.REFUSED
        return ErrorKind.OTHER
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return ErrorKind.PROTOCOL
    return ErrorKind.OTHER


class _ResponseTooLarge(Exception):
    pass


class EngineBase:
    """What every single-process engine is made of: the load profile, the payloads, the options
    and the event that stops a step early (set by the session on Ctrl-C; an engine made without
    one has its own, never set)."""

    def __init__(
        self,
        profile: LoadProfile,
        pool: PayloadPool,
        options: EngineOptions,
        stop: asyncio.Event | None = None,
    ) -> None:
        self._profile = profile
        self._pool = pool
        self._options = options
        self._stop = stop or asyncio.Event()


class AiohttpEngine(EngineBase):
    """Runs steps against one URL with one aiohttp session (one connection pool per path)."""

    name = "aiohttp"

    def __init__(
        self,
        profile: LoadProfile,
        pool: PayloadPool,
        options: EngineOptions,
        stop: asyncio.Event | None = None,
    ) -> None:
        super().__init__(profile, pool, options, stop)
        self._ssl = client_context(profile.tls)
        self._base_headers = dict(profile.headers)

    async def run_step(self, path: str, url: str, plan: StepPlan) -> StepResult:
        """Send ``plan`` to ``url``; returns when every request finished or timed out."""
        run = _StepRun(self, path, url, plan)
        return await run.run()


class _StepRun(RequestTasks):
    """The state of one step in flight."""

    def __init__(self, engine: AiohttpEngine, path: str, url: str, plan: StepPlan) -> None:
        super().__init__(engine, path, url, plan)
        self.engine = engine

    async def run(self) -> StepResult:
        profile = self.profile
        connector = _TimingConnector(
            limit=profile.connections,
            force_close=not profile.keepalive,
            ssl=self.engine._ssl,
            ttl_dns_cache=300,
            enable_cleanup_closed=False,
        )
        timeout = aiohttp.ClientTimeout(
            total=profile.timeout_s, sock_connect=profile.connect_timeout_s
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            trace_configs=[_trace_config()],
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
            headers={"User-Agent": "pathprobe"},
            trust_env=False,  # proxy env vars must not add a hop the user did not ask for
        )
        self.session = session
        try:
            await self.send_plan(self.engine._stop)
        finally:
            await session.close()
        return build_step_result(self, AiohttpEngine.name, interrupted=self.engine._stop.is_set())

    async def send_request(self, seq: int, intended_ns: int | None) -> None:
        """Send request ``seq``; ``intended_ns`` None (closed loop) means "now"."""
        self.in_flight += 1
        payload_idx = self.plan.payload_for(seq)
        payload = self.engine._pool.payloads[payload_idx] if payload_idx >= 0 else None
        headers = dict(self.engine._base_headers)
        body: bytes | None = None
        if payload is not None:
            body = payload.body
            headers.setdefault("Content-Type", payload.content_type)
        timing = _Timing()
        _CURRENT_TIMING.set(timing)
        status = 0
        error = ErrorKind.NONE
        bytes_in = 0
        ttfb_ns = -1
        first_byte_ns = -1
        replica = -1
        captured: list[str | None] | None = None
        actual_ns = time.monotonic_ns()
        if intended_ns is None:
            intended_ns = actual_ns
        try:
            async with self.session.request(
                self.profile.method,
                self.url,
                data=body,
                headers=headers,
                trace_request_ctx=timing,
                allow_redirects=False,
            ) as resp:
                first_byte_ns = time.monotonic_ns()
                status = resp.status
                replica = self._replica(resp)
                if self.options.capture_headers:
                    captured = [
                        _clip(resp.headers.get(name)) for name in self.options.capture_headers
                    ]
                bytes_in = await self._read_body(resp)
        except asyncio.CancelledError:
            error = ErrorKind.CANCELLED
        except _ResponseTooLarge:
            error = ErrorKind.TOO_LARGE
            status = 0
        except Exception as exc:  # every failure is a measurement, never a crash
            error = classify_exception(exc)
            status = 0
        end_ns = time.monotonic_ns()
        if timing.headers_sent_ns >= 0:
            # Pool wait = dispatch → headers sent, less any connection set-up (which belongs to
            # the service time).
            timing.conn_wait_ns = max(
                timing.headers_sent_ns - actual_ns - max(timing.connect_ns, 0), 0
            )
        if first_byte_ns >= 0:
            ttfb_ns = first_byte_ns - actual_ns - timing.conn_wait_ns
        tls_ns = timing.tls_ns if timing.connect_ns >= 0 else -1
        self.in_flight -= 1
        failed = error != ErrorKind.NONE and error != ErrorKind.CANCELLED or status >= 500
        self.finished += 1
        self.recent.append(failed)
        connect_ns = timing.connect_ns
        if connect_ns >= 0 and tls_ns >= 0:
            connect_ns = max(connect_ns - tls_ns, 0)
        self.store.add(
            (
                seq, intended_ns, actual_ns, timing.conn_wait_ns, connect_ns, tls_ns, ttfb_ns,
                end_ns, status, int(error), len(body) if body is not None else 0, bytes_in,
                payload_idx, replica,
            ),
            captured,
        )  # fmt: skip

    async def _read_body(self, resp: aiohttp.ClientResponse) -> int:
        total = 0
        limit = self.options.max_response_bytes
        while True:
            chunk = await resp.content.read(READ_CHUNK_BYTES)
            if not chunk:
                return total
            total += len(chunk)
            if total > limit:
                resp.close()
                raise _ResponseTooLarge

    def _replica(self, resp: aiohttp.ClientResponse) -> int:
        name: str | None = None
        if self.options.replica_header:
            name = _clip(resp.headers.get(self.options.replica_header), 64)
        if name is None and resp.connection is not None and resp.connection.transport is not None:
            peer = resp.connection.transport.get_extra_info("peername")
            if isinstance(peer, tuple) and len(peer) >= 2:
                name = f"{peer[0]}:{peer[1]}"
        if name is None:
            return -1
        index = self.replica_index.get(name)
        if index is None:
            if len(self.replica_index) >= MAX_REPLICAS:  # inline: once per response
                return -1
            index = self.replica_index[name] = len(self.replica_index)
        return index


def _clip(value: str | None, limit: int = MAX_HEADER_VALUE_CHARS) -> str | None:
    if value is None:
        return None
    return value if len(value) <= limit else value[:limit]
