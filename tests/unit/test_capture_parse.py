"""The pcap reader against pcaps written by scapy, and tcpdump's statistics lines."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest
from scapy.config import conf
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1Q, Ether
from scapy.packet import Raw

from pathprobe.decode.pcap import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    read_pcap,
)
from pathprobe.decode.tcpflows import PACKET_OUTGOING
from pathprobe.probes.capture import bpf_filter, parse_tcpdump_stats, tcpdump_argv


def _write(path: Path, pkts: list, *, nano: bool = False, snaplen: int = 128) -> None:
    """A classic pcap as tcpdump -s SNAPLEN writes it; scapy only builds the packet bytes."""
    linktype = conf.l2types.layer2num[type(pkts[0][1])]
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = bytearray(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
    for ts, p in pkts:
        raw = bytes(p)
        frac = round((ts % 1) * (1e9 if nano else 1e6))
        # Cut to the snaplen like tcpdump -s does; the IP length fields still tell the truth.
        out += struct.pack("<IIII", int(ts), frac, min(len(raw), snaplen), len(raw))
        out += raw[:snaplen]
    path.write_bytes(bytes(out))


def test_ethernet_ipv4_with_bodies_cut_by_the_snaplen(tmp_path: Path) -> None:
    body = b"z" * 1400
    pkts = [
        (100.000001, Ether() / IP(src="127.0.0.1", dst="127.0.0.2")
         / TCP(sport=40000, dport=8080, flags="S", seq=7, window=65495, options=[("MSS", 1460)])),
        (100.5, Ether() / Dot1Q(vlan=5) / IP(src="127.0.0.2", dst="127.0.0.1")
         / TCP(sport=8080, dport=40000, flags="PA", seq=99, ack=8, window=0) / Raw(body)),
        (101.0, Ether() / IP(src="127.0.0.1", dst="127.0.0.2") / IP() / Raw(b"not tcp")),
    ]  # fmt: skip
    f = tmp_path / "a.pcap"
    _write(f, pkts)
    out, info = read_pcap(f)
    assert info.linktype == LINKTYPE_ETHERNET
    assert info.records == 3
    assert not info.truncated
    assert len(out) == 2  # IP-in-IP is not TCP: skipped
    syn, data = out
    assert syn.ts_ns == 100_000_001_000
    assert syn.src == socket.inet_aton("127.0.0.1")
    assert (syn.sport, syn.dport, syn.flags, syn.seq, syn.win, syn.payload_len) == (
        40000, 8080, 0x02, 7, 65495, 0)  # fmt: skip
    assert data.payload_len == 1400
    assert (data.sport, data.ack, data.win, data.flags) == (8080, 8, 0, 0x18)
    assert data.pkttype == -1


def test_cooked_v2_ipv6_nanosecond(tmp_path: Path) -> None:
    pkts = [
        (5.123456789, CookedLinuxV2(pkttype=PACKET_OUTGOING, proto=0x86DD)
         / IPv6(src="::1", dst="::1") / TCP(sport=1, dport=2, flags="PA", seq=2**32 - 1)
         / Raw(b"q" * 300)),
    ]  # fmt: skip
    f = tmp_path / "b.pcap"
    _write(f, pkts, nano=True)
    out, info = read_pcap(f)
    assert info.linktype == LINKTYPE_LINUX_SLL2
    (p,) = out
    assert p.ts_ns == 5_123_456_789
    assert p.src == socket.inet_pton(socket.AF_INET6, "::1")
    assert p.seq == 2**32 - 1
    assert p.payload_len == 300
    assert p.pkttype == PACKET_OUTGOING


def test_cooked_v1(tmp_path: Path) -> None:
    pkts = [(1.0, CookedLinux(pkttype=0, proto=0x0800) / IP() / TCP(flags="R") / Raw(b"ab"))]
    f = tmp_path / "c.pcap"
    _write(f, pkts)
    out, info = read_pcap(f)
    assert info.linktype == LINKTYPE_LINUX_SLL
    assert out[0].flags == 0x04
    assert out[0].payload_len == 2
    assert out[0].pkttype == 0


def test_truncated_file_and_bad_magic(tmp_path: Path) -> None:
    f = tmp_path / "d.pcap"
    _write(f, [(1.0, Ether() / IP() / TCP())] * 2)
    data = f.read_bytes()
    f.write_bytes(data[:-10])
    out, info = read_pcap(f)
    assert len(out) == 1
    assert info.truncated
    f.write_bytes(b"")
    assert read_pcap(f)[0] == []
    f.write_bytes(struct.pack("<I", 0x0A0D0D0A) + bytes(40))  # pcapng
    with pytest.raises(ValueError, match="not a classic pcap"):
        read_pcap(f)


def test_parse_tcpdump_stats() -> None:
    stderr = (
        "tcpdump: listening on lo, link-type EN10MB (Ethernet), snapshot length 128 bytes\n"
        "194012 packets captured\n"
        "388024 packets received by filter\n"
        "17 packets dropped by kernel\n"
        "3 packets dropped by interface\n"
    )
    assert parse_tcpdump_stats(stderr) == {
        "captured": 194012,
        "received_by_filter": 388024,
        "dropped_by_kernel": 17,
        "dropped_by_interface": 3,
    }
    assert parse_tcpdump_stats("1 packet captured\n")["captured"] == 1
    assert parse_tcpdump_stats("")["dropped_by_kernel"] is None


def test_filter_and_argv() -> None:
    assert bpf_filter(["127.0.0.1"], 80) == "tcp and (host 127.0.0.1) and port 80"
    assert bpf_filter(["127.0.0.1", "::1"], 8) == "tcp and (host 127.0.0.1 or host ::1) and port 8"
    assert bpf_filter([], 80) == "tcp and port 80"
    argv = tcpdump_argv("/usr/bin/tcpdump", "lo", Path("/tmp/x.pcap"), "tcp")
    assert argv[argv.index("-i") + 1] == "lo"
    assert argv[argv.index("-s") + 1] == "128"
    assert "-B" in argv
    assert "--immediate-mode" not in argv
    assert argv[-1] == "tcp"
