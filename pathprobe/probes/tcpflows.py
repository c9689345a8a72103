"""Pure analysis of captured TCP packets for one server endpoint: the network probe's numbers.

Input is a list of :class:`TcpPacket` in capture order (as :mod:`pathprobe.probes.capture` parses
them from tcpdump's pcap) and the server's ``(addresses, port)``; output is the window summary the
report and the attribution read. No sockets, no clocks: everything here is unit-testable with
hand-made packets.

Definitions (all from the client side, where the capture runs):

* **handshake** — a SYN from the client answered by a SYN/ACK from the server on the same flow.
  Its RTT is ``SYN/ACK time - SYN time``; when the SYN was retransmitted the sample is ambiguous
  (Karn's rule) and is left out of ``rtt_ms`` but the handshake still counts.
* **retransmission** — a data segment (payload > 0) whose bytes lie entirely at or below the highest
  sequence number already seen in that direction (32-bit wrap-around handled).
  ``retransmission_rate`` = retransmitted data segments ÷ all data segments.
* **bytes_to_server / bytes_from_server** — new TCP payload bytes (the advance of the highest
  sequence number), so retransmitted bytes are not counted twice and the totals reconcile with what
  the application sent and received (HTTP headers included).
* **wire_ttfb** — per connection, from the last payload byte of a request (client → server) to the
  first payload byte of the response: HTTP/1.1 with one request at a time per connection.
* **zero_windows** — non-SYN, non-RST segments advertising a receive window of 0.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

# TCP flag bits.
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10

# Linux packet types in cooked (SLL/SLL2) captures.
PACKET_HOST = 0
PACKET_OUTGOING = 4

_SEQ_MOD = 1 << 32
_SEQ_HALF = 1 << 31

# Two copies of one loopback packet on an ``any`` capture are handed to the packet taps a few
# microseconds apart (transmit, then receive of the same skb). A genuine retransmission cannot come
# this soon: Linux's smallest retransmission timer (the tail-loss probe) is 10 ms.
LOOPBACK_TWIN_MAX_GAP_NS = 2_000_000


class TcpPacket(NamedTuple):
    """One TCP segment as captured. Addresses are packed bytes (4 or 16)."""

    ts_ns: int  # capture timestamp (CLOCK_REALTIME, nanoseconds)
    src: bytes
    sport: int
    dst: bytes
    dport: int
    flags: int
    seq: int
    ack: int
    win: int  # raw advertised window, before scaling
    payload_len: int
    pkttype: int = -1  # SLL packet type when known, else -1


def _seq_after(a: int, b: int) -> bool:
    """``a`` is after ``b`` in 32-bit sequence space."""
    return 0 < ((a - b) % _SEQ_MOD) < _SEQ_HALF


def dedupe_loopback(packets: Iterable[TcpPacket]) -> Iterator[TcpPacket]:
    """Drop the second copy of packets seen twice on loopback.

    A plain ``AF_PACKET`` socket bound to all interfaces sees each loopback packet twice: once as
    sent (``PACKET_OUTGOING``) and once as received. (libpcap 1.10 already drops the outgoing
    copy on ``lo`` and on ``any``, so tcpdump's pcaps normally need nothing; this keeps the
    analysis right for captures from other tools.) A copy is a twin when its headers are
    identical to a packet of the other packet type seen at most
    :data:`LOOPBACK_TWIN_MAX_GAP_NS` before. Without packet types (Ethernet captures) nothing is
    dropped: a duplicate there is a real retransmission.
    """
    # header key -> (ts_ns, pkttype) of the latest unmatched copy
    recent: dict[tuple[Any, ...], tuple[int, int]] = {}
    for pkt in packets:
        if pkt.pkttype < 0:
            yield pkt
            continue
        key = (
            pkt.src,
            pkt.sport,
            pkt.dst,
            pkt.dport,
            pkt.flags,
            pkt.seq,
            pkt.ack,
            pkt.win,
            pkt.payload_len,
        )
        prev = recent.get(key)
        if (
            prev is not None
            and prev[1] != pkt.pkttype
            and pkt.ts_ns - prev[0] <= LOOPBACK_TWIN_MAX_GAP_NS
        ):
            del recent[key]  # matched: a third identical packet is a retransmission again
            continue
        recent[key] = (pkt.ts_ns, pkt.pkttype)
        yield pkt
        if len(recent) > 4096:  # keep memory bounded: twins are microseconds apart
            cutoff = pkt.ts_ns - LOOPBACK_TWIN_MAX_GAP_NS
            recent = {k: v for k, v in recent.items() if v[0] >= cutoff}


def distribution_ms(values_ns: Iterable[int] | np.ndarray[Any, Any]) -> dict[str, Any]:
    """``{p50, p90, p99, mean, count}`` in milliseconds; ``None`` percentiles when empty."""
    arr = (
        np.asarray(
            list(values_ns) if not isinstance(values_ns, np.ndarray) else values_ns,
            dtype=np.float64,
        )
        / 1e6
    )
    if arr.size == 0:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "count": 0}
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "p50": round(float(p50), 4),
        "p90": round(float(p90), 4),
        "p99": round(float(p99), 4),
        "mean": round(float(arr.mean()), 4),
        "count": int(arr.size),
    }


@dataclass
class _Direction:
    """Sequence-space state of one direction of one flow."""

    high: int | None = None  # highest sequence number (end of data) seen
    syn_seen: bool = False


@dataclass
class _Flow:
    to_server: _Direction = field(default_factory=_Direction)
    from_server: _Direction = field(default_factory=_Direction)
    syn_ts: int | None = None
    syn_count: int = 0
    handshake_done: bool = False
    req_last_ts: int | None = None  # last new request byte not yet answered
    awaiting_response: bool = False


@dataclass
class FlowStats:
    """Accumulated counts; :meth:`summary` turns them into the report's keys."""

    packets: int = 0
    handshakes: int = 0
    syn_retransmissions: int = 0
    rtt_ns: list[int] = field(default_factory=list)
    data_segments: int = 0
    retransmissions: int = 0
    resets: int = 0
    resets_from_server: int = 0
    zero_windows: int = 0
    bytes_to_server: int = 0
    bytes_from_server: int = 0
    wire_ttfb_ns: list[int] = field(default_factory=list)
    connections: int = 0
    connections_opened: int = 0  # flows whose SYN was seen in the window
    # Connections per server address: a name that resolves to several replicas shows its spread.
    connections_by_server: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        rate = self.retransmissions / self.data_segments if self.data_segments else 0.0
        return {
            "packets": self.packets,
            "handshakes": self.handshakes,
            "syn_retransmissions": self.syn_retransmissions,
            "rtt_ms": distribution_ms(self.rtt_ns),
            "data_segments": self.data_segments,
            "retransmissions": self.retransmissions,
            "retransmission_rate": round(rate, 6),
            "resets": self.resets,
            "resets_from_server": self.resets_from_server,
            "zero_windows": self.zero_windows,
            "bytes_to_server": self.bytes_to_server,
            "bytes_from_server": self.bytes_from_server,
            "wire_ttfb_ms": distribution_ms(self.wire_ttfb_ns),
            "connections": self.connections,
            "connections_opened": self.connections_opened,
            "connections_by_server": dict(self.connections_by_server),
        }


def _new_bytes(d: _Direction, seq: int, length: int) -> tuple[int, bool]:
    """Advance ``d`` by a segment; return (new payload bytes, is_retransmission)."""
    end = (seq + length) % _SEQ_MOD
    if d.high is None:
        # First data seen mid-flow (capture started on a kept-alive connection): all new.
        d.high = end
        return length, False
    if _seq_after(end, d.high):
        fresh = (end - d.high) % _SEQ_MOD
        d.high = end
        return min(fresh, length), False
    return 0, True


def analyze(
    packets: Iterable[TcpPacket], server_addrs: Iterable[bytes], server_port: int
) -> FlowStats:
    """Fold packets of flows to ``server_addrs:server_port`` into :class:`FlowStats`.

    Packets of other flows are ignored (the BPF filter normally leaves none). Connections the
    capture joined after their handshake still count for bytes, retransmissions and wire TTFB.
    """
    addrs = frozenset(server_addrs)
    flows: dict[tuple[bytes, int, bytes], _Flow] = {}
    st = FlowStats()
    for p in packets:
        if p.sport == server_port and (not addrs or p.src in addrs):
            to_server = False
            key = (p.dst, p.dport, p.src)
        elif p.dport == server_port and (not addrs or p.dst in addrs):
            to_server = True
            key = (p.src, p.sport, p.dst)
        else:
            continue
        st.packets += 1
        flow = flows.get(key)
        if flow is None:
            flow = flows[key] = _Flow()
        flags = p.flags
        if flags & RST:
            st.resets += 1
            if not to_server:
                st.resets_from_server += 1
            continue
        if flags & SYN:
            d = flow.to_server if to_server else flow.from_server
            # The SYN occupies one sequence number; data starts after it.
            d.high = (p.seq + 1) % _SEQ_MOD
            d.syn_seen = True
            if to_server and not flags & ACK:
                if flow.syn_count == 0:
                    st.connections_opened += 1
                else:
                    st.syn_retransmissions += 1
                flow.syn_count += 1
                flow.syn_ts = p.ts_ns
            elif not to_server and flags & ACK and not flow.handshake_done:
                if flow.syn_ts is not None:
                    st.handshakes += 1
                    flow.handshake_done = True
                    if flow.syn_count == 1:  # Karn: a retransmitted SYN makes the sample ambiguous
                        st.rtt_ns.append(p.ts_ns - flow.syn_ts)
            continue
        if p.win == 0:
            st.zero_windows += 1
        if p.payload_len <= 0:
            continue
        st.data_segments += 1
        d = flow.to_server if to_server else flow.from_server
        fresh, retrans = _new_bytes(d, p.seq, p.payload_len)
        if retrans:
            st.retransmissions += 1
            continue
        if to_server:
            st.bytes_to_server += fresh
            flow.req_last_ts = p.ts_ns
            flow.awaiting_response = True
        else:
            st.bytes_from_server += fresh
            if flow.awaiting_response and flow.req_last_ts is not None:
                st.wire_ttfb_ns.append(p.ts_ns - flow.req_last_ts)
                flow.awaiting_response = False
    st.connections = len(flows)
    for _, _, server_addr in flows:
        name = _addr_text(server_addr)
        st.connections_by_server[name] = st.connections_by_server.get(name, 0) + 1
    return st


def _addr_text(addr: bytes) -> str:
    family = socket.AF_INET if len(addr) == 4 else socket.AF_INET6
    try:
        return socket.inet_ntop(family, addr)
    except (ValueError, OSError):
        return addr.hex()
