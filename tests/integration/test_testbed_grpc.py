"""The gRPC testbed: ModelInfer on the aiohttp stack, through nginx (grpc_pass) and haproxy (h2).

First checked with a bare grpcio client (not pathprobe): every hop answers, the model's metadata
comes through, haproxy balances streams of one connection over both replicas. Then pathprobe
diagnoses the three gRPC paths end to end.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import grpc
import grpc.aio
import numpy as np
import pytest
from PIL import Image

from pathprobe.grpc_url import parse_grpc_url
from pathprobe.grpcproto import grpc_predict_v2_pb2 as pb
from pathprobe.load.oip import bytes_element
from pathprobe.testbed import Testbed
from tests.conftest import free_env

pytestmark = [pytest.mark.integration, pytest.mark.root]

PATHPROBE = str(Path(sys.executable).parent / "pathprobe")


def jpeg_request() -> bytes:
    pixels = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    request = pb.ModelInferRequest(model_name="image")
    request.inputs.add(name="image", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(bytes_element(buf.getvalue()))
    data: bytes = request.SerializeToString()
    return data


async def infer_n(url: str, n: int) -> list[tuple[str, str]]:
    """(replica, server-timing) of ``n`` ModelInfer calls in turn, on one channel."""
    target = parse_grpc_url(url)
    body = jpeg_request()
    seen = []
    async with grpc.aio.insecure_channel(target.address) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for _ in range(n):
            call = infer(body, timeout=30)
            response = pb.ModelInferResponse.FromString(await call)
            assert [o.name for o in response.outputs] == ["class", "p"]
            metadata = dict(await call.initial_metadata())
            seen.append((metadata.get("x-replica", ""), metadata.get("server-timing", "")))
    return seen


def test_grpc_through_every_hop(tmp_path: Path) -> None:
    with Testbed(stack="aiohttp", grpc=True) as bed:
        urls = bed.grpc_urls
        for name in ("direct", "proxy"):
            seen = asyncio.run(infer_n(urls[name], 2))
            assert {replica for replica, _ in seen} == {"r1"}, (name, seen)
            assert all(timing.startswith("prep;dur=") for _, timing in seen), seen
        # haproxy in HTTP/2 mode balances requests (streams), not connections.
        seen = asyncio.run(infer_n(urls["lb"], 4))
        assert {replica for replica, _ in seen} == {"r1", "r2"}, seen

        out = tmp_path / "out"
        argv = [PATHPROBE, "diagnose", *(f"--path={n}={u}" for n, u in urls.items()),
                "--payload", "image:64-128", "--rate", "20", "--duration", "2",
                "--warmup", "0.5", "--connections", "4", "--no-capture", "--no-profile",
                "--out", str(out)]  # fmt: skip
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=180, env=free_env(), check=False
        )
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    for name in ("direct", "proxy", "lb"):
        step = report["paths"][name]["steps"][0]
        assert step["engine"] == "grpc"
        assert step["errors"] == 0, (name, step["errors_by_kind"])
        assert step["status_codes"] == {"200": 40}, name
    # The server split from Server-Timing in gRPC metadata reached the hop-header summary.
    assert report["paths"]["direct"]["steps"][0]["hop_headers"]
    assert report["probes"]["model_stats"]["available"] is False  # no statistics extension
