"""The testbed's model over gRPC: ``inference.GRPCInferenceService/ModelInfer`` on model ``image``.

Started inside each aiohttp-stack worker, on the worker's own event loop, beside its HTTP app
(``--grpc-port``): grpcio is imported only there, after the fork, since a gRPC core initialised
in the master would not survive it. Every worker listens on the same port (grpcio sets
SO_REUSEPORT), so the kernel spreads connections over them as it does for the HTTP socket.

A request carries the JPEG as its first input (BYTES, one element, as pathprobe's
``--payload image:…`` sends it, or UINT8 bytes); the work is the HTTP ``/predict/image`` route's,
with the same faults: the caller passes it in as ``classify`` so both protocols share one code path.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from typing import Any

MODEL = "image"

#: ``classify(jpeg) -> (top class, probability, server-timing value)``; raises ValueError on
#: input it rejects.
Classify = Callable[[bytes], Awaitable[tuple[int, float, str]]]


def jpeg_of(request: Any) -> bytes:
    """The first input's bytes: a BYTES tensor's first element, or raw UINT8 data."""
    if not request.inputs or not request.raw_input_contents:
        raise ValueError("expected one input tensor in raw_input_contents")
    raw: bytes = request.raw_input_contents[0]
    if request.inputs[0].datatype == "BYTES":
        if len(raw) < 4:
            raise ValueError("BYTES element without its length")
        (length,) = struct.unpack_from("<I", raw)
        return raw[4 : 4 + length]
    return raw


async def start_grpc(
    host: str, port: int, classify: Classify, stamp: Callable[[str], list[tuple[str, str]]]
) -> Any:
    """A started grpc.aio server on ``host:port`` in the running loop (call ``stop`` on it).

    ``stamp(timing)`` gives the metadata every answer carries (the replica header, and
    Server-Timing when the testbed is instrumented).
    """
    import grpc
    import grpc.aio

    from pathprobe.grpcproto import grpc_predict_v2_pb2 as pb
    from pathprobe.grpcproto import grpc_predict_v2_pb2_grpc as pb_grpc

    class Service(pb_grpc.GRPCInferenceServiceServicer):
        async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC's
            if request.name != MODEL:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.name!r}")
            return pb.ModelReadyResponse(ready=True)

        async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
            if request.model_name != MODEL:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.model_name!r}")
            try:
                top, prob, timing = await classify(jpeg_of(request))
            except ValueError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            await context.send_initial_metadata(stamp(timing))
            out = pb.ModelInferResponse.InferOutputTensor
            return pb.ModelInferResponse(
                model_name=MODEL,
                id=request.id,
                outputs=[out(name="class", datatype="INT64", shape=[1]),
                         out(name="p", datatype="FP32", shape=[1])],
                raw_output_contents=[struct.pack("<q", top), struct.pack("<f", prob)],
            )  # fmt: skip

    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    # The generated registration function carries no annotations.
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Service(), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server
