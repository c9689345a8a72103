"""Pure analysis of captured TCP packets for one server endpoint: the network probe's numbers.

Input is a list of :class:`TcpPacket` in capture order (as :mod:`pathprobe.decode.pcap` parses
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
* **wire_ttfb** — per connection, from the last payload byte of a request (client → server), as
  finally sent (a retransmission of request data moves it), to the first payload byte of the
  response: HTTP/1.1 with one request at a time per connection. It is the server's time plus a
  round trip, never a loss stall (those are measured apart, below). Like
  the stalls below, only for exchanges that began at or after ``measured_from_ns`` (the end of
  the warm-up), so that they describe the same requests as the load's measured records.
* **zero_windows** — non-SYN, non-RST segments advertising a receive window of 0.
* **retransmission stalls** — how long a loss held up each exchange (one request and its response
  on a connection), the time the network took from the request rather than the server:

  - client → server: a retransmitted segment the server had not acknowledged yet (its ACK stayed
    below the segment's end, so the first copy was lost, not merely its ACK) stalled the exchange
    from the first copy's capture time to the retransmission's;
  - server → client: a segment that fills a hole in what arrived (a later segment came first)
    stalled it from when the hole appeared to when it was filled. A lost *first copy seen here*
    (the client's capture) cannot happen in this direction; a retransmission of data already seen
    is spurious for the client (its ACK was lost) and stalls nothing.

  ``retrans_stalls`` summarises them per exchange: how many exchanges there were, how many
  stalled, and the stalls themselves (ms, longest first, at most :data:`MAX_STALLS_KEPT`).
* **uploads** — per measured exchange, the request's bytes and how long the wire took to carry
  them (first to last request byte, loss stalls taken out): bandwidth shows here directly, with no
  server timer needed. An upload during which the server advertised a zero window was held back
  by the server not reading, not by the network: it is counted in ``server_limited`` instead.
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
# Segments remembered per direction for matching retransmissions to their first copy (and holes
# to their filling): losses are recovered within a few RTOs, i.e. a few hundred segments at most.
SENT_MEMORY = 256
# Stalls listed in a window summary (longest first): enough for every stalled exchange of a
# window at a few percent loss, bounded for a pathological one.
MAX_STALLS_KEPT = 2000
# A hole filled, or a retransmission sent, within this of the first copy is reordering or a fast
# retransmit on a short path: not a stall any latency target could notice (Linux's retransmission
# timers start at 10 ms for a tail-loss probe and 200 ms for a timeout).
STALL_MIN_NS = 1_000_000


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


#: Sorted values kept of a distribution that is rank-matched later (decompose): all of them up to
#: this many, else this many evenly spaced ranks.
MAX_RANKED = 2000


def ranked_ms(values_ns: list[int]) -> list[float]:
    """The values sorted, in ms (at most :data:`MAX_RANKED` evenly spaced ranks of them): the
    whole shape of a distribution, its largest value included, for rank matching against the
    application's view of the same requests (decompose.wire_at_ranks)."""
    if not values_ns:
        return []
    ordered = np.sort(np.asarray(values_ns, np.float64)) / 1e6
    if ordered.size > MAX_RANKED:
        ordered = ordered[np.round(np.linspace(0, ordered.size - 1, MAX_RANKED)).astype(np.int64)]
    return [round(float(v), 4) for v in ordered]


def uploads_summary(uploads: list[tuple[int, int]], server_limited: int) -> dict[str, Any]:
    """``{count, server_limited, bytes, ms}``: the uploads sorted by size (at most
    :data:`MAX_RANKED` of them, evenly spaced), for matching requests of the same size."""
    ordered = sorted(uploads)
    if len(ordered) > MAX_RANKED:
        picks = np.round(np.linspace(0, len(ordered) - 1, MAX_RANKED)).astype(np.int64)
        ordered = [ordered[i] for i in picks.tolist()]
    return {
        "count": len(uploads),
        "server_limited": server_limited,
        "bytes": [b for b, _ in ordered],
        "ms": [round(ns / 1e6, 4) for _, ns in ordered],
    }


@dataclass
class _Direction:
    """Sequence-space state of one direction of one flow."""

    high: int | None = None  # highest sequence number (end of data) seen
    syn_seen: bool = False
    # Recent segments as (start, end, capture ts): first copies (client → server) or holes
    # (server → client: the missing range and when it appeared).
    recent: list[tuple[int, int, int]] = field(default_factory=list)
    acked: int | None = None  # highest ACK the other side sent for this direction's data

    def remember(self, start: int, end: int, ts: int) -> None:
        self.recent.append((start, end, ts))
        if len(self.recent) > SENT_MEMORY:
            del self.recent[: len(self.recent) - SENT_MEMORY]

    def find(self, seq: int) -> int | None:
        """Index of the remembered range holding ``seq`` (newest first), or None."""
        for i in range(len(self.recent) - 1, -1, -1):
            start, end, _ = self.recent[i]
            if not _seq_after(start, seq) and _seq_after(end, seq):
                return i
        return None


@dataclass
class _Flow:
    to_server: _Direction = field(default_factory=_Direction)
    from_server: _Direction = field(default_factory=_Direction)
    syn_ts: int | None = None
    syn_count: int = 0
    handshake_done: bool = False
    req_last_ts: int | None = None  # last new request byte not yet answered
    awaiting_response: bool = False
    req_first_ts: int = 0  # the current request's first byte
    req_bytes: int = 0
    req_zero_window: bool = False  # the server's window closed during the upload
    in_exchange: bool = False  # a request has started on this connection
    exchange_measured: bool = True  # ... at or after the end of the warm-up
    stall_ns: int = 0  # the current exchange's retransmission stalls so far


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
    exchanges: int = 0
    stalls_ns: list[int] = field(default_factory=list)  # one per exchange that stalled
    uploads: list[tuple[int, int]] = field(default_factory=list)  # (request bytes, wire ns)
    uploads_server_limited: int = 0

    def end_exchange(self, flow: _Flow) -> None:
        if flow.in_exchange and flow.exchange_measured:
            self.exchanges += 1
            if flow.stall_ns >= STALL_MIN_NS:
                self.stalls_ns.append(flow.stall_ns)
        flow.in_exchange = False
        flow.stall_ns = 0

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
            "wire_ttfb_ms": {
                **distribution_ms(self.wire_ttfb_ns),
                "ranked_ms": ranked_ms(self.wire_ttfb_ns),
            },
            "connections": self.connections,
            "connections_opened": self.connections_opened,
            "connections_by_server": dict(self.connections_by_server),
            "uploads": uploads_summary(self.uploads, self.uploads_server_limited),
            "retrans_stalls": {
                "exchanges": self.exchanges,
                "stalled": len(self.stalls_ns),
                "stalls_ms": [
                    round(v / 1e6, 3)
                    for v in sorted(self.stalls_ns, reverse=True)[:MAX_STALLS_KEPT]
                ],
            },
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
        return fresh, False  # a hole before it is counted now: its filling will not be
    return 0, True


def _stall_to_server(d: _Direction, seq: int, ts: int) -> int:
    """The stall a client retransmission at ``ts`` ends (0 when its first copy had arrived)."""
    i = d.find(seq)
    if i is None:
        return 0
    start, end, first_ts = d.recent[i]
    if d.acked is not None and not _seq_after(end, d.acked):
        return 0  # the server had acknowledged it: only the ACK was lost
    d.recent[i] = (start, end, ts)  # a second retransmission counts from this one
    return max(ts - first_ts, 0)


def _stall_from_server(d: _Direction, seq: int, ts: int) -> int:
    """The stall a segment filling a hole at ``ts`` ends (0 when it fills none)."""
    i = d.find(seq)
    if i is None:
        return 0
    _, _, hole_ts = d.recent.pop(i)
    return max(ts - hole_ts, 0)


def analyze(
    packets: Iterable[TcpPacket],
    server_addrs: Iterable[bytes],
    server_port: int,
    measured_from_ns: int | None = None,
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
            _on_syn(st, flow, p, to_server)
            continue
        if p.win == 0:
            st.zero_windows += 1
            if not to_server and flow.awaiting_response:
                flow.req_zero_window = True
        if flags & ACK:  # what the sender of this packet has received of the other direction
            other = flow.from_server if to_server else flow.to_server
            if other.acked is None or _seq_after(p.ack, other.acked):
                other.acked = p.ack
        if p.payload_len <= 0:
            continue
        st.data_segments += 1
        d = flow.to_server if to_server else flow.from_server
        before = d.high
        fresh, retrans = _new_bytes(d, p.seq, p.payload_len)
        if retrans:
            st.retransmissions += 1
            if to_server:
                flow.stall_ns += _stall_to_server(d, p.seq, p.ts_ns)
                if flow.awaiting_response:  # the server has the whole request only now
                    flow.req_last_ts = p.ts_ns
            else:
                flow.stall_ns += _stall_from_server(d, p.seq, p.ts_ns)
        elif to_server:
            _on_request_bytes(st, flow, p, fresh, measured_from_ns)
        else:
            _on_response_bytes(st, flow, p, before, fresh)
    for flow in flows.values():
        st.end_exchange(flow)
    _count_connections(st, flows)
    return st


def _on_syn(st: FlowStats, flow: _Flow, p: TcpPacket, to_server: bool) -> None:
    """Account a SYN (client → server) or SYN/ACK (server → client) of ``flow``: connections
    opened, SYN retransmissions and the handshake RTT."""
    d = flow.to_server if to_server else flow.from_server
    # The SYN occupies one sequence number; data starts after it.
    d.high = (p.seq + 1) % _SEQ_MOD
    d.syn_seen = True
    if to_server and not p.flags & ACK:
        if flow.syn_count == 0:
            st.connections_opened += 1
        else:
            st.syn_retransmissions += 1
        flow.syn_count += 1
        flow.syn_ts = p.ts_ns
    elif not to_server and p.flags & ACK and not flow.handshake_done:
        if flow.syn_ts is not None:
            st.handshakes += 1
            flow.handshake_done = True
            if flow.syn_count == 1:  # Karn: a retransmitted SYN makes the sample ambiguous
                st.rtt_ns.append(p.ts_ns - flow.syn_ts)


def _on_request_bytes(
    st: FlowStats, flow: _Flow, p: TcpPacket, fresh: int, measured_from_ns: int | None
) -> None:
    """Account a client segment carrying ``fresh`` new request bytes: the first after a response
    opens a new exchange; each one moves the request's last byte (where wire TTFB starts)."""
    end = (p.seq + p.payload_len) % _SEQ_MOD
    flow.to_server.remember(p.seq, end, p.ts_ns)  # its first copy, should it be retransmitted
    if not flow.awaiting_response:  # a new request on this connection
        st.end_exchange(flow)
        flow.in_exchange = True
        flow.exchange_measured = measured_from_ns is None or p.ts_ns >= measured_from_ns
        flow.req_first_ts, flow.req_bytes, flow.req_zero_window = p.ts_ns, 0, False
    flow.req_bytes += fresh
    st.bytes_to_server += fresh
    flow.req_last_ts = p.ts_ns
    flow.awaiting_response = True


def _on_response_bytes(
    st: FlowStats, flow: _Flow, p: TcpPacket, before: int | None, fresh: int
) -> None:
    """Account a server segment carrying ``fresh`` new bytes (``before``: the highest sequence
    number seen before it): a hole it leaves is remembered, and the first response byte of a
    measured exchange gives its wire TTFB and upload sample."""
    if before is not None and _seq_after(p.seq, before):  # a hole: [before, seq) missing
        flow.from_server.remember(before, p.seq, p.ts_ns)
    st.bytes_from_server += fresh
    if flow.awaiting_response and flow.req_last_ts is not None:
        if flow.exchange_measured:
            st.wire_ttfb_ns.append(p.ts_ns - flow.req_last_ts)
            if flow.req_zero_window:
                st.uploads_server_limited += 1
            elif flow.req_bytes > 0:
                carried = flow.req_last_ts - flow.req_first_ts - flow.stall_ns
                st.uploads.append((flow.req_bytes, max(carried, 0)))
        flow.awaiting_response = False


def _count_connections(st: FlowStats, flows: dict[tuple[bytes, int, bytes], _Flow]) -> None:
    """Set the connection counts, in all and per server address, from the flows seen."""
    st.connections = len(flows)
    for _, _, server_addr in flows:
        name = _addr_text(server_addr)
        st.connections_by_server[name] = st.connections_by_server.get(name, 0) + 1


def _addr_text(addr: bytes) -> str:
    family = socket.AF_INET if len(addr) == 4 else socket.AF_INET6
    try:
        return socket.inet_ntop(family, addr)
    except (ValueError, OSError):
        return addr.hex()
