"""``TCP_INFO`` of a socket the client holds: the kernel's own RTT and retransmission counters.

A cheap second source beside the capture (no root needed, per socket, no packets), not a
substitute for it: it only sees the client's sockets, and only while they are open.

The layout is Linux's ``struct tcp_info`` (include/uapi/linux/tcp.h). Older kernels return a
shorter struct; fields beyond what the kernel returned are left out of the result.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Protocol


class _SocketLike(Protocol):
    """``socket.socket``, or asyncio's ``TransportSocket`` from ``get_extra_info("socket")``."""

    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...


TCP_INFO = getattr(socket, "TCP_INFO", 11)
_REQUEST_BYTES = 256

# (name, struct format, offset). The first byte block: state, ca_state, retransmits, probes,
# backoff, options, then two bytes of bit fields (snd_wscale:4, rcv_wscale:4, …).
_FIELDS: tuple[tuple[str, str, int], ...] = (
    ("state", "B", 0),
    ("ca_state", "B", 1),
    ("retransmits", "B", 2),  # consecutive RTO retransmissions now outstanding
    ("probes", "B", 3),
    ("backoff", "B", 4),
    ("options", "B", 5),
    ("rto_us", "I", 8),
    ("ato_us", "I", 12),
    ("snd_mss", "I", 16),
    ("rcv_mss", "I", 20),
    ("unacked", "I", 24),
    ("sacked", "I", 28),
    ("lost", "I", 32),
    ("retrans", "I", 36),  # segments retransmitted and not yet acknowledged
    ("fackets", "I", 40),
    ("last_data_sent_ms", "I", 44),
    ("last_ack_sent_ms", "I", 48),
    ("last_data_recv_ms", "I", 52),
    ("last_ack_recv_ms", "I", 56),
    ("pmtu", "I", 60),
    ("rcv_ssthresh", "I", 64),
    ("rtt_us", "I", 68),  # smoothed RTT
    ("rttvar_us", "I", 72),
    ("snd_ssthresh", "I", 76),
    ("snd_cwnd", "I", 80),
    ("advmss", "I", 84),
    ("reordering", "I", 88),
    ("rcv_rtt_us", "I", 92),
    ("rcv_space", "I", 96),
    ("total_retrans", "I", 100),  # every retransmission over the connection's life
    ("pacing_rate", "Q", 104),
    ("max_pacing_rate", "Q", 112),
    ("bytes_acked", "Q", 120),
    ("bytes_received", "Q", 128),
    ("segs_out", "I", 136),
    ("segs_in", "I", 140),
    ("notsent_bytes", "I", 144),
    ("min_rtt_us", "I", 148),
    ("data_segs_in", "I", 152),
    ("data_segs_out", "I", 156),
    ("delivery_rate", "Q", 160),
    ("busy_time_us", "Q", 168),
    ("rwnd_limited_us", "Q", 176),
    ("sndbuf_limited_us", "Q", 184),
    ("delivered", "I", 192),
    ("delivered_ce", "I", 196),
    ("bytes_sent", "Q", 200),
    ("bytes_retrans", "Q", 208),
    ("dsack_dups", "I", 216),
    ("reord_seen", "I", 220),
    ("rcv_ooopack", "I", 224),
    ("snd_wnd", "I", 228),
)


def parse_tcp_info(raw: bytes) -> dict[str, Any]:
    """Decode a ``struct tcp_info`` buffer (native byte order) into named fields."""
    out: dict[str, Any] = {}
    for name, fmt, offset in _FIELDS:
        size = struct.calcsize(fmt)
        if offset + size > len(raw):
            break
        out[name] = struct.unpack_from("=" + fmt, raw, offset)[0]
    if len(raw) > 7:
        out["snd_wscale"] = raw[6] & 0x0F
        out["rcv_wscale"] = raw[6] >> 4
    return out


def tcp_info(sock: _SocketLike) -> dict[str, Any]:
    """``TCP_INFO`` of a connected TCP socket. Raises ``OSError`` if the socket is not TCP.

    From aiohttp/asyncio: ``tcp_info(resp.connection.transport.get_extra_info("socket"))``."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, _REQUEST_BYTES)
    return parse_tcp_info(raw)
