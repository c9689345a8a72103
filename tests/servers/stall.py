"""A threaded HTTP/1.1 keep-alive server that freezes for STALL_S every PERIOD_S (the stall test).

``python -m tests.servers.stall PERIOD_S STALL_S`` prints its port on stdout, then serves until
killed. Outside a stall it answers at once; a request that arrives during a stall is held until
the stall ends (as a stop-the-world GC pause would). Under an open-loop load of any rate, a fraction
STALL_S/PERIOD_S of requests waits uniformly in (0, STALL_S]: with 5 s / 1 s the analytic latency
p90 is 0.5 s and p99 0.95 s. A closed-loop client sends nothing while it waits, so it sees far less.
"""

from __future__ import annotations

import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    period_s = float(sys.argv[1])
    stall_s = float(sys.argv[2])
    t0 = time.monotonic()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            phase = (time.monotonic() - t0) % period_s
            if phase >= period_s - stall_s:
                time.sleep(period_s - phase)
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer  # noqa: N815 - http.server's naming

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024

        def handle_error(self, request: object, client_address: object) -> None:
            return  # a client that resets its connection at the end of a run is not news

    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
