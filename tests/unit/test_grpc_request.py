"""gRPC paths before any load: URLs, config checks, the JSON request → ModelInferRequest, the
status → error-kind map, and the committed stubs against their .proto."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from pathprobe.config import PayloadSpec, build_config
from pathprobe.errors import UsageError
from pathprobe.grpc_url import is_grpc_url, parse_grpc_url
from pathprobe.grpcproto import grpc_predict_v2_pb2 as pb
from pathprobe.load.grpc_engine import classify_status
from pathprobe.load.oip import build_grpc_pool, model_prefix, parse_json_request, serialize
from pathprobe.model.records import ErrorKind

ROOT = Path(__file__).resolve().parents[2]


def test_grpc_url_names_host_port_model_and_version() -> None:
    target = parse_grpc_url("grpc://127.0.0.1:8001/models/resnet/versions/3")
    assert (target.address, target.model, target.version, target.tls) == (
        "127.0.0.1:8001", "resnet", "3", False,
    )  # fmt: skip
    target = parse_grpc_url("grpcs://[::1]:443/models/m/")
    assert (target.address, target.model, target.version, target.tls) == (
        "[::1]:443",
        "m",
        "",
        True,
    )
    assert is_grpc_url("GRPC://h:1/models/m")
    assert not is_grpc_url("http://[::1")  # malformed, yet no exception


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("grpc://127.0.0.1/models/m", "needs its port"),
        ("grpc://127.0.0.1:8001/", "/models/MODEL"),
        ("grpc://127.0.0.1:8001/v2/models/m/infer", "/models/MODEL"),
        ("grpc://u:pw@127.0.0.1:8001/models/m", "cannot carry credentials"),
        ("grpc://127.0.0.1:8001/models/m?x=1", "no query"),
        ("grpc://127.0.0.1:99999/models/m", "malformed URL"),
    ],
)
def test_bad_grpc_urls_are_one_line_usage_errors(url: str, fragment: str) -> None:
    with pytest.raises(UsageError, match="--path direct") as info:
        build_config({"out": "/tmp/x", "path": {"direct": url}})
    assert fragment in info.value.message
    assert "\n" not in info.value.message


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"path": {"direct": "grpc://h:1/models/m", "proxy": "http://h:2/"}}, "same protocol"),
        ({"engine": "fast"}, "--engine fast speaks HTTP/1.1"),
        ({"workers": 2}, "--workers above 1"),
        ({"encoding": "multipart"}, "--encoding does not apply"),
        ({"insecure": True}, "--insecure is not available"),
        ({"header": ["grpc-timeout: 1S"]}, "gRPC metadata"),
        ({"grpc_datatype": "FP32"}, "grpc_datatype must be BYTES or UINT8"),
    ],
)
def test_grpc_config_checks(raw: dict[str, Any], fragment: str) -> None:
    base: dict[str, Any] = {"out": "/tmp/x", "path": {"direct": "grpc://h:1/models/m"}}
    with pytest.raises(UsageError) as info:
        build_config({**base, **raw})
    assert fragment in info.value.message


def test_grpc_config_accepted_with_input_name() -> None:
    config = build_config(
        {"out": "/tmp/x", "path": {"lb": "grpc://h:3/models/m", "direct": "grpc://h:1/models/m"},
         "payload": "image:16-32", "grpc_input": "jpeg", "grpc_datatype": "UINT8"}
    )  # fmt: skip
    assert [p.name for p in config.paths] == ["direct", "lb"]
    assert (config.load.payload.grpc_input, config.load.payload.grpc_datatype) == ("jpeg", "UINT8")


def request_of(body: bytes, model: str = "m", version: str = "") -> Any:
    """What a server parses from the bytes the engine sends: the path's prefix, then the body."""
    return pb.ModelInferRequest.FromString(model_prefix(model, version) + body)


def test_json_request_becomes_raw_input_contents() -> None:
    doc = {
        "id": "r1",
        "inputs": [
            {"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5, 6.5]]},
            {"name": "ids", "shape": [3], "datatype": "INT64", "data": [1, -2, 3]},
            {"name": "ok", "shape": [2], "datatype": "BOOL", "data": [True, False]},
            {"name": "s", "shape": [2], "datatype": "BYTES", "data": ["ab", "é"]},
        ],
        "outputs": [{"name": "y"}],
        "parameters": {"priority": 2, "trace": True},
    }
    body = parse_json_request(json.dumps(doc), "req.json")
    request = request_of(serialize(body), "resnet", "2")
    assert (request.model_name, request.model_version, request.id) == ("resnet", "2", "r1")
    assert [(t.name, t.datatype, list(t.shape)) for t in request.inputs] == [
        ("x", "FP32", [2, 3]), ("ids", "INT64", [3]), ("ok", "BOOL", [2]), ("s", "BYTES", [2]),
    ]  # fmt: skip
    raw = request.raw_input_contents
    assert raw[0] == np.array([1, 2, 3, 4, 5, 6.5], "<f4").tobytes()
    assert raw[1] == np.array([1, -2, 3], "<i8").tobytes()
    assert raw[2] == b"\x01\x00"
    assert raw[3] == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 2) + "é".encode()
    assert not request.inputs[0].HasField("contents")  # raw, as Triton's clients send it
    assert [o.name for o in request.outputs] == ["y"]
    assert request.parameters["priority"].int64_param == 2
    assert request.parameters["trace"].bool_param is True


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{not json", "not a JSON inference request (line 1"),
        ('{"inputs": []}', '"inputs"'),
        ('{"inputs": [{"name": "x", "shape": [1], "datatype": "FLOAT", "data": [1]}]}',
         "unknown datatype 'FLOAT'"),
        ('{"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]}',
         "shape [2, 2] holds 4 elements but data has 3"),
        ('{"inputs": [{"name": "x", "shape": [1], "datatype": "UINT8", "data": [256]}]}',
         "does not fit UINT8"),
        ('{"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1.5]}]}',
         "must be integers"),
        ('{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}]}',
         "must be numbers"),
        ('{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}',
         "non-negative integers"),
        ('{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}', 'no "data"'),
    ],
)  # fmt: skip
def test_bad_json_requests_are_one_line_usage_errors(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_json_request(text, "--body-file req.json")
    assert fragment in info.value.message
    assert info.value.message.startswith("--body-file req.json")
    assert "\n" not in info.value.message


def test_image_payloads_become_one_bytes_or_uint8_tensor() -> None:
    spec = PayloadSpec(kind="image", image_min_px=16, image_max_px=24, pool_size=3)
    pool = build_grpc_pool(spec, seed=1)
    assert len(pool) == 3
    for payload in pool.payloads:
        request = request_of(payload.body)
        (tensor,) = request.inputs
        assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("image", "BYTES", [1])
        (raw,) = request.raw_input_contents
        assert struct.unpack_from("<I", raw)[0] == len(raw) - 4 == payload.source_bytes
        assert raw[4:6] == b"\xff\xd8"  # a JPEG
    pool = build_grpc_pool(
        PayloadSpec(kind="image", image_min_px=16, image_max_px=24, grpc_input="in0",
                    grpc_datatype="UINT8"), seed=1,
    )  # fmt: skip
    tensor = request_of(pool.payloads[0].body).inputs[0]
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == (
        "in0", "UINT8", [pool.payloads[0].source_bytes],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("code", "details", "kind"),
    [
        (grpc.StatusCode.OK, "", ErrorKind.NONE),
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: "
         "UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused",
         ErrorKind.REFUSED),
        (grpc.StatusCode.UNAVAILABLE, "Socket closed", ErrorKind.GRPC_UNAVAILABLE),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", ErrorKind.GRPC_DEADLINE_EXCEEDED),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (9 vs. 4)",
         ErrorKind.TOO_LARGE),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", ErrorKind.GRPC_RESOURCE_EXHAUSTED),
        (grpc.StatusCode.NOT_FOUND, "unknown model", ErrorKind.GRPC_NOT_FOUND),
        (grpc.StatusCode.UNAUTHENTICATED, "", ErrorKind.GRPC_UNAUTHENTICATED),
    ],
)  # fmt: skip
def test_grpc_status_to_error_kind(code: grpc.StatusCode, details: str, kind: ErrorKind) -> None:
    assert classify_status(code, details) == kind


def test_error_labels_old_stable_grpc_named() -> None:
    # Existing labels are a JSON contract (errors_by_kind): they must not move.
    assert [k.label for k in ErrorKind if k < 32] == [
        "none", "timeout", "refused", "reset", "4xx", "5xx", "tls", "dns", "protocol",
        "too_large", "other", "connect_timeout", "cancelled",
    ]  # fmt: skip
    assert ErrorKind.GRPC_UNAVAILABLE.label == "UNAVAILABLE"
    assert ErrorKind.grpc(grpc.StatusCode.DEADLINE_EXCEEDED.value[0]).label == "DEADLINE_EXCEEDED"
    assert {ErrorKind.grpc(c).label for c in range(1, 17)} == {
        c.name for c in grpc.StatusCode if c != grpc.StatusCode.OK
    }
    assert ErrorKind.grpc(99) == ErrorKind.OTHER


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    """The generated modules are what scripts/gen_grpc_stubs.sh makes from the .proto now."""
    pytest.importorskip("grpc_tools")
    proto = "pathprobe/grpcproto/grpc_predict_v2.proto"
    argv = [sys.executable, "-m", "grpc_tools.protoc", "-I", ".", f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", proto]  # fmt: skip
    subprocess.run(argv, cwd=ROOT, check=True, timeout=60)
    for name in (
        "grpc_predict_v2_pb2.py",
        "grpc_predict_v2_pb2.pyi",
        "grpc_predict_v2_pb2_grpc.py",
    ):
        fresh = (tmp_path / "pathprobe/grpcproto" / name).read_text()
        assert fresh == (ROOT / "pathprobe/grpcproto" / name).read_text(), f"{name} is stale"


def test_core_install_never_imports_grpc() -> None:
    """HTTP runs work without the grpc extra: nothing on their way imports grpcio."""
    code = (
        "import sys, pathprobe.cli.main, pathprobe.session, pathprobe.load.select; "
        "from pathprobe.config import build_config; "
        "build_config({'out': '/tmp/x', 'path': {'direct': 'grpc://h:1/models/m'}}); "
        "assert 'grpc' not in sys.modules and 'google.protobuf' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_missing_grpcio_is_a_usage_error_naming_the_extra() -> None:
    """Without grpcio a gRPC path stops before any load: exit 2, 'install pathprobe[grpc]'."""
    code = (
        "import sys; sys.modules['grpc'] = None; "
        "from pathprobe.cli.main import main; "
        "sys.argv = ['pathprobe', 'diagnose', '--path', 'direct=grpc://127.0.0.1:1/models/m', "
        "'--out', '/tmp/pathprobe-nogrpc', '--dry-run']; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "install pathprobe[grpc]" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_model_statistics_window_split() -> None:
    from pathprobe.probes.model_stats import Counters, window_split

    before = Counters(success=100, fail=1, phase_ns=(0, 1_000_000, 500_000_000, 2_000_000))
    after = Counters(
        success=150, fail=3, phase_ns=(100_000_000, 1_500_000, 1_000_000_000, 3_000_000)
    )
    split = window_split(before, after)
    assert split == {
        "requests": 50, "failed": 2, "queue_ms": 2.0, "compute_input_ms": 0.01,
        "compute_infer_ms": 10.0, "compute_output_ms": 0.02,
    }  # fmt: skip
    assert window_split(after, after)["compute_infer_ms"] is None  # nothing completed
    assert window_split(after, before)["requests"] is None  # restarted: counters went down
