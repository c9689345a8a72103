"""The Open Inference Protocol's gRPC messages (``inference.GRPCInferenceService``).

``grpc_predict_v2.proto`` is the source; ``grpc_predict_v2_pb2*.py`` are generated from it by
``scripts/gen_grpc_stubs.sh`` and committed. Importing them needs the ``grpc`` extra
(``pip install pathprobe[grpc]``): use :func:`pathprobe.grpc_url.require_grpc` to get a
one-line :class:`~pathprobe.errors.UsageError` instead of an ImportError.
"""
