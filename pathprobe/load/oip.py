"""Open Inference Protocol requests for gRPC paths, all built before the clock starts.

Input is what the protocol's HTTP endpoint takes — ``{"inputs": [{"name", "shape", "datatype",
"data"}], "outputs": [{"name"}], "parameters": {...}, "id": ...}`` — or raw files / generated JPEGs
sent as one tensor. Output is a serialized ``ModelInferRequest`` with every tensor's bytes in
``raw_input_contents`` (as Triton's own clients send it) and **without** ``model_name``: protobuf
merges concatenated messages, so each path prepends its own model name and version once
(:func:`model_prefix`), and the pool is shared by every path.

Bad input raises :class:`UsageError` with one line: the body does not parse, a datatype is unknown,
a shape does not match its data, a value does not fit its datatype.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pathprobe.config import PayloadSpec
from pathprobe.errors import UsageError
from pathprobe.load.payloads import Payload, PayloadPool, build_pool

CONTENT_TYPE = "application/grpc"
#: Fixed-size datatypes of the protocol and their little-endian numpy layout (BYTES is variable).
DATATYPES: dict[str, str] = {
    "BOOL": "?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
# A tensor above this many elements in a JSON body is a mistake (and would take minutes to parse).
MAX_ELEMENTS = 50_000_000
MAX_NAME_CHARS = 256


@dataclass(frozen=True)
class Tensor:
    """One input: its name, datatype, shape and raw bytes (row-major, little-endian)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes


@dataclass(frozen=True)
class InferBody:
    """A request's tensors and options, before it is serialized."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[str, ...] = ()
    request_id: str = ""
    parameters: tuple[tuple[str, bool | int | str], ...] = ()


def parse_json_request(text: bytes | str, source: str) -> InferBody:
    """The tensors of one JSON inference request; :class:`UsageError` naming the first problem."""
    try:
        doc = json.loads(text)
    except UnicodeDecodeError:
        raise UsageError(f"{source}: not a JSON inference request (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{source}: not a JSON inference request (line {exc.lineno}: {exc.msg})"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise UsageError(f'{source}: a JSON inference request needs "inputs": [{{...}}, ...]')
    inputs = tuple(_tensor(item, i, source) for i, item in enumerate(doc["inputs"]))
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise UsageError(f"{source}: input names repeat ({', '.join(names)})")
    outputs_raw = doc.get("outputs", [])
    if not isinstance(outputs_raw, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) and o["name"] for o in outputs_raw
    ):
        raise UsageError(f'{source}: "outputs" must be a list of {{"name": ...}}')
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise UsageError(f'{source}: "id" must be a string')
    return InferBody(
        inputs=inputs,
        outputs=tuple(o["name"] for o in outputs_raw),
        request_id=request_id,
        parameters=_parameters(doc.get("parameters", {}), source),
    )


def _parameters(value: Any, source: str) -> tuple[tuple[str, bool | int | str], ...]:
    if not isinstance(value, dict) or not all(
        isinstance(v, bool | int | str) for v in value.values()
    ):
        raise UsageError(f'{source}: "parameters" must map names to booleans, integers or strings')
    return tuple((str(k), v) for k, v in value.items())


def _tensor(item: Any, index: int, source: str) -> Tensor:
    if not isinstance(item, dict):
        raise UsageError(f"{source}: input #{index + 1} is not an object")
    name = item.get("name")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        raise UsageError(f'{source}: input #{index + 1} needs a "name" (a non-empty string)')
    where = f"{source}: input {name!r}"
    datatype = item.get("datatype")
    if not isinstance(datatype, str) or (datatype not in DATATYPES and datatype != "BYTES"):
        known = ", ".join([*DATATYPES, "BYTES"])
        raise UsageError(f"{where}: unknown datatype {datatype!r} (known: {known})")
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise UsageError(f'{where}: "shape" must be a list of non-negative integers')
    expected = math.prod(shape)
    if expected > MAX_ELEMENTS:
        raise UsageError(f"{where}: shape {shape} holds {expected} elements, above {MAX_ELEMENTS}")
    if "data" not in item:
        raise UsageError(f'{where}: no "data"')
    flat = list(_flatten(item["data"]))
    if len(flat) != expected:
        raise UsageError(
            f"{where}: shape {shape} holds {expected} elements but data has {len(flat)}"
        )
    return Tensor(name, datatype, tuple(shape), _raw(flat, datatype, where))


def _flatten(data: Any) -> Iterator[Any]:
    """Row-major elements of nested lists (a scalar is one element)."""
    if isinstance(data, list):
        for item in data:
            yield from _flatten(item)
    else:
        yield data


def _raw(flat: list[Any], datatype: str, where: str) -> bytes:
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise UsageError(f"{where}: BYTES data must be strings")
        return b"".join(bytes_element(v.encode()) for v in flat)
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise UsageError(f"{where}: BOOL data must be true or false")
    elif not all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
        raise UsageError(f"{where}: {datatype} data must be numbers")
    elif datatype.startswith(("INT", "UINT")) and not all(isinstance(v, int) for v in flat):
        raise UsageError(f"{where}: {datatype} data must be integers")
    dtype = np.dtype(DATATYPES[datatype])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if any(v < info.min or v > info.max for v in flat):
            raise UsageError(f"{where}: a value does not fit {datatype} ({info.min}..{info.max})")
    with np.errstate(over="ignore"):
        array = np.asarray(flat, dtype=dtype)
    if dtype.kind == "f" and not np.all(np.isfinite(array) == np.isfinite(np.asarray(flat))):
        raise UsageError(f"{where}: a value does not fit {datatype}")
    return array.tobytes()


def bytes_element(data: bytes) -> bytes:
    """One BYTES element in raw form: a 4-byte little-endian length, then the bytes."""
    return struct.pack("<I", len(data)) + data


def file_tensor(data: bytes, name: str, datatype: str) -> Tensor:
    """A whole file (an encoded image) as one input: a BYTES element, or a UINT8 vector."""
    if datatype == "UINT8":
        return Tensor(name, "UINT8", (len(data),), data)
    return Tensor(name, "BYTES", (1,), bytes_element(data))


def serialize(body: InferBody) -> bytes:
    """``body`` as a ``ModelInferRequest`` without model name or version (see module doc)."""
    from pathprobe.grpcproto import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(id=body.request_id)
    for name, value in body.parameters:
        param = request.parameters[name]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            param.int64_param = value
        else:
            param.string_param = value
    for tensor in body.inputs:
        request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        request.raw_input_contents.append(tensor.raw)
    for output in body.outputs:
        request.outputs.add(name=output)
    data: bytes = request.SerializeToString()
    return data


def model_prefix(model: str, version: str) -> bytes:
    """The serialized ``model_name``/``model_version`` fields a path prepends to every body."""
    from pathprobe.grpcproto import grpc_predict_v2_pb2 as pb

    data: bytes = pb.ModelInferRequest(model_name=model, model_version=version).SerializeToString()
    return data


def build_grpc_pool(spec: PayloadSpec, seed: int) -> PayloadPool:
    """The payload pool of a gRPC run: every body a serialized ``ModelInferRequest`` (no model).

    ``--body-file``: one JSON request. ``--payload-dir``: each ``*.json`` file a JSON request,
    any other file one input tensor. ``--payload image:MIN-MAX``: each JPEG one input tensor.
    Tensors made from files are named ``spec.grpc_input`` and typed ``spec.grpc_datatype``.
    ``source_bytes`` is the size of the file, or of a JSON request's tensor data (what the server
    must process).
    """
    if spec.encoding != "raw":
        raise UsageError("--encoding does not apply to grpc:// paths (tensors are sent raw)")
    if spec.kind == "none":
        return PayloadPool((), cycle=False)
    sources = build_pool(replace(spec, encoding="raw"), seed)
    payloads: list[Payload] = []
    for source in sources.payloads:
        if spec.kind == "body_file" or source.label.lower().endswith(".json"):
            what = f"--body-file {spec.body_file}" if spec.kind == "body_file" else source.label
            body = parse_json_request(source.body, what)
            size = sum(len(t.raw) for t in body.inputs)
        else:
            tensor = file_tensor(source.body, spec.grpc_input, spec.grpc_datatype)
            body = InferBody(inputs=(tensor,))
            size = source.source_bytes
        payloads.append(Payload(serialize(body), CONTENT_TYPE, size, source.label))
    return PayloadPool(tuple(payloads), cycle=sources.cycle)
