"""A local 'feature store' that answers each request after ``OOS_IO_MS`` (one thread per request,
so it is never the bottleneck itself)."""

from __future__ import annotations

import os
import socketserver
import time

DELAY_S = float(os.environ.get("OOS_IO_MS", "30")) / 1e3


class Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(64)
        time.sleep(DELAY_S)
        self.request.sendall(b"ok\n")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    port = int(os.environ.get("OOS_FEATURE_PORT", "8109"))
    Server(("127.0.0.1", port), Handler).serve_forever()
