"""A tiny pre-forking model server for the server-probe tests (not the testbed; self-contained).

    python serverprobe_app.py MODE WORKERS

MODE ``heavy``: each request decodes the posted JPEG with Pillow, resizes it large and normalizes
it with numpy (``preprocess_image``), then runs the "model" (``predict``: matmuls). MODE
``light``: the posted bytes are taken as an already prepared tensor, then the same model.
``POST /alloc?mb=N`` makes the worker hold N MiB (touched), to drive a real OOM kill under a
memory cgroup.

The master binds 127.0.0.1:0, forks WORKERS workers that share the listening socket, prints
``ready PORT`` and restarts any worker that dies (as gunicorn does), so births follow deaths.
"""

from __future__ import annotations

import http.server
import io
import os
import signal
import socket
import sys

import numpy as np
from PIL import Image

MODE = sys.argv[1] if len(sys.argv) > 1 else "heavy"
WORKERS = int(sys.argv[2]) if len(sys.argv) > 2 else 1
WEIGHTS = np.random.default_rng(0).standard_normal((192, 192)).astype(np.float32) / 14.0
HOG: list[bytes] = []


def preprocess_image(body: bytes) -> np.ndarray:
    if MODE == "heavy":
        image = Image.open(io.BytesIO(body)).convert("RGB")
        image = image.resize((640, 640), Image.Resampling.BICUBIC)
        arr = np.asarray(image, dtype=np.float32) / 255.0
        for _ in range(4):
            arr = (arr - arr.mean(axis=(0, 1))) / (arr.std(axis=(0, 1)) + 1e-6)
        return np.resize(arr[..., 0], (192, 192))
    # Without the knob: the client's bytes are used as they are (a pre-processed tensor).
    return np.resize(
        np.frombuffer(body[:4096], dtype=np.uint8).astype(np.float32) / 255.0, (192, 192)
    )


def predict(features: np.ndarray) -> float:
    x = features
    for _ in range(24):
        x = np.tanh(x @ WEIGHTS)
    return float(x.sum())


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if self.path.startswith("/alloc"):
            megabytes = int(self.path.partition("mb=")[2] or "0")
            # Filled bytes, so the pages are really charged to the cgroup.
            HOG.extend(b"x" * (1 << 20) for _ in range(megabytes))
            answer = b"held"
        else:
            answer = str(predict(preprocess_image(body))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


def serve(sock: socket.socket) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.serve_forever(poll_interval=0.5)


def main() -> None:
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})  # server on the last core
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    children: set[int] = set()

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            try:
                serve(sock)
            finally:
                os._exit(0)
        children.add(pid)

    def stop(signum: int, frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    for _ in range(WORKERS):
        spawn()
    print("ready", sock.getsockname()[1], flush=True)
    while True:
        pid, _ = os.wait()
        children.discard(pid)
        spawn()


if __name__ == "__main__":
    main()
