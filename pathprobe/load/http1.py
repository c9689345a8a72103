"""The fast engine's HTTP/1.1: request bytes built once, and one asyncio Protocol per connection.

:class:`Conn` carries the request currently on its connection (no pipelining) and parses the
response with httptools; what to do with a finished, failed or lost request is its
:class:`ConnOwner`'s business (:mod:`pathprobe.load.fast`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol
from urllib.parse import urlsplit

import httptools

from pathprobe.config import LoadProfile
from pathprobe.errors import UsageError
from pathprobe.load.engine import MAX_HEADER_VALUE_CHARS
from pathprobe.load.payloads import PayloadPool
from pathprobe.model.records import ErrorKind

# A response whose header block grows beyond this is garbage (aiohttp's own limits are similar).
MAX_HEADER_BYTES = 64 << 10
# Bodies up to this size are sent in the same write as the request head.
JOIN_BODY_BYTES = 64 << 10


def build_requests(
    profile: LoadProfile, url: str, pool: PayloadPool
) -> tuple[list[tuple[bytes, ...]], bytes]:
    """The wire bytes of every request: one entry per payload, plus the request without a body.

    Headers match what the aiohttp engine sends (``User-Agent: pathprobe``, ``Accept: */*``,
    ``Accept-Encoding: gzip, deflate``) so both engines ask the server for the same work.
    """
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc.rsplit("@", 1)[-1]
    if parts.port == 80:
        host = host.rsplit(":", 1)[0]
    base: dict[str, tuple[str, str]] = {}
    for name, value in (
        ("Host", host),
        ("User-Agent", "pathprobe"),
        ("Accept", "*/*"),
        ("Accept-Encoding", "gzip, deflate"),
        *profile.headers,
    ):
        if any(ch in name or ch in value for ch in "\r\n\0"):
            raise UsageError(f"header {name!r} contains a line break")
        base[name.lower()] = (name, value)

    def head(body: bytes | None, content_type: str | None) -> bytes:
        headers = dict(base)
        if body is not None and content_type and "content-type" not in headers:
            headers["content-type"] = ("Content-Type", content_type)
        headers.pop("content-length", None)
        lines = [f"{profile.method} {target} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in headers.values()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        elif profile.method in ("POST", "PUT", "PATCH"):
            lines.append("Content-Length: 0")
        if not profile.keepalive:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    requests: list[tuple[bytes, ...]] = []
    for payload in pool.payloads:
        h = head(payload.body, payload.content_type)
        if len(payload.body) <= JOIN_BODY_BYTES:
            requests.append((h + payload.body,))
        else:
            requests.append((h, payload.body))
    return requests, head(None, None)


class ConnOwner(Protocol):
    """What a connection needs from the step it serves (the fast engine's step run)."""

    requests: list[tuple[bytes, ...]]
    body_sizes: list[int]
    bare_request: bytes
    max_response_bytes: int
    wanted_headers: set[bytes]

    def complete(self, conn: Conn) -> None: ...
    def fail(self, conn: Conn, kind: ErrorKind) -> None: ...
    def lost(self, conn: Conn, exc: Exception | None) -> None: ...
    def drop(self, conn: Conn, graceful: bool = False) -> None: ...


class Conn(asyncio.Protocol):
    """One keep-alive connection and the request currently on it (at most one: no pipelining)."""

    def __init__(self, run: ConnOwner) -> None:
        self.run = run
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.dead = False
        self.eof = False
        self.busy = False
        self.replica = -2  # not looked up yet; the replica header wins when present
        self.peer: str | None = None
        self.seq = 0
        self.intended_ns = 0
        self.actual_ns = 0
        self.conn_wait_ns = 0
        self.connect_ns = -1
        self.payload_idx = -1
        self.bytes_out = 0
        self.first_ns = -1
        self.read_bytes = 0
        self.bytes_in = 0
        self.status = 0
        self.headers_done = False
        self.complete = False
        self.length_known = False
        self.keep_alive = False
        self.fault = ErrorKind.NONE
        self.captured: dict[bytes, str] | None = None

    # --- the request ---------------------------------------------------------------------------

    def send(
        self, seq: int, intended_ns: int, actual_ns: int, conn_wait_ns: int, connect_ns: int,
        payload_idx: int,
    ) -> None:  # fmt: skip
        self.busy = True
        self.seq = seq
        self.intended_ns = intended_ns
        self.actual_ns = actual_ns
        self.conn_wait_ns = conn_wait_ns
        self.connect_ns = connect_ns
        self.payload_idx = payload_idx
        self.first_ns = -1
        self.read_bytes = 0
        self.bytes_in = 0
        self.status = 0
        self.headers_done = False
        self.complete = False
        self.length_known = False
        self.fault = ErrorKind.NONE
        self.captured = None
        run = self.run
        assert self.transport is not None
        if payload_idx >= 0:
            parts = run.requests[payload_idx]
            self.bytes_out = run.body_sizes[payload_idx]
            if len(parts) == 1:
                self.transport.write(parts[0])
            else:
                self.transport.writelines(parts)
        else:
            self.bytes_out = 0
            self.transport.write(run.bare_request)

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have the same methods.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            # Bytes nobody asked for: the connection's framing can no longer be trusted.
            self.run.drop(self)
            return
        if self.first_ns < 0:
            self.first_ns = time.monotonic_ns()
        try:
            self.parser.feed_data(data)
        except Exception:  # HttpParserError, or _Stop re-raised from a callback
            self.run.fail(self, self.fault or ErrorKind.PROTOCOL)
            return
        if not self.headers_done:
            self.read_bytes += len(data)
            if self.read_bytes > MAX_HEADER_BYTES:  # a header block without end
                self.run.fail(self, ErrorKind.PROTOCOL)
                return
        if self.fault:
            self.run.fail(self, self.fault)
        elif self.complete:
            self.run.complete(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.run.lost(self, exc)

    # --- httptools callbacks --------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        # Only the framing headers matter here (called for every header: keep it cheap).
        size = len(name)
        if size == 14 or size == 17:
            key = name.lower()
            if key == b"content-length" or key == b"transfer-encoding":
                self.length_known = True

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.status = self.parser.get_status_code()
        # Asked now: once the message completes the parser has reset for the next one.
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.bytes_in += len(body)
        if self.bytes_in > self.run.max_response_bytes:
            self.fault = ErrorKind.TOO_LARGE
            raise _Stop

    def on_message_complete(self) -> None:
        self.complete = True


class CapturingConn(Conn):
    """A connection that also keeps the first value of each wanted response header."""

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower()
        if key == b"content-length" or key == b"transfer-encoding":
            self.length_known = True
        if key in self.run.wanted_headers:
            if self.captured is None:
                self.captured = {}
            if key not in self.captured:  # the first value, as aiohttp's headers.get() gives
                text = value.decode("latin-1")
                self.captured[key] = text[:MAX_HEADER_VALUE_CHARS]


class _Stop(Exception):
    """Raised inside a parser callback to stop parsing; httptools re-raises it from feed_data."""
