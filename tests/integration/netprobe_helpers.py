"""Helpers for the network-probe integration tests: an exact-byte HTTP/1.1 client, a small server
script, and a network namespace with a veth pair (``ppnet-…``, 10.213.250.0/24)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent

# A raw asyncio HTTP/1.1 server: answers every request after DELAY_MS with a BODY_BYTES body,
# keep-alive. Run with: python -c SERVER_SCRIPT HOST PORT DELAY_MS BODY_BYTES
SERVER_SCRIPT = r"""
import asyncio, sys
host, port = sys.argv[1], int(sys.argv[2])
delay_ms, body_bytes = float(sys.argv[3]), int(sys.argv[4])
body = b"x" * body_bytes
head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n"
resp = head % len(body) + body

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            if delay_ms:
                await asyncio.sleep(delay_ms / 1000)
            writer.write(resp)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(handle, host, port, backlog=512)
    print("READY", server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(600)  # bounded: the test kills it long before

asyncio.run(main())
"""


@dataclass
class ClientTotals:
    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    ttfb_s: list[float] = field(default_factory=list)


async def _one_connection(
    host: str, port: int, n: int, body: bytes, totals: ClientTotals, timeout_s: float
) -> None:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    try:
        for i in range(n):
            req = (
                f"POST /r{i} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            writer.write(req)
            await writer.drain()
            t0 = time.perf_counter()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
            totals.ttfb_s.append(time.perf_counter() - t0)
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            rest = await asyncio.wait_for(reader.readexactly(length), timeout_s)
            totals.requests += 1
            totals.bytes_sent += len(req)
            totals.bytes_received += len(head) + len(rest)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def drive(
    host: str, port: int, *, connections: int, per_connection: int, body: bytes = b"",
    timeout_s: float = 20.0,
) -> ClientTotals:  # fmt: skip
    """``connections`` keep-alive connections, each sending ``per_connection`` requests one at a
    time; returns the exact bytes written and read (HTTP headers included)."""
    totals = ClientTotals()
    await asyncio.gather(
        *(
            _one_connection(host, port, per_connection, body, totals, timeout_s)
            for _ in range(connections)
        )
    )
    return totals


@contextlib.contextmanager
def server_process(
    host: str, port: int, delay_ms: float, body_bytes: int, netns: str | None = None
) -> Iterator[int]:
    """Start :data:`SERVER_SCRIPT` (inside ``netns`` if given); yield its port; always kill it."""
    argv = [sys.executable, "-c", SERVER_SCRIPT, host, str(port), str(delay_ms), str(body_bytes)]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(
                f"server did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
            )
        yield int(line.split()[1])
    finally:
        proc.kill()
        proc.communicate(timeout=10)  # reaps and closes the pipes


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


@dataclass(frozen=True)
class Netns:
    name: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.name, *argv, check=check)


@contextlib.contextmanager
def netns() -> Iterator[Netns]:
    """A namespace ``ppnet-<pid>`` joined to the host by a veth pair in 10.213.250.0/24,
    with ``tcp_autocorking`` off inside. Always deleted (which also removes its iptables rules)."""
    tag = f"{os.getpid() % 100000}"
    ns = Netns(f"ppnet-{tag}", f"ppnh{tag}", f"ppnn{tag}", "10.213.250.1", "10.213.250.2")
    try:
        sh("ip", "netns", "add", ns.name)
        sh("ip", "link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if)
        sh("ip", "link", "set", ns.ns_if, "netns", ns.name)
        sh("ip", "addr", "add", f"{ns.host_ip}/24", "dev", ns.host_if)
        sh("ip", "link", "set", ns.host_if, "up")
        ns.run("ip", "addr", "add", f"{ns.ns_ip}/24", "dev", ns.ns_if)
        ns.run("ip", "link", "set", ns.ns_if, "up")
        ns.run("ip", "link", "set", "lo", "up")
        # NFQUEUE holds a server's packets; without this a second write waits behind the first.
        ns.run("sysctl", "-q", "-w", "net.ipv4.tcp_autocorking=0")
        yield ns
    finally:
        sh("ip", "link", "del", ns.host_if, check=False)
        sh("ip", "netns", "del", ns.name, check=False)


@contextlib.contextmanager
def nfq_delay(ns: Netns, queue: int, delay_ms: float, match: list[str]) -> Iterator[None]:
    """Delay packets matching ``match`` (iptables OUTPUT matchers inside ``ns``) by ``delay_ms``
    with :mod:`nfq_delayer`, a subprocess inside the namespace; rule and process always removed."""
    rule = ["-p", "tcp", *match, "-j", "NFQUEUE", "--queue-num", str(queue)]
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns.name, sys.executable, str(HERE / "nfq_delayer.py"),
         str(queue), str(delay_ms)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(
                f"delayer did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
            )
        ns.run("iptables", "-A", "OUTPUT", *rule)
        yield
    finally:
        ns.run("iptables", "-D", "OUTPUT", *rule, check=False)
        proc.kill()
        proc.communicate(timeout=10)  # reaps and closes the pipes
