"""The high-rate load engine: plain HTTP/1.1 over asyncio Protocols with the httptools parser.

It produces exactly the records of :class:`~pathprobe.load.engine.AiohttpEngine` (same fields, same
meaning, same error kinds) at a small fraction of the CPU per request, so that the client is not
the bottleneck (issue 7). What it gives up: TLS (``https://`` needs the aiohttp engine), ``HEAD``
requests (the response parser cannot know that such a response has no body) and credentials in
the URL; :func:`check_supported` says so, and ``--engine auto`` then picks aiohttp.

How it stays cheap: one Protocol object per connection (:mod:`pathprobe.load.http1`) carries the
state of the request on it (no task, future or object per request); rows are plain tuples, batched
into numpy by :class:`~pathprobe.load.store.RecordStore`; timeouts are checked by a periodic sweep
rather than one timer per request.

Open-loop sends are timed with a ``timerfd`` (:mod:`pathprobe.load.timers`; Linux, absolute
CLOCK_MONOTONIC, no timer slack): the event loops' own timers round to the millisecond, which
would add up to a millisecond of schedule slip to every latency. Under load, completions also send
whatever has fallen due.

Timing of one request (all ``time.monotonic_ns()``): ``actual`` when the engine takes the request
up (before waiting for a connection, as the aiohttp engine does); ``conn_wait`` the time spent
waiting for a free connection of the pool; ``connect`` the TCP connect when the request opened a
new connection (``-1`` on reuse); ``ttfb`` from when a connection was free (``actual +
conn_wait``) to the first response byte; ``end`` the last response byte or when the failure was
seen.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from pathprobe.config import LoadProfile
from pathprobe.errors import UsageError
from pathprobe.load.engine import (
    ABORT_CHECK_INTERVAL_S,
    LOOP_LAG_TICK_S,
    MAX_IN_FLIGHT,
    EngineBase,
    StepState,
    abort_reason,
    build_step_result,
    replica_id,
)
from pathprobe.load.http1 import CapturingConn, Conn, build_requests
from pathprobe.load.schedule import StepPlan
from pathprobe.load.timers import make_precise_timer
from pathprobe.model.records import ErrorKind
from pathprobe.model.results import StepResult

# Offsets are turned into absolute due times this many at a time (a Python list of a million
# ints would cost ~36 MB).
DUE_CHUNK = 4096
# The column order of a row tuple (tls_ns is always -1: no TLS here).
_ROW_FIELDS = (
    "seq", "intended_ns", "actual_ns", "conn_wait_ns", "connect_ns", "ttfb_ns", "end_ns",
    "status", "error", "bytes_out", "bytes_in", "payload_idx", "replica",
)  # fmt: skip


def check_supported(url: str, profile: LoadProfile) -> str | None:
    """Why the fast engine cannot run ``url`` with ``profile``, or ``None`` if it can."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return f"the fast engine speaks plain http:// only, not {parts.scheme}:// (use aiohttp)"
    if profile.method == "HEAD":
        return "the fast engine does not send HEAD requests (use aiohttp)"
    if parts.username is not None:
        return "the fast engine does not send credentials from the URL (use aiohttp)"
    return None


class FastEngine(EngineBase):
    """Runs steps against one plain-HTTP URL; one connection pool of ``profile.connections``."""

    name = "fast"

    async def run_step(
        self, path: str, url: str, plan: StepPlan, start_ns: int | None = None
    ) -> StepResult:
        """Send ``plan`` to ``url``; returns when every request finished, failed or timed out.

        ``start_ns`` (CLOCK_MONOTONIC) lets several worker processes share one schedule; by
        default the step starts now.
        """
        reason = check_supported(url, self._profile)
        if reason is not None:
            raise UsageError(reason)
        run = _StepRun(self, path, url, plan)
        return await run.run(start_ns)


class _StepRun(StepState):
    """The state of one step in flight: the pool, the schedule, the rows."""

    def __init__(self, engine: FastEngine, path: str, url: str, plan: StepPlan) -> None:
        super().__init__(engine, path, url, plan, _ROW_FIELDS)
        self.engine = engine
        profile = self.profile
        options = self.options
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.requests, self.bare_request = build_requests(profile, url, engine._pool)
        self.body_sizes = [len(p.body) for p in engine._pool.payloads]
        self.payload_idx = plan.payload_idx.tolist() if len(plan.payload_idx) else []
        self.max_response_bytes = options.max_response_bytes
        names = list(options.capture_headers)
        if options.replica_header:
            names.append(options.replica_header)
        self.wanted_headers = {n.lower().encode("latin-1") for n in names}
        self.capture_keys = [n.lower().encode("latin-1") for n in options.capture_headers]
        self.replica_key = (
            options.replica_header.lower().encode("latin-1") if options.replica_header else None
        )
        self.keepalive = profile.keepalive
        self.conn_class: Callable[[], Conn] = (
            (lambda: CapturingConn(self)) if self.wanted_headers else (lambda: Conn(self))
        )
        self.limit = profile.connections
        self.timeout_ns = int(profile.timeout_s * 1e9)
        self.connect_timeout_s = profile.connect_timeout_s
        # The pool.
        self.idle: list[Conn] = []
        self.conns: set[Conn] = set()
        self.open_count = 0  # connecting or open
        self.pending: collections.deque[tuple[int, int, int]] = collections.deque()
        self.connecting: set[asyncio.Task[None]] = set()
        # Rows (the store and the tallies are StepState's).
        self.submitted = 0
        self.track_errors = options.abort_on_error_rate < 1.0
        self.cancelled = False
        # Schedule.
        self.open_loop = plan.offsets_ns is not None
        self.next_i = 0
        self.n = len(plan.offsets_ns) if plan.offsets_ns is not None else 0
        self.due: list[int] = []
        self.due_base = 0
        self.next_due_ns = 1 << 62
        self.sending_done = False
        self.users = 0
        self.deadline_ns = 0

    # --- running -----------------------------------------------------------------------------

    async def run(self, start_ns: int | None) -> StepResult:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.done: asyncio.Future[None] = loop.create_future()
        now = time.monotonic_ns()
        self.start_ns = start = now if start_ns is None else start_ns
        self.store.begin(start + self.plan.warmup_ns, start + self.plan.total_ns)
        stop = self.engine._stop
        stop_task = asyncio.ensure_future(stop.wait())
        stop_task.add_done_callback(lambda _t: self.cancel_all())
        self.timer = make_precise_timer(loop, self.send_due)
        self._lag_expected_ns = now + int(LOOP_LAG_TICK_S * 1e9)
        self._periodic: dict[str, asyncio.TimerHandle] = {
            "lag": loop.call_later(LOOP_LAG_TICK_S, self._lag_tick),
            "sweep": loop.call_later(self._sweep_interval_s(), self._sweep),
        }
        if self.track_errors:
            self._periodic["errors"] = loop.call_later(ABORT_CHECK_INTERVAL_S, self._check_errors)
        try:
            if stop.is_set():
                self.sending_done = True
                self.cancelled = True
            elif self.open_loop:
                self._load_due(0)
                self.next_due_ns = self.due[0] if self.due else 1 << 62
                if self.n == 0:
                    self.sending_done = True
                else:
                    self.timer.arm(self.next_due_ns)
            else:
                concurrency = self.plan.concurrency or 1
                self.deadline_ns = start + self.plan.total_ns
                if start > now:
                    await asyncio.sleep((start - now) / 1e9)
                self.sending_done = True  # closed loop: users keep sending until the deadline
                self.users = concurrency
                for _ in range(concurrency):
                    self._user_next()
            self._check_done()
            await self.done
        finally:
            self.sending_done = True
            self.timer.close()
            for handle in self._periodic.values():
                handle.cancel()
            stop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop_task
            for task in list(self.connecting):
                task.cancel()
            for conn in list(self.conns):
                self.drop(conn, graceful=not conn.busy)
        return self._result()

    def _load_due(self, i: int) -> None:
        offsets = self.plan.offsets_ns
        assert offsets is not None
        self.due_base = i
        self.due = (offsets[i : i + DUE_CHUNK] + self.start_ns).tolist()

    def send_due(self) -> None:
        """Send every open-loop request that is due; arm the timer for the next one."""
        if self.sending_done:
            return
        if self.aborted is not None or self.cancelled:
            self.sending_done = True
            self._check_done()
            return
        now = time.monotonic_ns()
        i = self.next_i
        n = self.n
        due = self.due
        base = self.due_base
        while i < n:
            j = i - base
            if j >= len(due):
                self._load_due(i)
                due = self.due
                base = i
                j = 0
            at = due[j]
            if at > now:
                self.next_i = i
                self.next_due_ns = at
                self.timer.arm(at)
                return
            if self.in_flight >= MAX_IN_FLIGHT:
                # Past the cap the schedule waits; this shows up as slip, counted here.
                self.in_flight_cap_hits += 1
                self.next_i = i
                self.next_due_ns = now + 1_000_000
                self.timer.arm(self.next_due_ns)
                return
            self.submit(i, at, now)
            i += 1
            now = time.monotonic_ns()
        self.next_i = i
        self.next_due_ns = 1 << 62
        self.sending_done = True
        self._check_done()

    def _user_next(self) -> None:
        """Closed loop: one user sends its next request, or stops at the deadline."""
        now = time.monotonic_ns()
        if (
            now >= self.deadline_ns
            or self.cancelled
            or self.aborted is not None
            or self.engine._stop.is_set()
        ):
            self.users -= 1
            return
        self.submit(self.submitted, now, now)

    def submit(self, seq: int, intended_ns: int, actual_ns: int) -> None:
        self.submitted += 1
        self.in_flight += 1
        pidx = self.payload_idx[seq % len(self.payload_idx)] if self.payload_idx else -1
        if self.idle:
            self.idle.pop().send(seq, intended_ns, actual_ns, 0, -1, pidx)
        elif self.open_count < self.limit:
            self._open_for(seq, intended_ns, actual_ns, pidx)
        else:
            self.pending.append((seq, intended_ns, actual_ns))

    def _open_for(self, seq: int, intended_ns: int, actual_ns: int, pidx: int) -> None:
        self.open_count += 1
        task = self.loop.create_task(self._connect(seq, intended_ns, actual_ns, pidx))
        self.connecting.add(task)
        task.add_done_callback(self.connecting.discard)

    async def _connect(self, seq: int, intended_ns: int, actual_ns: int, pidx: int) -> None:
        """Open a connection for one request (as aiohttp does when the pool has room)."""
        t0 = time.monotonic_ns()
        kind = ErrorKind.NONE
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _transport, conn = await self.loop.create_connection(
                    self.conn_class, self.host, self.port
                )
        except asyncio.CancelledError:
            kind = ErrorKind.CANCELLED
        except TimeoutError:
            kind = ErrorKind.CONNECT_TIMEOUT
        except socket.gaierror:
            kind = ErrorKind.DNS
        except OSError as exc:
            kind = ErrorKind.REFUSED if exc.errno == errno.ECONNREFUSED else ErrorKind.OTHER
        except Exception:  # every failure is a measurement; an unexpected one too
            kind = ErrorKind.OTHER
        if kind != ErrorKind.NONE:
            self.open_count -= 1
            self._row(seq, intended_ns, actual_ns, t0 - actual_ns, -1, -1, 0, kind, pidx, -1)
            self._after()
            return
        t1 = time.monotonic_ns()
        self.conns.add(conn)
        conn.peer = self._peer_name(conn)
        if self.cancelled:
            self._row(seq, intended_ns, actual_ns, t0 - actual_ns, t1 - t0, -1, 0,
                      ErrorKind.CANCELLED, pidx, -1)  # fmt: skip
            self.drop(conn)
            self._after()
            return
        conn.send(seq, intended_ns, actual_ns, max(t0 - actual_ns, 0), t1 - t0, pidx)

    def _peer_name(self, conn: Conn) -> str | None:
        assert conn.transport is not None
        peer = conn.transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            return f"{peer[0]}:{peer[1]}"
        return None

    def _conn_replica(self, conn: Conn) -> int:
        """The replica of ``conn`` by its peer address (named in the table on first use)."""
        if conn.replica == -2:
            conn.replica = (
                replica_id(self.replica_index, conn.peer) if conn.peer is not None else -1
            )
        return conn.replica

    # --- outcomes ------------------------------------------------------------------------------

    def complete(self, conn: Conn) -> None:
        """A full response arrived on ``conn``."""
        end_ns = time.monotonic_ns()
        conn.busy = False
        captured = conn.captured
        header_row: list[str | None] | None = None
        if captured is not None:
            if self.capture_keys:
                header_row = [captured.get(k) for k in self.capture_keys]
            if self.replica_key is not None and self.replica_key in captured:
                replica = replica_id(self.replica_index, captured[self.replica_key][:64])
            else:
                replica = self._conn_replica(conn)
        else:
            replica = self._conn_replica(conn)
        actual = conn.actual_ns
        wait = conn.conn_wait_ns
        self.store.add(
            (
                conn.seq, conn.intended_ns, actual, wait, conn.connect_ns,
                conn.first_ns - actual - wait, end_ns, conn.status, 0, conn.bytes_out,
                conn.bytes_in, conn.payload_idx, replica,
            ),
            header_row,
        )  # fmt: skip
        if self.track_errors:
            self.recent.append(conn.status >= 500)
        if self.keepalive and conn.keep_alive and not conn.eof:
            self._release(conn)
        else:
            self.drop(conn, graceful=True)
        self._after()

    def fail(self, conn: Conn, kind: ErrorKind) -> None:
        """The request on ``conn`` failed; the connection is closed (its framing is lost)."""
        if not conn.busy:
            self.drop(conn)
            return
        conn.busy = False
        ttfb_ns = conn.first_ns - conn.actual_ns - conn.conn_wait_ns if conn.headers_done else -1
        self._row(
            conn.seq, conn.intended_ns, conn.actual_ns, conn.conn_wait_ns, conn.connect_ns,
            ttfb_ns, conn.bytes_out, kind, conn.payload_idx, -1,
        )  # fmt: skip
        self.drop(conn)
        self._after()

    def lost(self, conn: Conn, exc: Exception | None) -> None:
        """The connection closed under us."""
        if conn.busy:
            if conn.headers_done and not conn.length_known and exc is None:
                # A close-delimited body (no Content-Length, not chunked): EOF ends it.
                conn.complete = True
                self.complete(conn)
                return
            if isinstance(exc, OSError) and exc.errno not in (errno.ECONNRESET, errno.EPIPE, None):
                kind = ErrorKind.OTHER
            elif conn.headers_done:
                kind = ErrorKind.PROTOCOL  # body cut short (aiohttp: ClientPayloadError)
            else:
                kind = ErrorKind.RESET  # closed before a full header (ServerDisconnectedError)
            self.fail(conn, kind)
            return
        self.drop(conn)
        self._dispatch_pending()
        self._check_done()

    def drop(self, conn: Conn, graceful: bool = False) -> None:
        """Forget ``conn`` and close it; its slot in the pool frees up.

        ``graceful`` after a complete response (a FIN); otherwise abort (an RST): the connection's
        framing is lost or the request was given up.
        """
        if conn.dead:
            return
        conn.dead = True
        self.open_count -= 1
        self.conns.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.transport is not None:
            if graceful:
                conn.transport.close()
            else:
                conn.transport.abort()

    def _release(self, conn: Conn) -> None:
        """``conn`` is free: it takes the longest-waiting request, or goes idle."""
        if self.pending:
            seq, intended_ns, actual_ns = self.pending.popleft()
            pidx = self.payload_idx[seq % len(self.payload_idx)] if self.payload_idx else -1
            now = time.monotonic_ns()
            conn.send(seq, intended_ns, actual_ns, now - actual_ns, -1, pidx)
        else:
            self.idle.append(conn)

    def _dispatch_pending(self) -> None:
        """Open connections for waiting requests while the pool has room."""
        while self.pending and self.open_count < self.limit and not self.cancelled:
            seq, intended_ns, actual_ns = self.pending.popleft()
            pidx = self.payload_idx[seq % len(self.payload_idx)] if self.payload_idx else -1
            self._open_for(seq, intended_ns, actual_ns, pidx)

    def _row(
        self, seq: int, intended_ns: int, actual_ns: int, conn_wait_ns: int, connect_ns: int,
        ttfb_ns: int, bytes_out: int, kind: ErrorKind, pidx: int, replica: int,
    ) -> None:  # fmt: skip
        """Record a request that ended without a (complete) response."""
        end_ns = time.monotonic_ns()
        self.store.add(
            (
                seq, intended_ns, actual_ns, conn_wait_ns, connect_ns, ttfb_ns, end_ns, 0,
                int(kind), bytes_out, 0, pidx, replica,
            )
        )  # fmt: skip
        if self.track_errors and kind != ErrorKind.CANCELLED:
            self.recent.append(True)

    def _after(self) -> None:
        """Bookkeeping after any request ended: the next send, the pool, the end of the step."""
        self.in_flight -= 1
        self.finished += 1
        if self.pending and self.open_count < self.limit:
            self._dispatch_pending()
        if self.open_loop:
            if not self.sending_done and time.monotonic_ns() >= self.next_due_ns:
                self.send_due()
        else:
            self._user_next()
        self._check_done()

    def _check_done(self) -> None:
        if (
            self.sending_done
            and self.in_flight == 0
            and (self.open_loop or self.users == 0)
            and not self.done.done()
        ):
            self.done.set_result(None)

    def cancel_all(self) -> None:
        """The stop event fired: in-flight and waiting requests end as CANCELLED."""
        if self.done.done():
            return
        self.cancelled = True
        self.sending_done = True
        for conn in list(self.conns):
            if conn.busy:
                self.fail(conn, ErrorKind.CANCELLED)
        while self.pending:
            seq, intended_ns, actual_ns = self.pending.popleft()
            pidx = self.payload_idx[seq % len(self.payload_idx)] if self.payload_idx else -1
            self._row(seq, intended_ns, actual_ns, -1, -1, -1, 0, ErrorKind.CANCELLED, pidx, -1)
            self._after()
        for task in list(self.connecting):
            task.cancel()
        self._check_done()

    # --- periodic ------------------------------------------------------------------------------

    def _lag_tick(self) -> None:
        """A periodic timer's lateness: how long the event loop was too busy to run it."""
        now = time.monotonic_ns()
        self.loop_lag.append(max(now - self._lag_expected_ns, 0))
        self._lag_expected_ns = now + int(LOOP_LAG_TICK_S * 1e9)
        self._periodic["lag"] = self.loop.call_later(LOOP_LAG_TICK_S, self._lag_tick)

    def _sweep_interval_s(self) -> float:
        return min(max(self.profile.timeout_s / 20, 0.005), 0.1)

    def _sweep(self) -> None:
        """Fail requests older than the request timeout (waiting ones too)."""
        now = time.monotonic_ns()
        limit = self.timeout_ns
        for conn in list(self.conns):
            if conn.busy and now - conn.actual_ns > limit:
                self.fail(conn, ErrorKind.TIMEOUT)
        while self.pending and now - self.pending[0][2] > limit:
            seq, intended_ns, actual_ns = self.pending.popleft()
            pidx = self.payload_idx[seq % len(self.payload_idx)] if self.payload_idx else -1
            self._row(seq, intended_ns, actual_ns, now - actual_ns, -1, -1, 0,
                      ErrorKind.TIMEOUT, pidx, -1)  # fmt: skip
            self._after()
        self._periodic["sweep"] = self.loop.call_later(self._sweep_interval_s(), self._sweep)

    def _check_errors(self) -> None:
        self.aborted = abort_reason(self.finished, self.recent, self.options.abort_on_error_rate)
        if self.aborted is not None:
            self.sending_done = True
            self._check_done()
            return
        self._periodic["errors"] = self.loop.call_later(ABORT_CHECK_INTERVAL_S, self._check_errors)

    # --- the result ----------------------------------------------------------------------------

    def _result(self) -> StepResult:
        self.store.flush()
        if self.store.tally.all_requests != self.submitted:  # a bug, not a measurement
            raise RuntimeError(
                f"fast engine: {self.store.tally.all_requests} rows for {self.submitted} requests"
            )
        return build_step_result(self, FastEngine.name, interrupted=self.engine._stop.is_set())
