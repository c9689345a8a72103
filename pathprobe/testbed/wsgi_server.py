"""Stack ``wsgi``: a Flask app under gunicorn's threaded (``gthread``) or sync workers.

Started by the testbed as ``gunicorn --preload -k gthread --threads T
pathprobe.testbed.wsgi_server:create_app()`` (``-k sync``, one worker, for ``single_concurrency``).
A request holds one thread from start to end; CPU work of a worker's threads takes turns on one
GIL, waits overlap. The models are fitted once in the master and shared by the forked workers,
which gunicorn replaces when one dies (e.g. killed by the kernel's OOM killer).

This stack is the one pathprobe is *not* tuned to: its function names match no default name rule
(``photo_to_features``, ``open_photo``, ``shrink_photo``, ``scale_pixels`` for preprocessing;
``GlyphScorer.score`` and ``FlowerModel.rank_rows`` for inference), it never sends
``Server-Timing`` and it adds no debugging header (only the replica header). Each stage does its
work the way real code does, through the libraries: Pillow decodes, filters and resizes; numpy
scales; scikit-learn predicts; the model's device (or a downstream service) is a blocking socket
read.

Endpoints: ``POST /predict/image`` (raw JPEG/PNG body → k-nearest-neighbours on sklearn's bundled
8×8 digits), ``POST /predict/tabular`` (``{"instances": [[4 floats], ...]}`` → gradient boosting
on sklearn's bundled iris table) and ``GET /healthz``.
"""

from __future__ import annotations

import io
import json
import socket
from typing import Any

import numpy as np
from flask import Flask, Response, request
from PIL import Image, ImageFilter, ImageOps

from pathprobe.testbed.cpu_work import spend_cpu_ms
from pathprobe.testbed.settings import ServerSettings

GLYPH_SIDE_PX = 8  # sklearn's digits are 8×8 grey images, values 0..16
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_ROWS = 10_000


class Unreadable(ValueError):
    """The request body is not what the endpoint takes (answered with 400/422)."""


# --- preprocessing ---------------------------------------------------------------------------


def open_photo(body: bytes) -> Image.Image:
    """Decode an encoded image with Pillow, as grey levels."""
    try:
        photo = Image.open(io.BytesIO(body))
        photo.load()
    except Exception as exc:  # Pillow raises many types for bad input
        raise Unreadable(f"not an image: {exc}") from None
    return photo.convert("L")


def shrink_photo(photo: Image.Image) -> Image.Image:
    """Crop to the model's square aspect and shrink with a Lanczos filter to 8×8."""
    return ImageOps.fit(photo, (GLYPH_SIDE_PX, GLYPH_SIDE_PX), Image.Resampling.LANCZOS)


def scale_pixels(photo: Image.Image) -> np.ndarray:
    """Dark ink on light paper, 0..255 → the digits' 0..16 with ink high; one feature row."""
    grey = np.asarray(photo, dtype=np.float32)
    return ((255.0 - grey) * (16.0 / 255.0)).reshape(1, -1).astype(np.float64)


def enhance_details(photo: Image.Image, budget_ms: float) -> Image.Image:
    """Fault ``heavy_preprocessing``: Pillow's unsharp mask and histogram equalisation over the
    full-resolution frame, pass after pass, until ``budget_ms`` of this thread's CPU is spent."""
    enhanced = photo

    def enhancement_pass() -> None:
        nonlocal enhanced
        sharp = photo.filter(ImageFilter.UnsharpMask(radius=3, percent=160, threshold=2))
        enhanced = ImageOps.equalize(sharp.filter(ImageFilter.GaussianBlur(radius=1.5)))

    spend_cpu_ms(budget_ms, enhancement_pass)
    return enhanced


def stack_octaves(photo: Image.Image, bytes_per_pixel: float) -> np.ndarray:
    """Fault ``oom``: float64 copies of the full frame, ``bytes_per_pixel`` per input pixel in
    all (copies touch every page, so the memory is really used), as a scale space kept whole."""
    copies = max(1, round(bytes_per_pixel / 8.0))
    frame = np.asarray(photo, dtype=np.float64)
    return np.repeat(frame[np.newaxis], copies, axis=0)


def photo_to_features(body: bytes, settings: ServerSettings) -> np.ndarray:
    photo = open_photo(body)
    octaves = None
    if settings.has("oom"):
        octaves = stack_octaves(photo, settings.magnitude("oom_bytes_per_pixel"))
    if settings.has("heavy_preprocessing"):
        photo = enhance_details(photo, settings.magnitude("heavy_preprocessing_ms"))
    features = scale_pixels(shrink_photo(photo))
    del octaves
    return features


# --- models ----------------------------------------------------------------------------------


class GlyphScorer:
    """k-nearest-neighbours (k-d tree) on sklearn's bundled 8×8 digits, fitted at start-up."""

    def __init__(self) -> None:
        from sklearn.datasets import load_digits
        from sklearn.neighbors import KNeighborsClassifier

        digits = load_digits()
        self.model = KNeighborsClassifier(n_neighbors=5, algorithm="kd_tree")
        self.model.fit(digits.data, digits.target)
        self._rng = np.random.default_rng(11)

    def score(self, features: np.ndarray, extra_cpu_ms: float) -> tuple[int, float]:
        proba = self.model.predict_proba(features)[0]
        if extra_cpu_ms > 0:
            proba = self.vote_with_jitter(features, extra_cpu_ms)
        best = int(np.argmax(proba))
        return best, float(proba[best])

    def vote_with_jitter(self, features: np.ndarray, budget_ms: float) -> np.ndarray:
        """Fault ``slow_inference``: test-time augmentation — the model predicts jittered copies
        of the input, round after round, until ``budget_ms`` of this thread's CPU is spent."""
        votes = np.zeros(10)
        noise = self._rng.normal(0.0, 0.8, (32, features.shape[1]))

        def predict_round() -> None:
            nonlocal votes
            votes = votes + self.model.predict_proba(np.clip(features + noise, 0, 16)).sum(axis=0)

        spend_cpu_ms(budget_ms, predict_round)
        total = float(votes.sum())
        return votes / total if total > 0 else votes


class FlowerModel:
    """Gradient boosting on sklearn's bundled iris table (4 features)."""

    n_features = 4

    def __init__(self) -> None:
        from sklearn.datasets import load_iris
        from sklearn.ensemble import GradientBoostingClassifier

        data = load_iris()
        self.model = GradientBoostingClassifier(n_estimators=40, max_depth=2, random_state=0)
        self.model.fit(data.data, data.target)

    def rank_rows(self, rows: np.ndarray) -> list[int]:
        return [int(c) for c in self.model.predict(rows)]


def wait_on_device(ms: float) -> None:
    """The model's device (or a downstream service) answering after ``ms``: a blocking read on a
    socket, so the thread is parked in the kernel as it would be on a remote call, not spinning.
    Nothing is ever written to the pair: the read ends by its timeout."""
    if ms <= 0:
        return
    here, device = socket.socketpair()
    with here, device:
        here.settimeout(ms / 1000.0)
        try:
            here.recv(1)
        except TimeoutError:
            pass


def rows_from_json(raw: bytes, n_features: int) -> np.ndarray:
    try:
        payload: Any = json.loads(raw or b"null")
        rows = np.asarray(payload["instances"], dtype=np.float64)
    except (ValueError, KeyError, TypeError):
        raise Unreadable('expected {"instances": [[...], ...]}') from None
    if rows.ndim != 2 or rows.shape[1] != n_features or not 0 < rows.shape[0] <= MAX_ROWS:
        raise Unreadable(f"each instance needs {n_features} numbers (1..{MAX_ROWS} rows)")
    return rows


# --- the app ---------------------------------------------------------------------------------


def create_app(settings: ServerSettings | None = None) -> Flask:
    """The WSGI app; gunicorn calls this once in the master (``--preload``)."""
    cfg = settings or ServerSettings.from_env()
    glyphs = GlyphScorer()
    flowers = FlowerModel()
    slow_ms = cfg.magnitude("slow_inference_ms") if cfg.has("slow_inference") else 0.0
    device_ms = cfg.magnitude("accelerator_ms")
    app = Flask("pathprobe.testbed.wsgi")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    def answer(payload: dict[str, Any], status: int = 200) -> Response:
        # Bare on purpose: the replica header names a pod; nothing here times anything.
        return Response(json.dumps(payload), status=status, mimetype="application/json",
                        headers={cfg.replica_header: cfg.replica})  # fmt: skip

    @app.post("/predict/image")
    def handle_photo() -> Response:
        try:
            features = photo_to_features(request.get_data(cache=False), cfg)
        except Unreadable as exc:
            return answer({"error": str(exc)}, 400)
        digit, confidence = glyphs.score(features, slow_ms)
        wait_on_device(device_ms)
        return answer({"digit": digit, "confidence": confidence})

    @app.post("/predict/tabular")
    def handle_rows() -> Response:
        try:
            rows = rows_from_json(request.get_data(cache=False), flowers.n_features)
        except Unreadable as exc:
            return answer({"error": str(exc)}, 422)
        species = flowers.rank_rows(rows)
        if slow_ms > 0:
            glyphs.vote_with_jitter(np.zeros((1, GLYPH_SIDE_PX * GLYPH_SIDE_PX)), slow_ms)
        return answer({"species": species})

    @app.get("/healthz")
    def healthz() -> Response:
        return answer({"ok": True, "replica": cfg.replica, "stack": "wsgi"})

    return app
