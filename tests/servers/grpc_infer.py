"""A grpc.aio Open Inference Protocol server that answers ModelInfer after a fixed delay.

``python -m tests.servers.grpc_infer DELAY_S RECORD_FILE [MODEL [CERT KEY]]`` prints its port on
stdout, then serves until killed (over TLS with CERT and KEY). Every ModelInfer is checked the way
a real server would read it — inputs against ``raw_input_contents``: one entry per input, its
size what the shape and datatype say (BYTES: length-prefixed elements, as many as the shape
holds) — and counted by (model, version, inputs) with how many were well-formed. The counts are
rewritten to RECORD_FILE (atomically) at most every 0.1 s, so a test reads what the server
received without stopping it.

It answers ``server-timing: inference;dur=…`` in the initial metadata, NOT_FOUND for any model but
MODEL (default ``m``) on ModelReady and ModelInfer, and keeps Triton-style cumulative statistics
(ModelStatistics: success count, queue = the wait for a slot, compute_infer = the delay).

Environment: ``GRPC_INFER_SLOTS=N`` serves at most N requests at a time (the rest wait, as in
Triton's scheduler queue; default unlimited); ``GRPC_INFER_TIMING=0`` sends no Server-Timing, as
Triton does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from pathprobe.grpcproto import grpc_predict_v2_pb2 as pb
from pathprobe.grpcproto import grpc_predict_v2_pb2_grpc as pb_grpc

SIZES = {
    "BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8, "INT8": 1, "INT16": 2,
    "INT32": 4, "INT64": 8, "FP16": 2, "FP32": 4, "FP64": 8,
}  # fmt: skip


def well_formed(request: Any) -> bool:
    """Whether every input's raw bytes match its shape and datatype (as Triton checks them)."""
    if not request.inputs or len(request.raw_input_contents) != len(request.inputs):
        return False
    for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=True):
        count = math.prod(tensor.shape)
        if tensor.datatype == "BYTES":
            offset = 0
            for _ in range(count):
                if offset + 4 > len(raw):
                    return False
                (length,) = struct.unpack_from("<I", raw, offset)
                offset += 4 + length
            if offset != len(raw):
                return False
        elif tensor.datatype not in SIZES or len(raw) != count * SIZES[tensor.datatype]:
            return False
    return True


class Service(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, delay_s: float, model: str) -> None:
        self.delay_s = delay_s
        self.model = model
        self.received: dict[str, dict[str, Any]] = {}
        self.dirty = False
        self.success = 0
        self.infer_ns = 0
        self.queue_ns = 0
        slots = int(os.environ.get("GRPC_INFER_SLOTS", "0"))
        self.slots = asyncio.Semaphore(slots) if slots > 0 else None
        self.timing = os.environ.get("GRPC_INFER_TIMING", "1") != "0"

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC's name
        if request.name != self.model:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model '{request.name}'")
        return pb.ModelReadyResponse(ready=True)

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        key = json.dumps(
            [
                request.model_name,
                request.model_version,
                [[t.name, t.datatype, list(t.shape)] for t in request.inputs],
            ]
        )
        entry = self.received.setdefault(key, {"requests": 0, "well_formed": 0})
        entry["requests"] += 1
        entry["well_formed"] += well_formed(request)
        self.dirty = True
        if request.model_name != self.model:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model '{request.model_name}'")
        queued = time.perf_counter_ns()
        async with self.slots or contextlib.nullcontext():
            started = time.perf_counter_ns()
            await asyncio.sleep(self.delay_s)
            spent_ns = time.perf_counter_ns() - started
        self.success += 1
        self.infer_ns += spent_ns
        if self.slots is not None:  # without slots nothing queues (the reads' gap is not a queue)
            self.queue_ns += started - queued
        if self.timing:
            await context.send_initial_metadata(
                (("server-timing", f"inference;dur={spent_ns / 1e6:.3f}"),)
            )
        return pb.ModelInferResponse(
            model_name=request.model_name,
            id=request.id,
            outputs=[
                pb.ModelInferResponse.InferOutputTensor(name="out", datatype="FP32", shape=[1])
            ],
            raw_output_contents=[struct.pack("<f", 1.0)],
        )

    async def ModelStatistics(self, request: Any, context: Any) -> Any:  # noqa: N802
        done = pb.StatisticDuration(count=self.success, ns=self.infer_ns)
        stats = pb.InferStatistics(
            success=done,
            queue=pb.StatisticDuration(count=self.success, ns=self.queue_ns),
            compute_infer=done,
        )
        model = pb.ModelStatistics(
            name=self.model, version="1", inference_count=self.success,
            execution_count=self.success, inference_stats=stats,
        )  # fmt: skip
        return pb.ModelStatisticsResponse(model_stats=[model])


async def write_records(service: Service, path: Path) -> None:
    while True:
        await asyncio.sleep(0.1)
        if service.dirty:
            service.dirty = False
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(service.received))
            os.replace(tmp, path)


async def main(tls_pair: tuple[bytes, bytes] | None) -> None:
    delay_s = float(sys.argv[1])
    record = Path(sys.argv[2])
    model = sys.argv[3] if len(sys.argv) > 3 else "m"
    service = Service(delay_s, model)
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(service, server)
    if tls_pair is not None:
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([tls_pair]))
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    writer = asyncio.create_task(write_records(service, record))
    print(port, flush=True)
    try:
        await server.wait_for_termination()
    finally:
        writer.cancel()


if __name__ == "__main__":
    import uvloop

    # uvloop: the default loop adds ~1 ms per request to grpc.aio's server path here.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        # (private key, certificate chain), as grpc.ssl_server_credentials takes them
        pair = None
        if len(sys.argv) > 5:
            pair = (Path(sys.argv[5]).read_bytes(), Path(sys.argv[4]).read_bytes())
        runner.run(main(pair))
