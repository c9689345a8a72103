"""A fast reader of classic pcap files: IPv4/IPv6/TCP headers into :class:`TcpPacket`.

A struct-based reader over a memory map (scapy's full dissection cost 300-800 µs per packet on a
2-core test machine, this reader ~2 µs of CPU; ``benchmarks/bench_capture_overhead.py`` measures
both). :mod:`pathprobe.probes.capture` runs tcpdump to write the files; this only reads them.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pathprobe.decode.tcpflows import TcpPacket

# pcap link types we can take apart.
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_ETH_VLAN = (0x8100, 0x88A8)
_IPPROTO_TCP = 6
# Ethernet (MACs skipped, ethertype) + IPv4 (version/IHL, total length, fragment field, protocol,
# addresses) + TCP (ports, seq, ack, data offset, flags, window): 50 bytes.
_ETH_IPV4_TCP = struct.Struct("!12xHBxH2xHxB2x4s4sHHIIBBH")
_BE16 = struct.Struct("!H").unpack_from
_TCP_HDR = struct.Struct("!HHIIBBH").unpack_from


@dataclass
class PcapInfo:
    linktype: int
    records: int
    truncated: bool  # the file ended inside a record (tcpdump killed hard)


def read_pcap(path: Path) -> tuple[list[TcpPacket], PcapInfo]:
    """All TCP packets of a pcap file as a list; see :func:`iter_pcap`."""
    info = PcapInfo(-1, 0, False)
    return list(iter_pcap(path, info)), info


def iter_pcap(path: Path, info: PcapInfo) -> Iterator[TcpPacket]:
    """Parse a classic pcap file (µs or ns timestamps, either byte order) into TCP packets.

    Streams from a memory map, so a long window's capture is never held in memory as a whole;
    ``info`` is filled in as the file is read (complete once the iterator is exhausted).
    Non-TCP packets, IP fragments and link types other than Ethernet/SLL/SLL2/raw IP/null are
    skipped. ``payload_len`` comes from the IP length fields (the snaplen cut the bodies off), or
    from the original wire length when the IP length is 0 (GSO super-packets).
    Raises ``ValueError`` for a file that is not a classic pcap.
    """
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < 24:
            info.truncated = size > 0
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield from _iter_records(data, size, info, path)


def _read_file_header(data: mmap.mmap, path: Path) -> tuple[str, int, int]:
    """``(struct byte order, nanoseconds per timestamp fraction unit, link type)`` of a classic
    pcap's 24-byte header. Raises ``ValueError`` when the magic is not a classic pcap's."""
    magic = struct.unpack_from("<I", data, 0)[0]
    if magic == 0xA1B2C3D4:
        endian, ns_scale = "<", 1000
    elif magic == 0xA1B23C4D:
        endian, ns_scale = "<", 1
    elif magic == 0xD4C3B2A1:
        endian, ns_scale = ">", 1000
    elif magic == 0x4D3CB2A1:
        endian, ns_scale = ">", 1
    else:
        raise ValueError(f"{path} is not a classic pcap file (magic {magic:#x})")
    # The top bits of the link-type field carry the FCS length, not the type.
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    return endian, ns_scale, linktype


def _iter_records(data: mmap.mmap, size: int, info: PcapInfo, path: Path) -> Iterator[TcpPacket]:
    """The TCP packets of the records after the file header, in file order.

    Sets ``info.linktype`` before the first packet and ``info.records``/``info.truncated`` once
    the records are exhausted. The per-packet cost is what this module is for (see the module
    docstring), so the common case is decoded inline and only the rest goes through
    :func:`_decode_record`.
    """
    endian, ns_scale, linktype = _read_file_header(data, path)
    info.linktype = linktype
    rec_hdr = struct.Struct(endian + "IIII")
    # The common case in one call: Ethernet + IPv4 without options + TCP (lo, veth, eth).
    eth_v4_tcp = _ETH_IPV4_TCP.unpack_from
    fast = linktype == LINKTYPE_ETHERNET
    # tuple.__new__ skips the NamedTuple's Python-level __new__: ~0.5 µs a packet.
    new = tuple.__new__
    off = 24
    n = 0
    truncated = False
    while off + 16 <= size:
        sec, frac, caplen, wirelen = rec_hdr.unpack_from(data, off)
        start = off + 16
        off = start + caplen
        if off > size:
            truncated = True
            break
        n += 1
        ts_ns = sec * 1_000_000_000 + frac * ns_scale
        if fast and caplen >= 50:
            (etype, vhl, ip_total, frag, proto, src, dst, sport, dport, seq, ack, off_byte, flags,
             win) = eth_v4_tcp(data, start)  # fmt: skip
            if etype == _ETH_IPV4 and vhl == 0x45 and proto == _IPPROTO_TCP and not frag & 0x1FFF:
                payload = (ip_total or wirelen - 14) - 20 - (off_byte >> 4) * 4
                yield new(
                    TcpPacket,
                    (ts_ns, src, sport, dst, dport, flags, seq, ack, win, max(payload, 0), -1),
                )
                continue
        packet = _decode_record(data, linktype, ts_ns, start, off, wirelen)
        if packet is not None:
            yield packet
    info.records = n
    info.truncated = truncated or off != size  # a record or its header cut short


def _decode_record(
    data: mmap.mmap, linktype: int, ts_ns: int, start: int, end: int, wirelen: int
) -> TcpPacket | None:
    """The TCP packet in the record at ``data[start:end]`` (``wirelen`` bytes on the wire), or
    ``None`` for a record that is not one we can take apart (see :func:`iter_pcap`).

    One function from link layer to TCP: a call per layer would cost ~10 % a packet."""
    caplen = end - start
    be16 = _BE16
    pkttype = -1
    # ---- link layer → (ethertype, offset of the IP header)
    if linktype == LINKTYPE_ETHERNET:
        if caplen < 14:
            return None
        etype = be16(data, start + 12)[0]
        ip = start + 14
        while etype in _ETH_VLAN and ip + 4 <= end:
            etype = be16(data, ip + 2)[0]
            ip += 4
    elif linktype == LINKTYPE_LINUX_SLL2:
        if caplen < 20:
            return None
        etype = be16(data, start)[0]
        pkttype = data[start + 10]
        ip = start + 20
    elif linktype == LINKTYPE_LINUX_SLL:
        if caplen < 16:
            return None
        pkttype = be16(data, start)[0]
        etype = be16(data, start + 14)[0]
        ip = start + 16
    elif linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6, 12, 14):
        # Raw IP (12 and 14: the raw-IP link types of some BSDs) carries no ethertype: the IP
        # version nibble tells v4 from v6; so does BSD null/loopback's after its 4-byte header.
        ip = start
        etype = _ETH_IPV4 if caplen and data[ip] >> 4 == 4 else _ETH_IPV6
    elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        ip = start + 4
        etype = _ETH_IPV4 if caplen > 4 and data[ip] >> 4 == 4 else _ETH_IPV6
    else:
        return None
    link_len = ip - start
    # ---- network layer
    if etype == _ETH_IPV4:
        if ip + 20 > end:
            return None
        ihl = (data[ip] & 0x0F) * 4
        if data[ip + 9] != _IPPROTO_TCP:
            return None
        if be16(data, ip + 6)[0] & 0x1FFF:  # a non-first fragment: no TCP header
            return None
        ip_total = be16(data, ip + 2)[0] or (wirelen - link_len)
        src = data[ip + 12 : ip + 16]
        dst = data[ip + 16 : ip + 20]
        tcp = ip + ihl
        l4_len = ip_total - ihl
    elif etype == _ETH_IPV6:
        if ip + 40 > end or data[ip + 6] != _IPPROTO_TCP:
            return None  # extension headers before TCP: rare for our traffic, skipped
        plen = be16(data, ip + 4)[0] or (wirelen - link_len - 40)
        src = data[ip + 8 : ip + 24]
        dst = data[ip + 24 : ip + 40]
        tcp = ip + 40
        l4_len = plen
    else:
        return None
    # ---- TCP
    if tcp + 20 > end:
        return None
    sport, dport, seq, ack, off_byte, flags, win = _TCP_HDR(data, tcp)
    payload = l4_len - (off_byte >> 4) * 4
    # tuple.__new__: see _iter_records.
    return tuple.__new__(
        TcpPacket, (ts_ns, src, sport, dst, dport, flags, seq, ack, win, max(payload, 0), pkttype)
    )
