"""Per-request timings as one numpy structured array per (path, step).

All times are ``time.monotonic_ns()`` values (CLOCK_MONOTONIC, shared by every process on the host,
so worker processes and probes line up on one timeline). Durations that did not happen are ``-1``.

* latency (coordinated-omission safe) = ``end_ns - intended_ns``
* service time                        = ``end_ns - actual_ns - max(conn_wait_ns, 0)``: from the
  moment the request could go on the wire (a pooled connection was free), so a client-side pool
  backlog shows in latency, not in service time
* schedule slip                       = ``actual_ns - intended_ns`` (the scheduler's own lateness)
"""

from __future__ import annotations

import enum

import numpy as np
import numpy.typing as npt

RECORD_DTYPE = np.dtype(
    [
        ("seq", np.int64),  # index in the step's request sequence (same on every path)
        ("intended_ns", np.int64),  # when the schedule wanted the request sent
        ("actual_ns", np.int64),  # when the engine dispatched it (before any pool wait)
        ("conn_wait_ns", np.int64),  # waiting for a pooled connection (-1 if not measured)
        ("connect_ns", np.int64),  # TCP connect; -1 when a kept-alive connection was reused
        ("tls_ns", np.int64),  # TLS handshake; -1 without TLS or on reuse
        ("ttfb_ns", np.int64),  # send (after pool wait) -> first response byte; -1 if none
        ("end_ns", np.int64),  # last response byte, or when the failure was seen
        ("status", np.int16),  # HTTP status; 0 without a response
        ("error", np.int8),  # ErrorKind
        ("bytes_out", np.int64),  # request body bytes
        ("bytes_in", np.int64),  # response body bytes
        ("payload_idx", np.int32),  # index into the payload pool; -1 without a body
        ("replica", np.int16),  # index into the step's replica-name table; -1 unknown
    ]
)

Records = npt.NDArray[np.void]


class ErrorKind(enum.IntEnum):
    """Why a request failed. ``NONE`` with a status ≥ 400 is counted as an HTTP error."""

    NONE = 0
    TIMEOUT = 1
    REFUSED = 2
    RESET = 3
    HTTP_4XX = 4
    HTTP_5XX = 5
    TLS = 6
    DNS = 7
    PROTOCOL = 8  # garbage or truncated response
    TOO_LARGE = 9  # response body above the cap
    OTHER = 10
    CONNECT_TIMEOUT = 11
    CANCELLED = 12  # in flight when the run was interrupted: neither a success nor an error
    # A gRPC call that ended with a status other than OK: GRPC_BASE + the status code. Labelled
    # with the code's own name (UNAVAILABLE, DEADLINE_EXCEEDED, ...), as gRPC users know them.
    GRPC_CANCELLED = 33
    GRPC_UNKNOWN = 34
    GRPC_INVALID_ARGUMENT = 35
    GRPC_DEADLINE_EXCEEDED = 36
    GRPC_NOT_FOUND = 37
    GRPC_ALREADY_EXISTS = 38
    GRPC_PERMISSION_DENIED = 39
    GRPC_RESOURCE_EXHAUSTED = 40
    GRPC_FAILED_PRECONDITION = 41
    GRPC_ABORTED = 42
    GRPC_OUT_OF_RANGE = 43
    GRPC_UNIMPLEMENTED = 44
    GRPC_INTERNAL = 45
    GRPC_UNAVAILABLE = 46
    GRPC_DATA_LOSS = 47
    GRPC_UNAUTHENTICATED = 48

    @property
    def label(self) -> str:
        if self.name.startswith("GRPC_"):
            return self.name.removeprefix("GRPC_")
        return {
            ErrorKind.HTTP_4XX: "4xx",
            ErrorKind.HTTP_5XX: "5xx",
        }.get(self, self.name.lower())

    @classmethod
    def grpc(cls, code: int) -> ErrorKind:
        """The kind of gRPC status ``code`` (1-16); OTHER for a code outside the protocol's."""
        try:
            return cls(GRPC_BASE + code) if 1 <= code <= 16 else cls.OTHER
        except ValueError:
            return cls.OTHER


GRPC_BASE = 32


def empty_records(n: int = 0) -> Records:
    """An array of ``n`` records with every duration marked absent."""
    rec = np.zeros(n, dtype=RECORD_DTYPE)
    for name in ("conn_wait_ns", "connect_ns", "tls_ns", "ttfb_ns"):
        rec[name] = -1
    rec["payload_idx"] = -1
    rec["replica"] = -1
    return rec


def is_error(kinds: npt.NDArray[np.int8]) -> npt.NDArray[np.bool_]:
    """Which effective kinds (see :func:`error_kinds`) count in ``errors``."""
    mask: npt.NDArray[np.bool_] = (kinds != ErrorKind.NONE) & (kinds != ErrorKind.CANCELLED)
    return mask


def error_kinds(records: Records) -> npt.NDArray[np.int8]:
    """The effective error kind per request: transport errors, else 4xx/5xx from the status."""
    kinds = records["error"].copy()
    status = records["status"]
    ok_transport = kinds == ErrorKind.NONE
    kinds[ok_transport & (status >= 400) & (status < 500)] = ErrorKind.HTTP_4XX
    kinds[ok_transport & (status >= 500)] = ErrorKind.HTTP_5XX
    return kinds


def completed(records: Records) -> npt.NDArray[np.bool_]:
    """Requests that got a complete response of any status (these enter latency percentiles)."""
    mask: npt.NDArray[np.bool_] = (records["status"] > 0) & (
        (records["error"] == ErrorKind.NONE)
        | (records["error"] == ErrorKind.HTTP_4XX)
        | (records["error"] == ErrorKind.HTTP_5XX)
    )
    return mask
