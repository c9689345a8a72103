"""A model server the testbed does not have: plain WSGI under waitress, sends no Server-Timing.

Pillow decodes and shrinks each uploaded JPEG, a scikit-learn forest scores it. Faults by
environment: ``OOS_PRE`` extra blur passes over the full image (preprocessing), ``OOS_TREES``
the forest's size (inference), ``OOS_FEATURE_PORT`` a blocking call per request to
feature_store.py (with ``OOS_THREADS=1``: a one-at-a-time server waiting on I/O).
"""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from PIL import Image, ImageFilter
from sklearn.ensemble import RandomForestClassifier

BLUR_PASSES = int(os.environ.get("OOS_PRE", "0"))
TREES = int(os.environ.get("OOS_TREES", "10"))
FEATURE_PORT = int(os.environ.get("OOS_FEATURE_PORT", "0"))


def train() -> RandomForestClassifier:
    rng = np.random.default_rng(7)
    features = rng.normal(size=(2000, 48))
    labels = (features[:, :4].sum(axis=1) > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=TREES, max_depth=12, random_state=0, n_jobs=1)
    return forest.fit(features, labels)


MODEL = train()


def prepare(body: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(body)).convert("RGB")
    for _ in range(BLUR_PASSES):
        img = img.filter(ImageFilter.GaussianBlur(radius=3))
    pixels = np.asarray(img.resize((64, 48), Image.BILINEAR), dtype=np.float32) / 255.0
    return pixels.mean(axis=(0, 2))[:48].reshape(1, -1)


def fetch_features() -> None:
    with socket.create_connection(("127.0.0.1", FEATURE_PORT)) as conn:
        conn.sendall(b"get\n")
        conn.recv(64)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    features = prepare(body)
    if FEATURE_PORT:
        fetch_features()
    out = b'{"score": %.4f}' % float(MODEL.predict_proba(features)[0, 1])
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(out)))])  # fmt: skip
    return [out]


if __name__ == "__main__":
    import waitress  # type: ignore[import-not-found]

    waitress.serve(app, host="127.0.0.1", port=int(os.environ.get("OOS_PORT", "8101")),
                   threads=int(os.environ.get("OOS_THREADS", "4")), _quiet=True)  # fmt: skip
