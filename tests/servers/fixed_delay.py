"""A threaded HTTP/1.1 keep-alive server that answers every request after a fixed delay.

``python -m tests.servers.fixed_delay DELAY_S`` prints its port on stdout, then serves until
killed. time.sleep is used (not asyncio.sleep, which rounds timeouts up to the millisecond) so the
delay is exact to well under a millisecond.
"""

from __future__ import annotations

import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    delay_s = float(sys.argv[1])

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; without this, Nagle + delayed ACK add 40 ms.
        disable_nagle_algorithm = True

        def _answer(self) -> None:
            started = time.perf_counter()
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            time.sleep(delay_s)
            # What the server itself spent, for tests that separate its overhead from ours.
            spent_ms = (time.perf_counter() - started) * 1000
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-replica", "r1")
            self.send_header(
                "Server-Timing", f"inference;dur={delay_s * 1000:.1f}, total;dur={spent_ms:.3f}"
            )
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer  # noqa: N815 - http.server's naming

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 1024
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
