"""TCP flow analysis on hand-made packets: handshakes, RTT, retransmissions, bytes, wire TTFB."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pathprobe.decode.tcpflows import (
    ACK,
    PACKET_HOST,
    PACKET_OUTGOING,
    PSH,
    RST,
    SYN,
    TcpPacket,
    analyze,
    dedupe_loopback,
    distribution_ms,
)

CLIENT = bytes([10, 0, 0, 1])
SERVER = bytes([10, 0, 0, 2])
PORT = 8080
MS = 1_000_000


class Conn:
    """Builds the packets of one connection as a client-side capture would see them."""

    def __init__(self, cport: int, c_isn: int = 1000, s_isn: int = 5000) -> None:
        self.cport = cport
        self.cseq = c_isn
        self.sseq = s_isn
        self.packets: list[TcpPacket] = []

    def c(
        self, ts_ms: float, flags: int, length: int = 0, seq: int | None = None, win: int = 500
    ) -> None:
        s = self.cseq if seq is None else seq
        self.packets.append(
            TcpPacket(
                int(ts_ms * MS),
                CLIENT,
                self.cport,
                SERVER,
                PORT,
                flags,
                s % 2**32,
                self.sseq % 2**32,
                win,
                length,
            )
        )
        if seq is None:
            self.cseq += length + (1 if flags & SYN else 0)

    def s(
        self, ts_ms: float, flags: int, length: int = 0, seq: int | None = None, win: int = 500
    ) -> None:
        q = self.sseq if seq is None else seq
        self.packets.append(
            TcpPacket(
                int(ts_ms * MS),
                SERVER,
                PORT,
                CLIENT,
                self.cport,
                flags,
                q % 2**32,
                self.cseq % 2**32,
                win,
                length,
            )
        )
        if seq is None:
            self.sseq += length + (1 if flags & SYN else 0)

    def handshake(self, t: float, rtt_ms: float) -> float:
        self.c(t, SYN)
        self.s(t + rtt_ms, SYN | ACK)
        self.c(t + rtt_ms + 0.01, ACK)
        return t + rtt_ms + 0.01

    def exchange(self, t: float, req: int, resp: int, server_ms: float) -> float:
        self.c(t, PSH | ACK, req)
        self.s(t + server_ms, PSH | ACK, resp)
        self.c(t + server_ms + 0.01, ACK)
        return t + server_ms + 0.02


def test_handshake_bytes_and_wire_ttfb() -> None:
    a, b = Conn(40000), Conn(40001)
    t = a.handshake(0.0, 2.0)
    t = a.exchange(t, 300, 1500, 10.0)
    a.exchange(t + 5, 200, 700, 20.0)
    t = b.handshake(1.0, 4.0)
    b.exchange(t, 100, 100, 30.0)
    st_ = analyze(a.packets + b.packets, [SERVER], PORT).summary()
    assert st_["handshakes"] == 2
    assert st_["connections"] == 2
    assert st_["rtt_ms"]["count"] == 2
    assert st_["rtt_ms"]["p50"] == 3.0
    assert st_["bytes_to_server"] == 600
    assert st_["bytes_from_server"] == 2300
    assert st_["wire_ttfb_ms"]["count"] == 3
    assert st_["wire_ttfb_ms"]["p50"] == 20.0
    assert st_["retransmissions"] == 0
    assert st_["retransmission_rate"] == 0.0
    assert st_["data_segments"] == 6
    assert st_["connections_by_server"] == {"10.0.0.2": 2}


def test_request_in_several_segments_measures_from_its_last_byte() -> None:
    a = Conn(40000)
    t = a.handshake(0.0, 1.0)
    a.c(t, ACK, 1000)
    a.c(t + 3, ACK, 1000)
    a.c(t + 6, PSH | ACK, 500)
    a.s(t + 16, ACK, 100)
    a.s(t + 17, PSH | ACK, 100)
    st_ = analyze(a.packets, [SERVER], PORT).summary()
    assert st_["wire_ttfb_ms"]["count"] == 1
    assert st_["wire_ttfb_ms"]["p50"] == 10.0
    assert st_["bytes_to_server"] == 2500
    assert st_["bytes_from_server"] == 200


def test_retransmitted_data_counts_once_in_bytes() -> None:
    a = Conn(40000)
    t = a.handshake(0.0, 1.0)
    start = a.cseq
    a.c(t, ACK, 1000)
    a.c(t + 1, PSH | ACK, 1000)
    a.c(t + 200, ACK, 1000, seq=start)  # RTO retransmission of the first segment
    a.s(t + 202, PSH | ACK, 50)
    st_ = analyze(a.packets, [SERVER], PORT).summary()
    assert st_["retransmissions"] == 1
    assert st_["data_segments"] == 4
    assert st_["retransmission_rate"] == 0.25
    assert st_["bytes_to_server"] == 2000


def test_syn_retransmission_keeps_handshake_but_drops_ambiguous_rtt() -> None:
    a = Conn(40000)
    a.c(0.0, SYN)
    a.c(1000.0, SYN, seq=a.cseq - 1)  # same ISN, sent again after the 1 s SYN timeout
    a.s(1001.0, SYN | ACK)
    st_ = analyze(a.packets, [SERVER], PORT).summary()
    assert st_["handshakes"] == 1
    assert st_["syn_retransmissions"] == 1
    assert st_["rtt_ms"]["count"] == 0
    assert st_["connections_opened"] == 1


def test_sequence_wraparound_is_not_a_retransmission() -> None:
    a = Conn(40000, c_isn=2**32 - 700)
    t = a.handshake(0.0, 1.0)
    a.c(t, ACK, 1000)  # crosses 2**32
    a.c(t + 1, PSH | ACK, 1000)
    st_ = analyze(a.packets, [SERVER], PORT).summary()
    assert st_["retransmissions"] == 0
    assert st_["bytes_to_server"] == 2000


def test_resets_zero_windows_and_other_flows() -> None:
    a = Conn(40000)
    t = a.handshake(0.0, 1.0)
    a.c(t, PSH | ACK, 100)
    a.s(t + 1, ACK, 0, win=0)
    a.s(t + 2, RST)
    a.c(t + 3, RST)
    stray = TcpPacket(0, CLIENT, 1, bytes([1, 1, 1, 1]), 443, ACK, 0, 0, 10, 10)
    st_ = analyze([*a.packets, stray], [SERVER], PORT).summary()
    assert st_["resets"] == 2
    assert st_["resets_from_server"] == 1
    assert st_["zero_windows"] == 1
    assert st_["packets"] == len(a.packets)


def test_capture_joining_a_kept_alive_connection() -> None:
    a = Conn(40000)
    a.exchange(0.0, 120, 400, 7.0)  # no handshake seen
    st_ = analyze(a.packets, [SERVER], PORT).summary()
    assert st_["handshakes"] == 0
    assert st_["connections"] == 1
    assert st_["connections_opened"] == 0
    assert st_["bytes_to_server"] == 120
    assert st_["wire_ttfb_ms"]["p50"] == 7.0


def _twins(packets: list[TcpPacket]) -> list[TcpPacket]:
    out = []
    for p in packets:
        out.append(p._replace(pkttype=PACKET_OUTGOING))
        out.append(p._replace(ts_ns=p.ts_ns + 3_000, pkttype=PACKET_HOST))
    return out


def test_dedupe_loopback_twins() -> None:
    a = Conn(40000)
    t = a.handshake(0.0, 0.05)
    a.exchange(t, 100, 200, 1.0)
    doubled = _twins(a.packets)
    assert len(list(dedupe_loopback(doubled))) == len(a.packets)
    assert (
        analyze(dedupe_loopback(doubled), [SERVER], PORT).summary()
        == analyze(a.packets, [SERVER], PORT).summary()
    )
    # Undeduplicated, every data segment's twin looks like a retransmission: the reason to dedupe.
    assert analyze(doubled, [SERVER], PORT).retransmissions > 0
    # Without packet types (Ethernet), identical packets are real retransmissions: kept.
    plain = a.packets + [a.packets[-1]]
    assert list(dedupe_loopback(plain)) == plain


def test_dedupe_keeps_a_later_identical_packet() -> None:
    p = TcpPacket(0, CLIENT, 1, SERVER, PORT, ACK, 1, 1, 1, 10, PACKET_OUTGOING)
    twin = p._replace(ts_ns=1000, pkttype=PACKET_HOST)
    resend = p._replace(ts_ns=200 * MS)  # an RTO later: a genuine retransmission
    resend_twin = resend._replace(ts_ns=200 * MS + 1000, pkttype=PACKET_HOST)
    assert list(dedupe_loopback([p, twin, resend, resend_twin])) == [p, resend]


def test_distribution_ms() -> None:
    assert distribution_ms([]) == {"p50": None, "p90": None, "p99": None, "mean": None, "count": 0}
    d = distribution_ms([1 * MS, 2 * MS, 3 * MS])
    assert d["p50"] == 2.0
    assert d["mean"] == 2.0
    assert d["count"] == 3


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=30),
    dup_every=st.integers(1, 5),
    isn=st.integers(0, 2**32 - 1),
)
def test_bytes_and_retransmissions_property(sizes: list[int], dup_every: int, isn: int) -> None:
    """However many segments are resent, bytes equal the data sent once, and every resend counts."""
    a = Conn(40000, c_isn=isn)
    t = a.handshake(0.0, 1.0)
    dups = 0
    for i, size in enumerate(sizes):
        seq = a.cseq
        a.c(t + i, ACK, size)
        if i % dup_every == 0:
            a.c(t + i + 0.5, ACK, size, seq=seq)
            dups += 1
    st_ = analyze(a.packets, [SERVER], PORT).summary()
    assert st_["bytes_to_server"] == sum(sizes)
    assert st_["retransmissions"] == dups
    assert st_["data_segments"] == len(sizes) + dups


def test_a_lost_request_segment_stalls_its_exchange_until_retransmitted() -> None:
    a = Conn(40000)
    t = a.handshake(0.0, 1.0)
    t = a.exchange(t, 300, 1500, 10.0)  # a clean exchange first
    start = a.cseq
    a.c(t, ACK, 1000)  # lost on the way: the server's ACK never covers it
    a.c(t + 1, PSH | ACK, 1000)
    a.c(t + 201, ACK, 1000, seq=start)  # RTO retransmission, 201 ms after the first copy
    a.s(t + 210, PSH | ACK, 50)
    a.c(t + 211, ACK)
    summary = analyze(a.packets, [SERVER], PORT).summary()
    assert summary["retrans_stalls"] == {"exchanges": 2, "stalled": 1, "stalls_ms": [201.0]}
    # The server had the whole request only once the retransmission arrived: the wire TTFB
    # (server time) starts there, the stall is not in it.
    assert summary["wire_ttfb_ms"]["ranked_ms"] == [9.0, 10.0]


def test_a_retransmission_the_server_had_acknowledged_stalls_nothing() -> None:
    a = Conn(40000)
    t = a.handshake(0.0, 1.0)
    start = a.cseq
    a.c(t, PSH | ACK, 1000)
    a.s(t + 1, ACK)  # the server got it (its ACK covers it); the client's view of the ACK was lost
    a.c(t + 200, PSH | ACK, 1000, seq=start)
    a.s(t + 202, PSH | ACK, 50)
    summary = analyze(a.packets, [SERVER], PORT).summary()
    assert summary["retransmissions"] == 1
    assert summary["retrans_stalls"] == {"exchanges": 1, "stalled": 0, "stalls_ms": []}


def test_a_hole_in_the_response_stalls_until_it_is_filled() -> None:
    a = Conn(40000)
    t = a.handshake(0.0, 1.0)
    a.c(t, PSH | ACK, 100)
    first = a.sseq
    a.s(t + 5, ACK, 1000, seq=first + 1000)  # the second segment arrives; the first is missing
    a.s(t + 55, ACK, 1000, seq=first)  # ... and fills the hole 50 ms later
    a.sseq = first + 2000
    a.c(t + 56, ACK)
    a.s(t + 57, ACK, 1000, seq=first)  # a spurious duplicate: nothing was missing any more
    summary = analyze(a.packets, [SERVER], PORT).summary()
    assert summary["bytes_from_server"] == 2000
    assert summary["retransmissions"] == 2
    assert summary["retrans_stalls"] == {"exchanges": 1, "stalled": 1, "stalls_ms": [50.0]}


def test_exchanges_before_the_measured_window_are_left_out_of_ttfb_and_stalls() -> None:
    a = Conn(40000)
    t = a.handshake(0.0, 1.0)
    start = a.cseq
    a.c(t, PSH | ACK, 500)  # a warm-up request, lost once
    a.c(t + 200, PSH | ACK, 500, seq=start)
    a.s(t + 210, PSH | ACK, 50)
    t = a.exchange(t + 300, 500, 50, 10.0)  # measured
    summary = analyze(a.packets, [SERVER], PORT, measured_from_ns=int((t - 50) * MS)).summary()
    assert summary["wire_ttfb_ms"]["count"] == 1
    assert summary["wire_ttfb_ms"]["p50"] == 10.0
    assert summary["retrans_stalls"] == {"exchanges": 1, "stalled": 0, "stalls_ms": []}
    everything = analyze(a.packets, [SERVER], PORT).summary()
    assert everything["retrans_stalls"]["stalled"] == 1
    assert everything["bytes_to_server"] == summary["bytes_to_server"] == 1000


def test_uploads_time_the_request_on_the_wire_and_set_aside_a_server_that_stopped_reading() -> None:
    a = Conn(40000)
    t = a.handshake(0.0, 1.0)
    a.c(t, ACK, 1000)  # a 3000-byte request carried over 30 ms (a slow link)
    a.c(t + 15, ACK, 1000)
    a.c(t + 30, PSH | ACK, 1000)
    a.s(t + 40, PSH | ACK, 50)
    t += 50
    a.c(t, ACK, 1000)  # the next request: the server's window closes half-way (it is not reading)
    a.s(t + 1, ACK, win=0)
    a.c(t + 80, PSH | ACK, 1000)
    a.s(t + 90, PSH | ACK, 50)
    uploads = analyze(a.packets, [SERVER], PORT).summary()["uploads"]
    assert uploads == {"count": 1, "server_limited": 1, "bytes": [3000], "ms": [30.0]}
