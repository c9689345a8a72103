"""Payload pools: generated before the clock, deterministic, encoded as asked."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pathprobe.config import PayloadSpec
from pathprobe.errors import UsageError
from pathprobe.load.payloads import build_pool, encode, random_jpeg


def test_random_jpeg_sides_within_bounds_and_aspect_varies() -> None:
    rng = np.random.default_rng(3)
    sizes = []
    for _ in range(20):
        image = Image.open(io.BytesIO(random_jpeg(rng, 40, 200)))
        assert image.format == "JPEG"
        assert 40 <= image.width <= 200
        assert 40 <= image.height <= 200
        sizes.append(image.size)
    assert len({w / h for w, h in sizes}) > 10  # random aspect ratios, not one shape


def test_image_pool_is_deterministic_in_the_seed() -> None:
    spec = PayloadSpec(kind="image", image_min_px=16, image_max_px=64, pool_size=5)
    a = build_pool(spec, seed=11)
    b = build_pool(spec, seed=11)
    c = build_pool(spec, seed=12)
    assert [p.body for p in a.payloads] == [p.body for p in b.payloads]
    assert [p.body for p in a.payloads] != [p.body for p in c.payloads]
    assert all(p.content_type == "image/jpeg" for p in a.payloads)
    assert len(a) == 5
    assert not a.cycle


def test_base64_json_and_multipart_encodings_round_trip() -> None:
    data = b"\xff\xd8binary\x00data"
    as_json = encode(data, "image/jpeg", "base64-json", "x.jpg")
    assert as_json.content_type == "application/json"
    assert base64.b64decode(json.loads(as_json.body)["image"]) == data
    multipart = encode(data, "image/jpeg", "multipart", 'we"ird.jpg')
    boundary = multipart.content_type.split("boundary=")[1]
    assert multipart.body.startswith(f"--{boundary}\r\n".encode())
    assert multipart.body.endswith(f"\r\n--{boundary}--\r\n".encode())
    assert data in multipart.body
    assert b'filename="we_ird.jpg"' in multipart.body
    assert multipart.source_bytes == len(data)


def test_payload_dir_cycles_files_in_name_order(tmp_path: Path) -> None:
    for name, body in (("b.json", b"{}"), ("a.bin", b"\x00\x01")):
        (tmp_path / name).write_bytes(body)
    pool = build_pool(PayloadSpec(kind="dir", payload_dir=tmp_path), seed=1)
    assert pool.cycle
    assert [p.label for p in pool.payloads] == ["a.bin", "b.json"]
    assert pool.payloads[1].content_type == "application/json"
    assert pool.sizes_bytes().tolist() == [2, 2]


def test_unreadable_body_file_is_a_usage_error(tmp_path: Path) -> None:
    spec = PayloadSpec(kind="body_file", body_file=tmp_path / "missing.bin")
    with pytest.raises(UsageError, match="cannot read"):
        build_pool(spec, seed=1)
