"""The gRPC load engine: ``inference.GRPCInferenceService/ModelInfer`` over grpcio's asyncio API.

It fills exactly the records of the HTTP engines (:mod:`pathprobe.load.engine`), so the store,
the tallies, the histograms and every analysis work unchanged:

* open loop from the seeded plan, latency from the intended send time; closed loop with
  ``concurrency`` users;
* ``--connections N`` opens N channels, each its own HTTP/2 connection (a local subchannel pool:
  grpcio would otherwise share one connection between channels to the same target), used round
  robin; requests on one channel are multiplexed as HTTP/2 streams;
* ``connect_ns`` is the time the request that found its channel unconnected waited for it to
  become READY (TCP, and TLS for ``grpcs://``, and the HTTP/2 preface); requests that arrived
  meanwhile count that wait as ``conn_wait_ns``;
* ``ttfb_ns`` ends when the response's initial metadata (its HTTP/2 HEADERS) arrived;
* ``status`` is 200 for gRPC OK (the HTTP/2 ``:status`` of every gRPC response); any other gRPC
  status is an error of its own kind (labelled with the code's name, e.g. ``UNAVAILABLE``) with
  status 0, except failures the HTTP engines already name: refused or reset connections, TLS,
  DNS, an oversized response;
* captured headers (``server-timing`` & co.) are read from the initial metadata, else from the
  trailing metadata.

Request bodies are serialized before the clock starts (:mod:`pathprobe.load.oip`); the engine only
prepends each path's model name. Responses are counted as bytes and never decoded.
"""

from __future__ import annotations

import os

# grpcio's C core logs at INFO to stderr (GOAWAYs, reconnects); keep the one-line contract of the
# CLI unless the user asks for more. Must be set before grpc is first imported (select.py's
# require_grpc does it too, as it imports grpc first).
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import asyncio  # noqa: E402
import contextlib  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import grpc  # noqa: E402
import grpc.aio  # noqa: E402

from pathprobe.config import LoadProfile, TLSOptions  # noqa: E402
from pathprobe.grpc_url import GrpcTarget, parse_grpc_url  # noqa: E402
from pathprobe.grpcproto import grpc_predict_v2_pb2 as pb  # noqa: E402
from pathprobe.load.engine import (  # noqa: E402
    MAX_HEADER_VALUE_CHARS,
    EngineBase,
    EngineOptions,
    RequestTasks,
    build_step_result,
    replica_id,
)
from pathprobe.load.oip import model_prefix  # noqa: E402
from pathprobe.load.payloads import PayloadPool  # noqa: E402
from pathprobe.load.schedule import StepPlan  # noqa: E402
from pathprobe.model.records import ErrorKind  # noqa: E402
from pathprobe.model.results import StepResult  # noqa: E402

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
READY_METHOD = "/inference.GRPCInferenceService/ModelReady"

# gRPC status → the error kind recorded. Codes not listed keep a kind of their own (see records).
_GRPC_KINDS: dict[grpc.StatusCode, ErrorKind] = {
    code: ErrorKind.grpc(code.value[0]) for code in grpc.StatusCode if code != grpc.StatusCode.OK
}


def classify_status(code: grpc.StatusCode, details: str | None) -> ErrorKind:
    """The :class:`ErrorKind` of a finished call with gRPC status ``code``.

    UNAVAILABLE and RESOURCE_EXHAUSTED are raised by grpcio itself for failures the HTTP engines
    name (the server refused or reset the connection, TLS or DNS failed, the response was above
    the size cap): those keep the HTTP engines' kinds so paths compare across protocols.
    """
    if code == grpc.StatusCode.OK:
        return ErrorKind.NONE
    text = (details or "").lower()
    if code == grpc.StatusCode.UNAVAILABLE:
        if "connection refused" in text:
            return ErrorKind.REFUSED
        if "connection reset" in text or "broken pipe" in text:
            return ErrorKind.RESET
        if "ssl" in text or "handshake" in text or "certificate" in text:
            return ErrorKind.TLS
        if "dns resolution failed" in text:
            return ErrorKind.DNS
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in text:
        return ErrorKind.TOO_LARGE
    return _GRPC_KINDS.get(code, ErrorKind.OTHER)


def channel_credentials(tls: TLSOptions) -> grpc.ChannelCredentials:
    """TLS credentials from ``--cacert`` and ``--cert/--key`` (files already checked by config).

    Without ``--key`` the key is read from the ``--cert`` file (a combined PEM), as ssl does.
    """
    roots = tls.cacert.read_bytes() if tls.cacert is not None else None
    if tls.cert is None:
        return grpc.ssl_channel_credentials(root_certificates=roots)
    key_file = tls.key if tls.key is not None else tls.cert
    return grpc.ssl_channel_credentials(
        root_certificates=roots,
        private_key=key_file.read_bytes(),
        certificate_chain=tls.cert.read_bytes(),
    )


def open_channel(target: GrpcTarget, tls: TLSOptions, max_response_bytes: int) -> grpc.aio.Channel:
    """A channel on its own HTTP/2 connection to ``target``, without retries that would hide
    failures."""
    options: list[tuple[str, Any]] = [
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.primary_user_agent", "pathprobe"),
        ("grpc.enable_retries", 0),
        ("grpc.max_receive_message_length", max_response_bytes),
        ("grpc.max_send_message_length", -1),
    ]
    if target.tls:
        return grpc.aio.secure_channel(target.address, channel_credentials(tls), options)
    return grpc.aio.insecure_channel(target.address, options)


def metadata_of(profile: LoadProfile) -> tuple[tuple[str, str], ...]:
    """``--header`` values as gRPC metadata (keys are lower case in HTTP/2)."""
    return tuple((name.lower(), value) for name, value in profile.headers)


async def probe_endpoint(
    url: str, tls: TLSOptions, timeout_s: float, headers: Sequence[tuple[str, str]] = ()
) -> str | None:
    """``None`` when ``url`` answers gRPC and knows its model, else one line saying why not.

    Asks ``ModelReady`` once: a port that does not speak gRPC, a server without the model
    (NOT_FOUND) or with the model not ready are reported; a server that does not implement
    ModelReady (UNIMPLEMENTED) passes, since ModelInfer is what the load needs.
    """
    target = parse_grpc_url(url)
    channel = open_channel(target, tls, 4 << 20)
    ready = channel.unary_unary(
        READY_METHOD,
        request_serializer=pb.ModelReadyRequest.SerializeToString,
        response_deserializer=pb.ModelReadyResponse.FromString,
    )
    request = pb.ModelReadyRequest(name=target.model, version=target.version)
    model = target.model + (f" version {target.version}" if target.version else "")
    try:
        answer = await ready(request, timeout=timeout_s, metadata=tuple(headers))
    except grpc.aio.AioRpcError as exc:
        code, details = exc.code(), _one_line(exc.details())
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return None
        if code == grpc.StatusCode.NOT_FOUND:
            return f"the server has no model {model!r} (NOT_FOUND: {details})"
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"no gRPC answer within {timeout_s:g} s (is this port a gRPC server?)"
        if classify_status(code, details) == ErrorKind.TLS:
            return f"TLS with the server failed (is --cacert its CA?): {details}"
        if code == grpc.StatusCode.UNAVAILABLE:
            return f"does not answer gRPC (UNAVAILABLE: {details})"
        return f"ModelReady failed ({code.name}: {details})"
    finally:
        await channel.close(grace=None)
    if not answer.ready:
        return f"model {model!r} is not ready on the server (ModelReady answered false)"
    return None


def _one_line(text: str | None, limit: int = 200) -> str:
    line = " ".join((text or "").split())
    return line if len(line) <= limit else line[:limit] + "…"


class GrpcEngine(EngineBase):
    """Runs steps of ModelInfer against one ``grpc(s)://`` URL per path."""

    name = "grpc"

    def __init__(
        self,
        profile: LoadProfile,
        pool: PayloadPool,
        options: EngineOptions,
        stop: asyncio.Event | None = None,
    ) -> None:
        super().__init__(profile, pool, options, stop)
        self._metadata = metadata_of(profile)

    async def run_step(self, path: str, url: str, plan: StepPlan) -> StepResult:
        """Send ``plan`` to ``url``; returns when every request finished, failed or timed out."""
        run = _StepRun(self, path, url, plan)
        return await run.run()


@dataclass
class _Channel:
    """One channel (one HTTP/2 connection) and whether a request is bringing it up."""

    channel: grpc.aio.Channel
    infer: Any  # grpc.aio.UnaryUnaryMultiCallable over raw bytes
    connecting: asyncio.Future[None] | None = None
    ready: bool = False


class _StepRun(RequestTasks):
    """The state of one step in flight."""

    def __init__(self, engine: GrpcEngine, path: str, url: str, plan: StepPlan) -> None:
        super().__init__(engine, path, url, plan)
        self.engine = engine
        self.target = parse_grpc_url(url)
        prefix = model_prefix(self.target.model, self.target.version)
        # Built before the clock starts: the model's fields, then the pool's tensors.
        self.bodies = [prefix + p.body for p in engine._pool.payloads]
        self.bare = prefix
        self.capture = tuple(self.options.capture_headers)
        self.replica_key = (self.options.replica_header or "").lower() or None
        self.channels: list[_Channel] = []
        self.next_channel = 0
        self.timeout_ns = int(self.profile.timeout_s * 1e9)

    def _open_channels(self) -> None:
        for _ in range(self.profile.connections):
            channel = open_channel(self.target, self.profile.tls, self.options.max_response_bytes)
            # Raw bytes both ways: the request is serialized already, the response is counted.
            infer = channel.unary_unary(INFER_METHOD)
            self.channels.append(_Channel(channel, infer))

    async def run(self) -> StepResult:
        self._open_channels()
        try:
            await self.send_plan(self.engine._stop)
        finally:
            await asyncio.gather(
                *(c.channel.close(grace=None) for c in self.channels), return_exceptions=True
            )
        return build_step_result(self, GrpcEngine.name, interrupted=self.engine._stop.is_set())

    async def _connect(self, chan: _Channel) -> None:
        """Bring ``chan`` up: until READY, a failure (TRANSIENT_FAILURE) or the connect timeout.

        A failure is not raised: the request then goes out and fails with grpcio's own status and
        details (refused, TLS, …), which :func:`classify_status` names.
        """
        channel = chan.channel
        state = channel.get_state(try_to_connect=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.profile.connect_timeout_s):
                while state not in (
                    grpc.ChannelConnectivity.READY,
                    grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                    grpc.ChannelConnectivity.SHUTDOWN,
                ):
                    await channel.wait_for_state_change(state)
                    state = channel.get_state(try_to_connect=True)
        chan.ready = state == grpc.ChannelConnectivity.READY

    async def _ready(self, chan: _Channel, actual_ns: int) -> tuple[int, int]:
        """``(conn_wait_ns, connect_ns)`` of a request on ``chan``; brings the channel up first
        when it is not READY (the connection broke, or this is its first request)."""
        if chan.ready and (chan.channel.get_state() == grpc.ChannelConnectivity.READY):
            return 0, -1
        if chan.connecting is not None:  # another request is bringing it up: wait for that
            await asyncio.shield(chan.connecting)
            return time.monotonic_ns() - actual_ns, -1
        loop = asyncio.get_running_loop()
        chan.connecting = loop.create_future()
        t0 = time.monotonic_ns()
        try:
            await self._connect(chan)
        finally:
            chan.connecting.set_result(None)
            chan.connecting = None
        return max(t0 - actual_ns, 0), time.monotonic_ns() - t0 if chan.ready else -1

    async def send_request(self, seq: int, intended_ns: int | None) -> None:
        """Send request ``seq``; ``intended_ns`` None (closed loop) means "now"."""
        self.in_flight += 1
        payload_idx = self.plan.payload_for(seq)
        body = self.bodies[payload_idx] if payload_idx >= 0 else self.bare
        chan = self.channels[self.next_channel]
        self.next_channel = (self.next_channel + 1) % len(self.channels)
        actual_ns = time.monotonic_ns()
        if intended_ns is None:
            intended_ns = actual_ns
        conn_wait_ns, connect_ns, first_ns = 0, -1, -1
        status, error, bytes_in = 0, ErrorKind.NONE, 0
        initial: Any = None
        trailing: Any = None
        call: Any = None
        try:
            conn_wait_ns, connect_ns = await self._ready(chan, actual_ns)
            remaining_s = (self.timeout_ns - (time.monotonic_ns() - actual_ns)) / 1e9
            call = chan.infer(body, timeout=max(remaining_s, 0.001), metadata=self.engine._metadata)
            initial = await call.initial_metadata()
            first_ns = time.monotonic_ns()
            response: bytes = await call
            bytes_in = len(response)
            status = 200
            if self.capture or self.replica_key:
                trailing = await call.trailing_metadata()
        except asyncio.CancelledError:
            error = ErrorKind.CANCELLED
            if call is not None:
                call.cancel()
        except grpc.aio.AioRpcError as exc:
            error = classify_status(exc.code(), exc.details())
            initial, trailing = exc.initial_metadata(), exc.trailing_metadata()
        except Exception:  # every failure is a measurement, never a crash
            error = ErrorKind.OTHER
        end_ns = time.monotonic_ns()
        ttfb_ns = first_ns - actual_ns - conn_wait_ns if first_ns >= 0 and status else -1
        captured: list[str | None] | None = None
        replica = -1
        if self.capture or self.replica_key:
            found = _metadata_values(initial, trailing)
            if self.capture:
                captured = [found.get(name) for name in self.capture]
            if self.replica_key is not None and self.replica_key in found:
                replica = replica_id(self.replica_index, found[self.replica_key][:64])
        self.in_flight -= 1
        self.finished += 1
        self.recent.append(error not in (ErrorKind.NONE, ErrorKind.CANCELLED))
        self.store.add(
            (
                seq, intended_ns, actual_ns, conn_wait_ns, connect_ns, -1, ttfb_ns, end_ns,
                status, int(error), len(body), bytes_in, payload_idx, replica,
            ),
            captured,
        )  # fmt: skip


def _metadata_values(*blocks: Any) -> dict[str, str]:
    """The first value of each text key across metadata ``blocks`` (initial, then trailing)."""
    found: dict[str, str] = {}
    for block in blocks:
        if not block:
            continue
        for key, value in block:
            if key not in found and isinstance(value, str):
                found[key] = value[:MAX_HEADER_VALUE_CHARS]
    return found
