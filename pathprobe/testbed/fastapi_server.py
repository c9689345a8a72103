"""Stack ``fastapi``: a FastAPI app served by uvicorn workers under gunicorn.

Started by the testbed as ``gunicorn --preload pathprobe.testbed.fastapi_server:create_app()``: the
models are trained once in the gunicorn master and shared by the forked workers, which gunicorn
restarts when one dies (e.g. killed by the kernel's OOM killer).

Endpoints: ``POST /predict/tabular`` (JSON ``{"instances": [[30 floats], ...]}`` → random forest on
sklearn's bundled breast-cancer data), ``POST /predict/image`` (raw JPEG/PNG body → Pillow decode,
resize, numpy normalisation → logistic regression on sklearn's bundled 8×8 digits) and
``GET /healthz``. Every response carries the replica header, and ``Server-Timing`` unless the
settings say the server is bare (``instrumented`` false).

Function names are part of the testbed's contract: preprocessing lives in ``decode_image``,
``resize_image``, ``normalize_pixels`` (under ``preprocess_image``), inference in
``DigitModel.predict_digit`` / ``TabularModel.predict_rows``.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image

from pathprobe.testbed.cpu_work import spend_cpu_ms
from pathprobe.testbed.settings import ServerSettings

IMAGE_SIDE_PX = 8  # the digits model sees 8×8 grey images, values 0..16


class BadInput(ValueError):
    """The request body is not what the endpoint takes (answered with 400/422)."""


# --- preprocessing ---------------------------------------------------------------------------


def decode_image(body: bytes) -> Image.Image:
    """Decode an encoded image (JPEG, PNG, …) into an RGB Pillow image."""
    try:
        image = Image.open(io.BytesIO(body))
        image.load()
    except Exception as exc:  # Pillow raises many types for bad input
        raise BadInput(f"cannot decode image: {exc}") from None
    return image.convert("RGB")


def resize_image(image: Image.Image) -> Image.Image:
    """Grey-scale and shrink to the model's input size."""
    return image.convert("L").resize((IMAGE_SIDE_PX, IMAGE_SIDE_PX), Image.Resampling.BILINEAR)


def normalize_pixels(image: Image.Image) -> np.ndarray:
    """0..255 grey levels → the digits data set's 0..16 scale, flattened to one feature row."""
    pixels = np.asarray(image, dtype=np.float64)
    return (16.0 - pixels / 255.0 * 16.0).reshape(1, -1)


def denoise_full_resolution(image: Image.Image, budget_ms: float) -> None:
    """Fault ``heavy_preprocessing``: repeated 3×3 box blurs over the full-resolution frame."""
    frame = np.asarray(image, dtype=np.float32) / 255.0

    def blur_pass() -> None:
        nonlocal frame
        padded = np.pad(frame, ((1, 1), (1, 1), (0, 0)), mode="edge")
        frame = (padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
                 + padded[1:-1, 1:-1]) / 5.0  # fmt: skip

    spend_cpu_ms(budget_ms, blur_pass)


def expand_pixel_pyramid(image: Image.Image, bytes_per_pixel: float) -> np.ndarray:
    """Fault ``oom``: a float64 pyramid sized by the input's pixel count, every page touched."""
    width, height = image.size
    count = int(width * height * bytes_per_pixel // 8)
    return np.ones(count, dtype=np.float64)


def preprocess_image(body: bytes, settings: ServerSettings) -> np.ndarray:
    image = decode_image(body)
    pyramid = None
    if settings.has("oom"):
        pyramid = expand_pixel_pyramid(image, settings.magnitude("oom_bytes_per_pixel"))
    if settings.has("heavy_preprocessing"):
        denoise_full_resolution(image, settings.magnitude("heavy_preprocessing_ms"))
    features = normalize_pixels(resize_image(image))
    del pyramid
    return features


# --- models ----------------------------------------------------------------------------------


class DigitModel:
    """Logistic regression on sklearn's bundled 8×8 digits (no download), trained at start-up."""

    def __init__(self) -> None:
        from sklearn.datasets import load_digits
        from sklearn.linear_model import LogisticRegression

        digits = load_digits()
        self.model = LogisticRegression(max_iter=300, random_state=0)
        self.model.fit(digits.data, digits.target)
        rng = np.random.default_rng(7)
        self._ensemble = rng.standard_normal((64, 64)).astype(np.float64) / 8.0

    def predict_digit(self, features: np.ndarray, extra_cpu_ms: float) -> tuple[int, float]:
        proba = self.model.predict_proba(features)[0]
        if extra_cpu_ms > 0:
            self.refine_with_ensemble(features, extra_cpu_ms)
        best = int(np.argmax(proba))
        return best, float(proba[best])

    def refine_with_ensemble(self, features: np.ndarray, budget_ms: float) -> None:
        """Fault ``slow_inference``: extra model passes (matmuls) inside inference."""
        state = np.repeat(features, 64, axis=0)

        def model_pass() -> None:
            nonlocal state
            state = np.tanh(state @ self._ensemble)

        spend_cpu_ms(budget_ms, model_pass)


class TabularModel:
    """A random forest on sklearn's bundled breast-cancer table (30 features)."""

    n_features = 30

    def __init__(self) -> None:
        from sklearn.datasets import load_breast_cancer
        from sklearn.ensemble import RandomForestClassifier

        data = load_breast_cancer()
        self.model = RandomForestClassifier(n_estimators=25, max_depth=6, random_state=0)
        self.model.fit(data.data, data.target)

    def predict_rows(self, rows: np.ndarray) -> list[float]:
        return [float(p) for p in self.model.predict_proba(rows)[:, 1]]


async def wait_for_accelerator(ms: float) -> None:
    """The model's device time: the worker waits (and serves others) as on a GPU-backed server."""
    if ms > 0:
        await asyncio.sleep(ms / 1000.0)


def parse_rows(payload: Any, n_features: int) -> np.ndarray:
    rows = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(rows, list) or not rows or len(rows) > 10_000:
        raise BadInput('expected {"instances": [[...], ...]} with 1..10000 rows')
    try:
        array = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadInput("instances must be numbers") from None
    if array.ndim != 2 or array.shape[1] != n_features:
        raise BadInput(f"each instance needs {n_features} numbers")
    return array


# --- the app ---------------------------------------------------------------------------------


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """The ASGI app; gunicorn calls this once in the master (``--preload``)."""
    cfg = settings or ServerSettings.from_env()
    digits = DigitModel()
    tabular = TabularModel()
    app = FastAPI(title="pathprobe testbed (fastapi)", docs_url=None, redoc_url=None)
    # single_concurrency: one worker that takes one request at a time; others wait (no 503).
    gate: asyncio.Lock | None = asyncio.Lock() if cfg.has("single_concurrency") else None
    accelerator_ms = cfg.magnitude("accelerator_ms")
    slow_ms = cfg.magnitude("slow_inference_ms") if cfg.has("slow_inference") else 0.0

    def headers(timing: str) -> dict[str, str]:
        if not cfg.instrumented:
            return {cfg.replica_header: cfg.replica}
        return {"Server-Timing": timing, cfg.replica_header: cfg.replica,
                "x-worker-pid": str(os.getpid())}  # fmt: skip

    async def image_handler(body: bytes) -> Response:
        t0 = time.perf_counter()
        try:
            features = preprocess_image(body, cfg)
        except BadInput as exc:
            return JSONResponse({"error": str(exc)}, 400, headers=headers("preprocess;dur=0"))
        t1 = time.perf_counter()
        label, score = digits.predict_digit(features, slow_ms)
        await wait_for_accelerator(accelerator_ms)
        t2 = time.perf_counter()
        timing = f"preprocess;dur={(t1 - t0) * 1e3:.2f}, inference;dur={(t2 - t1) * 1e3:.2f}"
        return JSONResponse({"label": label, "score": score}, headers=headers(timing))

    async def tabular_handler(raw: bytes) -> Response:
        import json

        t0 = time.perf_counter()
        try:
            rows = parse_rows(json.loads(raw or b"null"), tabular.n_features)
        except (BadInput, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, 422, headers=headers("preprocess;dur=0"))
        t1 = time.perf_counter()
        scores = tabular.predict_rows(rows)
        if slow_ms > 0:
            digits.refine_with_ensemble(np.zeros((1, 64)), slow_ms)
        t2 = time.perf_counter()
        timing = f"preprocess;dur={(t1 - t0) * 1e3:.2f}, inference;dur={(t2 - t1) * 1e3:.2f}"
        return JSONResponse({"scores": scores}, headers=headers(timing))

    async def gated(handler: Any, body: bytes) -> Response:
        if gate is None:
            return await handler(body)  # type: ignore[no-any-return]
        async with gate:
            return await handler(body)  # type: ignore[no-any-return]

    @app.post("/predict/image")
    async def predict_image(request: Request) -> Response:
        return await gated(image_handler, await request.body())

    @app.post("/predict/tabular")
    async def predict_tabular(request: Request) -> Response:
        return await gated(tabular_handler, await request.body())

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"ok": True, "replica": cfg.replica, "stack": "fastapi"},
                            headers=headers("app;dur=0"))  # fmt: skip

    return app
