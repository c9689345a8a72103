"""``grpc://`` and ``grpcs://`` path URLs: what they name, checked without importing grpcio.

A gRPC path is ``grpc://HOST:PORT/models/MODEL[/versions/VERSION]`` (``grpcs://`` for TLS), the
model addressed the way the Open Inference Protocol's HTTP endpoint spells it. The port is
required: gRPC has no default port (Triton listens on 8001, KServe on 8081).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from pathprobe.errors import UsageError

GRPC_SCHEMES = ("grpc", "grpcs")
# Model names and versions as Triton and KServe accept them: no slash, no control characters.
_SEGMENT = r"[^/\s\x00-\x1f\x7f]{1,256}"
_MODEL_PATH = re.compile(
    rf"^/models/(?P<model>{_SEGMENT})(?:/versions/(?P<version>{_SEGMENT}))?/?$"
)


@dataclass(frozen=True)
class GrpcTarget:
    """Where ModelInfer goes: ``host:port`` (the channel target), the model and its version."""

    host: str
    port: int
    model: str
    version: str  # "" lets the server choose
    tls: bool

    @property
    def address(self) -> str:
        """The channel target, ``host:port`` (IPv6 hosts bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def is_grpc_url(url: str) -> bool:
    """Whether ``url`` names a gRPC path (``grpc://`` or ``grpcs://``); never raises (a
    malformed URL is for :func:`parse_grpc_url` or the HTTP checks to name)."""
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() in GRPC_SCHEMES


def parse_grpc_url(url: str, what: str = "URL") -> GrpcTarget:
    """The target of a ``grpc(s)://`` URL; :class:`UsageError` naming what is wrong otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"{what}: malformed URL {url!r} ({exc})") from None
    if parts.scheme not in GRPC_SCHEMES:
        raise UsageError(f"{what}: not a grpc:// or grpcs:// URL: {url!r}")
    if not parts.hostname:
        raise UsageError(f"{what}: URL has no host: {url!r}")
    if port is None or port == 0:
        raise UsageError(f"{what}: a gRPC URL needs its port (grpc://HOST:PORT/models/MODEL)")
    if parts.username is not None:
        raise UsageError(f"{what}: a gRPC URL cannot carry credentials; use --header")
    if parts.query or parts.fragment:
        raise UsageError(f"{what}: a gRPC URL has no query or fragment: {url!r}")
    match = _MODEL_PATH.match(parts.path)
    if match is None:
        raise UsageError(
            f"{what}: a gRPC URL names its model as /models/MODEL[/versions/V], got "
            f"{parts.path or '/'!r}"
        )
    return GrpcTarget(
        host=parts.hostname,
        port=port,
        model=unquote(match.group("model")),
        version=unquote(match.group("version") or ""),
        tls=parts.scheme == "grpcs",
    )


def require_grpc() -> None:
    """Raise :class:`UsageError` (exit 2) unless grpcio and the generated stubs import.

    Call it before grpc is first imported: it also keeps grpcio's C core from logging at INFO
    to stderr (TLS handshake failures, GOAWAYs), which would break the CLI's one-line errors;
    ``GRPC_VERBOSITY`` set by the user wins.
    """
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    try:
        import grpc  # noqa: F401

        from pathprobe.grpcproto import grpc_predict_v2_pb2  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            f"grpc:// paths need grpcio and protobuf ({exc.msg}): install pathprobe[grpc]"
        ) from None
    except Exception as exc:  # protobuf's runtime-version check raises its own error type
        raise UsageError(
            f"grpc:// paths need a protobuf runtime matching pathprobe's stubs ({exc}): "
            "install pathprobe[grpc]"
        ) from None
