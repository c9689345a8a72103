"""Request bodies, all built before the clock starts (never in the send loop).

A :class:`PayloadPool` holds fully encoded bodies; the request sequence refers to them by index.
"""

from __future__ import annotations

import base64
import io
import json
import mimetypes
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pathprobe.config import Encoding, PayloadSpec
from pathprobe.errors import UsageError

# A payload directory larger than this is almost certainly a mistake (every body sits in memory).
MAX_POOL_BYTES = 1 << 30
JPEG_QUALITY = 85


@dataclass(frozen=True)
class Payload:
    body: bytes
    content_type: str
    # Size of the original input (image or file) before encoding: what the server must process.
    source_bytes: int
    label: str


@dataclass(frozen=True)
class PayloadPool:
    """Encoded bodies; empty for requests without a body."""

    payloads: tuple[Payload, ...]
    cycle: bool  # True: request i uses payload i mod n (payload dir); False: random choice

    def __len__(self) -> int:
        return len(self.payloads)

    def sizes_bytes(self) -> np.ndarray:
        return np.array([p.source_bytes for p in self.payloads], dtype=np.int64)


def build_pool(spec: PayloadSpec, seed: int) -> PayloadPool:
    """Build the pool for ``spec``; raises :class:`UsageError` for unreadable inputs."""
    if spec.kind == "none":
        return PayloadPool((), cycle=False)
    if spec.kind == "body_file":
        assert spec.body_file is not None
        data = _read(spec.body_file)
        ctype = _guess_type(spec.body_file)
        return PayloadPool((encode(data, ctype, spec.encoding, spec.body_file.name),), cycle=True)
    if spec.kind == "dir":
        assert spec.payload_dir is not None
        files = sorted(p for p in spec.payload_dir.iterdir() if p.is_file())
        total = sum(p.stat().st_size for p in files)
        if total > MAX_POOL_BYTES:
            raise UsageError(f"--payload-dir {spec.payload_dir}: {total} bytes is above 1 GiB")
        payloads = tuple(encode(_read(p), _guess_type(p), spec.encoding, p.name) for p in files)
        return PayloadPool(payloads, cycle=True)
    rng = np.random.default_rng([seed, 0xB0D1])
    images = [random_jpeg(rng, spec.image_min_px, spec.image_max_px) for _ in range(spec.pool_size)]
    payloads = tuple(
        encode(data, "image/jpeg", spec.encoding, f"image-{i}.jpg") for i, data in enumerate(images)
    )
    return PayloadPool(payloads, cycle=False)


def random_jpeg(rng: np.random.Generator, min_px: int, max_px: int) -> bytes:
    """A JPEG whose sides each lie in ``[min_px, max_px]`` (so the aspect ratio is random).

    The picture is a smooth colour field plus mild noise: it compresses like a photograph rather
    than like pure noise (too big) or a flat colour (too small).
    """
    from PIL import Image

    width = int(rng.integers(min_px, max_px + 1))
    height = int(rng.integers(min_px, max_px + 1))
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    phase = rng.uniform(0, 2 * np.pi, size=3).astype(np.float32)
    freq = rng.uniform(1, 6, size=3).astype(np.float32)
    channels = [
        127.5 + 100 * np.sin(freq[c] * (xs * 3 + ys * (c + 1)) + phase[c]) for c in range(3)
    ]
    pixels = np.stack(channels, axis=-1)
    pixels += rng.normal(0, 12, size=pixels.shape).astype(np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def encode(data: bytes, content_type: str, encoding: Encoding, filename: str) -> Payload:
    """Encode one input as raw body, multipart form (field ``file``) or ``{"image": base64}``."""
    if encoding == "raw":
        return Payload(data, content_type, len(data), filename)
    if encoding == "base64-json":
        body = json.dumps({"image": base64.b64encode(data).decode("ascii")}).encode()
        return Payload(body, "application/json", len(data), filename)
    # A fixed boundary derived from the content keeps runs reproducible.
    boundary = "pathprobe-" + uuid.uuid5(uuid.NAMESPACE_OID, filename).hex
    safe_name = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{safe_name}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return Payload(
        head + data + tail, f"multipart/form-data; boundary={boundary}", len(data), filename
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _guess_type(path: Path) -> str:
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"
