"""A minimal HTTP/1.1 client: the reference that engine-accuracy tests compare medians with."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np

from tests.servers.process import pinned


def reference_p50_ms(port: int, rate: float, seconds: float, connections: int = 8) -> float:
    """Median latency that a minimal client measures against the same server: one thread per
    keep-alive connection, blocking sockets, sends paced to ``rate`` in all, each timed from the
    send to the last body byte. It pays what any client pays there — the server's request
    parsing and response writing outside its own timing, loopback, waking an idle vCPU — and
    next to nothing of its own."""
    latencies: list[float] = []
    start = time.perf_counter() + 0.05
    total = int(rate * seconds)

    def one_connection(index: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock, sock.makefile("rb") as stream:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for k in range(index, total, connections):
                time.sleep(max(0.0, start + k / rate - time.perf_counter()))
                sent = time.perf_counter()
                sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                length = 0
                while (line := stream.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                stream.read(length)
                latencies.append((time.perf_counter() - sent) * 1000)

    threads = [threading.Thread(target=one_connection, args=(i,)) for i in range(connections)]
    with pinned(0):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=seconds + 30)
    return float(np.median(latencies))
