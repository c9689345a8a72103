"""Small real servers that misbehave on purpose, one subprocess each (stdlib only, starts fast).

``python tests/helpers/servers.py KIND --ready-file F [--stats-file S] [--delay-ms N]
[--tls-cert C --tls-key K]`` binds ``127.0.0.1:0``, writes the port to ``F`` (atomically) and
serves until killed. With ``--stats-file`` it rewrites ``{"connections": n, "requests": n}``
there after every accepted connection and every request, so a test can prove what it was sent.

Kinds:

* ``ok``        HTTP/1.1 keep-alive, 200 with a small body after ``--delay-ms``.
* ``big``       200 with a 1 MiB body, head and body in one write (legitimate, just large).
* ``endless-headers`` a status line, then header lines forever (lazily), never a blank line.
* ``drip``      headers at once, then the body one byte every 200 ms (slowloris in reverse).
* ``fail``      HTTP/1.1 keep-alive, 503 to everything (a service in trouble).
* ``refuse``    holds a port bound but never listens: every connect is refused (port stays ours).
* ``backlog``   listening but never accepting, accept queue full: connects hang (SYNs dropped).
* ``silent``    accepts, reads the request, never answers (client timeouts).
* ``cut``       sends headers promising 1000 bytes, 10 bytes of them, then closes (truncated).
* ``garbage``   answers bytes that are not HTTP, then closes.
* ``huge``      200 with ``Content-Length: 2 GiB``, zeros streamed lazily in 64 KiB writes (never
                held in memory); stops when the client goes away.
* ``hostile``   HTML/JS in the status line, headers and body, and one oversized header value.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import ssl
import sys

HUGE_BODY_BYTES = 2 << 30
BIG_BODY_BYTES = 1 << 20
CHUNK_BYTES = 64 << 10
XSS = "<script>alert('pp-xss')</script>"
# Below aiohttp's 8190-byte header-line limit (so the response parses) but far above what the
# client keeps per header (512 characters).
OVERSIZED_HEADER_CHARS = 6000


class Stats:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self.connections = 0
        self.requests = 0

    def bump(self, connections: int = 0, requests: int = 0) -> None:
        self.connections += connections
        self.requests += requests
        if self.path:
            tmp = f"{self.path}.tmp"
            with open(tmp, "w") as fh:
                json.dump({"connections": self.connections, "requests": self.requests}, fh)
            os.replace(tmp, self.path)


async def read_request(reader: asyncio.StreamReader) -> bool:
    """Read one request (headers and a Content-Length body); False when the peer went away."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return False
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip() or 0)
    if length:
        try:
            await reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            return False
    return True


def make_handler(kind: str, stats: Stats, delay_s: float):  # type: ignore[no-untyped-def]
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats.bump(connections=1)
        try:
            while await read_request(reader):
                stats.bump(requests=1)
                if not await answer(kind, writer, delay_s):
                    break
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    return handle


async def answer(kind: str, writer: asyncio.StreamWriter, delay_s: float) -> bool:
    """Write one response; False to close the connection."""
    if kind == "ok":
        if delay_s:
            await asyncio.sleep(delay_s)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
        await writer.drain()
        return True
    if kind == "big":
        body = bytes(BIG_BODY_BYTES)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        return True
    if kind == "endless-headers":
        writer.write(b"HTTP/1.1 200 OK\r\n")
        line = b"X-Flood: " + b"<script>" * 100 + b"\r\n"
        for _ in range(HUGE_BODY_BYTES // len(line)):  # ~2 GiB of header lines, never an end
            writer.write(line)
            await writer.drain()
        return False
    if kind == "drip":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(100_000):  # one byte every 200 ms: alive, and never done in time
            writer.write(b".")
            await writer.drain()
            await asyncio.sleep(0.2)
        return False
    if kind == "fail":
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
        await writer.drain()
        return True
    if kind == "silent":
        await asyncio.sleep(3600)
        return False
    if kind == "cut":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
        await writer.drain()
        return False
    if kind == "garbage":
        writer.write(b"\x00\xff\xfeSSH-2.0-not-http\r\n\x13\x37<html>\r\n\r\n")
        await writer.drain()
        return False
    if kind == "huge":
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Length: {HUGE_BODY_BYTES}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        zeros = bytes(CHUNK_BYTES)
        for _ in range(HUGE_BODY_BYTES // CHUNK_BYTES):
            writer.write(zeros)
            await writer.drain()
        return False
    if kind == "hostile":
        body = f"<html><body>{XSS}<img src=x onerror=alert(1)></body></html>".encode()
        big = "<b>" + "A" * OVERSIZED_HEADER_CHARS + "</b>"
        head = (
            f"HTTP/1.1 200 {XSS}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Content-Type: text/html\r\n"
            f"Server: {XSS}\r\n"
            f"X-Replica: {XSS}\r\n"
            f'Server-Timing: app;desc="{XSS}";dur=1.5, big;desc="{big}"\r\n'
            f"X-Upstream-Header-Time: {big}\r\n"
            f"X-Envoy-Upstream-Service-Time: {XSS}\r\n"
            "\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        return True
    raise SystemExit(f"unknown kind {kind}")


def write_ready(path: str, port: int) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(str(port))
    os.replace(tmp, path)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind")
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--stats-file")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args()
    stats = Stats(args.stats_file)
    stats.bump()
    if args.kind == "backlog":
        # Listening, never accepting, accept queue already full: the kernel drops further SYNs,
        # so a connect hangs until the client's connect timeout.
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        port = sock.getsockname()[1]
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        await asyncio.sleep(0.5)
        write_ready(args.ready_file, port)
        await asyncio.Event().wait()
        return
    if args.kind == "refuse":
        # Bound but not listening: the kernel refuses connects, and no one else can take the port.
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        write_ready(args.ready_file, sock.getsockname()[1])
        await asyncio.Event().wait()
        return
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    server = await asyncio.start_server(
        make_handler(args.kind, stats, args.delay_ms / 1000), "127.0.0.1", 0, ssl=tls
    )
    write_ready(args.ready_file, server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    sys.exit(0)
