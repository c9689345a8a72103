"""Stack ``aiohttp``: a plain aiohttp server with its own pre-fork worker processes.

``python -m pathprobe.testbed.aiohttp_server --host H --port P`` is the master: it builds the
models,
opens the listening socket, forks N workers that all accept on it, and forks a replacement when a
worker dies (e.g. OOM-killed). SIGTERM/SIGINT stop the master and its workers.

Same endpoints as the fastapi stack, but different code on purpose (other function names, another
image model — a small numpy convolution net with fixed-seed weights — and other magnitudes), so
that attribution is not fitted to one stack. Preprocessing: ``load_jpeg``, ``fit_to_input``,
``standardize_array`` under ``prepare_input``; inference: ``ConvNet.forward`` /
``WineModel.score_table``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import sys
import time
from typing import Any

import numpy as np
from aiohttp import web
from PIL import Image

from pathprobe.testbed.cpu_work import spend_cpu_ms
from pathprobe.testbed.oom_adj import mark_as_worker
from pathprobe.testbed.settings import ServerSettings

INPUT_SIDE_PX = 32
MAX_BODY_BYTES = 64 * 1024 * 1024
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class InputRejected(ValueError):
    pass


# --- preprocessing ---------------------------------------------------------------------------


def load_jpeg(body: bytes) -> Image.Image:
    try:
        picture = Image.open(io.BytesIO(body))
        picture.load()
    except Exception as exc:  # Pillow raises many types for bad input
        raise InputRejected(f"undecodable image: {exc}") from None
    return picture.convert("RGB")


def fit_to_input(picture: Image.Image) -> Image.Image:
    """Centre-crop to a square, then resize to the net's 32×32 input."""
    width, height = picture.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = picture.crop((left, top, left + side, top + side))
    return square.resize((INPUT_SIDE_PX, INPUT_SIDE_PX), Image.Resampling.BICUBIC)


def standardize_array(picture: Image.Image) -> np.ndarray:
    """ImageNet-style per-channel standardisation, HWC float32."""
    array = np.asarray(picture, dtype=np.float32) / 255.0
    return (array - _MEAN) / _STD


def sharpen_and_equalize(picture: Image.Image, budget_ms: float) -> None:
    """Fault ``heavy_preprocessing``: full-resolution histogram equalisation + unsharp passes."""
    plane = np.asarray(picture, dtype=np.float32).mean(axis=2)

    def enhancement_pass() -> None:
        nonlocal plane
        hist, edges = np.histogram(plane, bins=256, range=(0.0, 255.0))
        cdf = np.cumsum(hist).astype(np.float32)
        plane = np.interp(plane, edges[:-1], cdf / cdf[-1] * 255.0).astype(np.float32)
        plane = np.clip(plane * 1.5 - np.roll(plane, 1, axis=0) * 0.5, 0.0, 255.0)

    spend_cpu_ms(budget_ms, enhancement_pass)


def build_scale_space(picture: Image.Image, bytes_per_pixel: float) -> np.ndarray:
    """Fault ``oom``: a scale-space stack sized by the pixel count, every page touched."""
    width, height = picture.size
    return np.full(int(width * height * bytes_per_pixel // 4), 1.0, dtype=np.float32)


def prepare_input(body: bytes, settings: ServerSettings) -> np.ndarray:
    picture = load_jpeg(body)
    stack = None
    if settings.has("oom"):
        stack = build_scale_space(picture, settings.magnitude("oom_bytes_per_pixel"))
    if settings.has("heavy_preprocessing"):
        sharpen_and_equalize(picture, settings.magnitude("heavy_preprocessing_ms"))
    tensor = standardize_array(fit_to_input(picture))
    del stack
    return tensor


# --- models ----------------------------------------------------------------------------------


class ConvNet:
    """conv3×3 (3→8) → ReLU → 4×4 average pool → dense (512→10); weights from a fixed seed."""

    def __init__(self, seed: int = 1234) -> None:
        rng = np.random.default_rng(seed)
        self.kernel = (rng.standard_normal((27, 8)) / np.sqrt(27)).astype(np.float32)
        self.dense = (rng.standard_normal((8 * 8 * 8, 10)) / np.sqrt(512)).astype(np.float32)
        self.mixer = (rng.standard_normal((512, 512)) / np.sqrt(512)).astype(np.float32)

    def forward(self, tensor: np.ndarray, extra_cpu_ms: float) -> np.ndarray:
        padded = np.pad(tensor, ((1, 1), (1, 1), (0, 0)), mode="edge")  # 'same' convolution
        side = tensor.shape[0]
        patches = np.lib.stride_tricks.sliding_window_view(padded, (3, 3, 3))
        columns = patches.reshape(side * side, 27)
        activations = np.maximum(columns @ self.kernel, 0.0).reshape(side, side, 8)
        pooled = activations.reshape(side // 4, 4, side // 4, 4, 8).mean(axis=(1, 3))
        features = pooled.reshape(1, -1)
        if extra_cpu_ms > 0:
            features = self.deep_residual_blocks(features, extra_cpu_ms)
        logits = features @ self.dense
        exp = np.exp(logits - logits.max())
        probs: np.ndarray = (exp / exp.sum())[0]
        return probs

    def deep_residual_blocks(self, features: np.ndarray, budget_ms: float) -> np.ndarray:
        """Fault ``slow_inference``: more layers in the forward pass (real matmuls)."""
        batch = np.repeat(features, 32, axis=0)

        def block() -> None:
            nonlocal batch
            batch = batch + np.tanh(batch @ self.mixer) * 0.01

        spend_cpu_ms(budget_ms, block)
        return batch[:1]


class WineModel:
    """Standardised logistic regression on sklearn's bundled wine table (13 features)."""

    n_features = 13

    def __init__(self) -> None:
        from sklearn.datasets import load_wine
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        data = load_wine()
        self.model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
        self.model.fit(data.data, data.target)

    def score_table(self, rows: np.ndarray) -> list[int]:
        return [int(c) for c in self.model.predict(rows)]


async def device_wait(ms: float) -> None:
    """Simulated accelerator time; the worker serves other requests meanwhile."""
    if ms > 0:
        await asyncio.sleep(ms / 1000.0)


def table_from_json(raw: bytes, n_features: int) -> np.ndarray:
    try:
        payload: Any = json.loads(raw or b"null")
        rows = np.asarray(payload["instances"], dtype=np.float64)
    except (ValueError, KeyError, TypeError):
        raise InputRejected('expected {"instances": [[...], ...]}') from None
    if rows.ndim != 2 or rows.shape[1] != n_features or not 0 < rows.shape[0] <= 10_000:
        raise InputRejected(f"each instance needs {n_features} numbers (1..10000 rows)")
    return rows


# --- the app ---------------------------------------------------------------------------------


def build_app(
    settings: ServerSettings,
    net: ConvNet,
    wine: WineModel,
    grpc_host: str = "127.0.0.1",
    grpc_port: int | None = None,
) -> web.Application:
    """The HTTP app; with ``grpc_port``, each worker also serves ModelInfer there (gRPC)."""
    gate = asyncio.Lock() if settings.has("single_concurrency") else None
    slow_ms = settings.magnitude("slow_inference_ms") if settings.has("slow_inference") else 0.0
    accelerator_ms = settings.magnitude("accelerator_ms")

    def stamp(response: web.StreamResponse, timing: str) -> web.StreamResponse:
        response.headers[settings.replica_header] = settings.replica
        if settings.instrumented:  # a bare server sends no timing or debugging headers
            response.headers["Server-Timing"] = timing
            response.headers["x-worker-pid"] = str(os.getpid())
        return response

    async def classify_jpeg(body: bytes) -> tuple[int, float, str]:
        """The image route's work (HTTP and gRPC alike): class, probability, Server-Timing."""
        started = time.perf_counter()
        tensor = prepare_input(body, settings)
        prepared = time.perf_counter()
        probs = net.forward(tensor, slow_ms)
        await device_wait(accelerator_ms)
        done = time.perf_counter()
        timing = (
            f"prep;dur={(prepared - started) * 1e3:.2f}, model;dur={(done - prepared) * 1e3:.2f}"
        )
        top = int(np.argmax(probs))
        return top, float(probs[top]), timing

    async def classify(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            top, prob, timing = await classify_jpeg(body)
        except InputRejected as exc:
            return stamp(web.json_response({"error": str(exc)}, status=400), "prep;dur=0")
        return stamp(web.json_response({"class": top, "p": prob}), timing)

    async def tabular(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        started = time.perf_counter()
        try:
            rows = table_from_json(body, wine.n_features)
        except InputRejected as exc:
            return stamp(web.json_response({"error": str(exc)}, status=422), "prep;dur=0")
        prepared = time.perf_counter()
        classes = wine.score_table(rows)
        if slow_ms > 0:
            net.deep_residual_blocks(np.zeros((1, 512), dtype=np.float32), slow_ms)
        done = time.perf_counter()
        timing = (
            f"prep;dur={(prepared - started) * 1e3:.2f}, model;dur={(done - prepared) * 1e3:.2f}"
        )
        return stamp(web.json_response({"classes": classes}), timing)

    def serialized(handler: Any) -> Any:
        async def wrapper(request: web.Request) -> web.StreamResponse:
            if gate is None:
                return await handler(request)  # type: ignore[no-any-return]
            async with gate:
                return await handler(request)  # type: ignore[no-any-return]

        return wrapper

    async def healthz(request: web.Request) -> web.StreamResponse:
        return stamp(web.json_response({"ok": True, "replica": settings.replica,
                                        "stack": "aiohttp"}), "app;dur=0")  # fmt: skip

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    if grpc_port is not None:
        _serve_grpc_too(app, grpc_host, grpc_port, settings, classify_jpeg, gate)
    app.router.add_post("/predict/image", serialized(classify))
    app.router.add_post("/predict/tabular", serialized(tabular))
    app.router.add_get("/healthz", healthz)
    return app


def _serve_grpc_too(
    app: web.Application,
    host: str,
    port: int,
    settings: ServerSettings,
    classify_jpeg: Any,
    gate: asyncio.Lock | None,
) -> None:
    """Start the gRPC face of the model with the app (in the worker's loop), stop it with it."""

    async def classify(body: bytes) -> tuple[int, float, str]:
        if gate is None:
            return await classify_jpeg(body)  # type: ignore[no-any-return]
        async with gate:  # single_concurrency holds for both protocols
            return await classify_jpeg(body)  # type: ignore[no-any-return]

    def stamp(timing: str) -> list[tuple[str, str]]:
        metadata = [(settings.replica_header.lower(), settings.replica)]
        if settings.instrumented:
            metadata.append(("server-timing", timing))
        return metadata

    async def start(app: web.Application) -> None:
        from pathprobe.testbed.grpc_service import start_grpc

        app["grpc_server"] = await start_grpc(host, port, classify, stamp)

    async def stop(app: web.Application) -> None:
        await app["grpc_server"].stop(1.0)

    app.on_startup.append(start)
    app.on_cleanup.append(stop)


def _serve_worker(sock: socket.socket, app: web.Application) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    web.run_app(app, sock=sock, print=None, handle_signals=True, access_log=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=None, help="also serve ModelInfer here")
    args = parser.parse_args(argv)
    settings = ServerSettings.from_env()
    net, wine = ConvNet(), WineModel()
    sock = socket.create_server((args.host, args.port), backlog=1024)
    sock.set_inheritable(True)
    app = build_app(settings, net, wine, args.host, args.grpc_port)
    children: set[int] = set()
    stopping = False

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:
            try:
                mark_as_worker()  # the OOM killer takes a worker, never the master
                _serve_worker(sock, app)
            finally:
                os._exit(0)
        children.add(pid)

    def on_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    for _ in range(settings.workers):
        spawn()
    print(f"aiohttp master {os.getpid()} serving on {args.host}:{args.port}", file=sys.stderr)
    last_spawn = time.monotonic()
    while not stopping:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            pid, status = 0, 0
        if pid and pid in children:
            children.discard(pid)
            print(f"worker {pid} exited ({status}); starting another", file=sys.stderr)
            # At most ~5 restarts/s, so a worker that dies on start-up cannot spin the core.
            time.sleep(max(0.0, 0.2 - (time.monotonic() - last_spawn)))
            spawn()
            last_spawn = time.monotonic()
            continue
        time.sleep(0.05)
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5.0
    while children and time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        children.discard(pid)
        if not pid:
            time.sleep(0.05)
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
