#!/usr/bin/env bash
# Regenerate pathprobe/grpcproto/*_pb2*.py from grpc_predict_v2.proto (run from anywhere).
# Needs grpcio-tools (pip install grpcio-tools); the generated modules are committed, so
# installing pathprobe never needs it. Note in the commit which grpcio-tools made them: the
# modules check the protobuf runtime against the protoc they came from (pyproject pins the range).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
# -I . makes the generated imports absolute (from pathprobe.grpcproto import ...).
"$python" -m grpc_tools.protoc -I . \
    --python_out=. --pyi_out=. --grpc_python_out=. \
    pathprobe/grpcproto/grpc_predict_v2.proto
"$python" -m grpc_tools.protoc --version
