"""tcpdump as a subprocess writing one pcap per window, and a fast parser for what it wrote.

Why tcpdump and not a capture loop in Python: the kernel runs the BPF filter, libpcap's
TPACKET_V3 ring (``-B``) absorbs bursts, and tcpdump only copies headers (``-s``) to a file, so the
client's own process pays nothing per packet. The pcap is parsed after the window, by
:func:`read_pcap`: a struct-based reader of the pcap format plus IPv4/IPv6/TCP headers. (scapy's
full dissection cost 300-800 µs per packet on a 2-core test machine, this reader ~2 µs of CPU;
``benchmarks/bench_capture_overhead.py`` measures both.)

Stopping: tcpdump runs without ``--immediate-mode``, so libpcap hands packets over in ring blocks
that are retired when full or after libpcap's buffer timeout (tcpdump uses 1000 ms). On SIGINT the
block being filled is *not* delivered; :meth:`Tcpdump.stop` therefore waits that timeout out before
signalling, so the packets of the window's last second are not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import re
import shutil
import signal
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pathprobe.probes.tcpflows import TcpPacket

#: Bytes per packet kept: Ethernet/SLL2 (≤ 20) + IPv6 (40) + TCP with options (≤ 60) fit in 128.
SNAPLEN_BYTES = 128
#: libpcap ring size in KiB (``-B``): ~32 MiB holds several seconds of headers at 2,000 requests/s.
BUFFER_KIB = 32 * 1024
#: tcpdump's libpcap buffer timeout (it calls ``pcap_set_timeout(…, 1000)``), plus a margin.
BLOCK_FLUSH_WAIT_S = 1.15
START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 10.0

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


def bpf_filter(addresses: Sequence[str], port: int) -> str:
    """The kernel-side filter: ``tcp and (host A or host B) and port P``."""
    if not addresses:
        return f"tcp and port {port}"
    hosts = " or ".join(f"host {a}" for a in addresses)
    return f"tcp and ({hosts}) and port {port}"


def tcpdump_argv(
    tcpdump: str,
    iface: str,
    pcap_path: Path,
    bpf: str,
    *,
    snaplen: int = SNAPLEN_BYTES,
    buffer_kib: int = BUFFER_KIB,
) -> list[str]:
    """The command line. ``-n`` (no DNS), ``-p`` (no promiscuous mode: we want our own traffic),
    ``-Z root`` (keep privileges so the file in our temp dir stays ours to read and delete),
    nanosecond timestamps."""
    return [
        tcpdump,
        "-i",
        iface,
        "-w",
        str(pcap_path),
        "-s",
        str(snaplen),
        "-B",
        str(buffer_kib),
        "-n",
        "-p",
        "-Z",
        "root",
        "--time-stamp-precision",
        "nano",
        bpf,
    ]


def die_with_parent(argv: list[str]) -> list[str]:
    """Prefix ``argv`` so the process gets SIGINT when pathprobe dies, even by SIGKILL.

    A tcpdump left behind would capture forever; ``setpriv --pdeathsig`` (util-linux) asks the
    kernel to signal it when its parent goes (SIGINT: it still closes its file cleanly). The
    signal survives the exec because tcpdump keeps its credentials (``-Z root``). Without
    setpriv, ``argv`` is returned unchanged."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "INT", *argv] if setpriv else argv


_STAT_RE = re.compile(
    r"^(\d+) packets? (captured|received by filter|dropped by kernel|dropped by interface)\s*$",
    re.MULTILINE,
)


def parse_tcpdump_stats(stderr: str) -> dict[str, int | None]:
    """tcpdump's exit statistics: ``captured``, ``received_by_filter``, ``dropped_by_kernel``,
    ``dropped_by_interface`` (``None`` when tcpdump did not print that line)."""
    out: dict[str, int | None] = {
        "captured": None,
        "received_by_filter": None,
        "dropped_by_kernel": None,
        "dropped_by_interface": None,
    }
    for m in _STAT_RE.finditer(stderr):
        out[m.group(2).replace(" ", "_")] = int(m.group(1))
    return out


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


def _iter_records(data: mmap.mmap, size: int, info: PcapInfo, path: Path) -> Iterator[TcpPacket]:
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
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    info.linktype = linktype
    rec_hdr = struct.Struct(endian + "IIII")
    be16 = struct.Struct("!H").unpack_from
    tcp_hdr = struct.Struct("!HHIIBBH").unpack_from
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
        pkttype = -1
        # ---- link layer → (ethertype, offset of the IP header)
        if linktype == LINKTYPE_ETHERNET:
            if caplen < 14:
                continue
            etype = be16(data, start + 12)[0]
            ip = start + 14
            while etype in _ETH_VLAN and ip + 4 <= off:
                etype = be16(data, ip + 2)[0]
                ip += 4
        elif linktype == LINKTYPE_LINUX_SLL2:
            if caplen < 20:
                continue
            etype = be16(data, start)[0]
            pkttype = data[start + 10]
            ip = start + 20
        elif linktype == LINKTYPE_LINUX_SLL:
            if caplen < 16:
                continue
            pkttype = be16(data, start)[0]
            etype = be16(data, start + 14)[0]
            ip = start + 16
        elif linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6, 12, 14):
            ip = start
            etype = _ETH_IPV4 if caplen and data[ip] >> 4 == 4 else _ETH_IPV6
        elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
            ip = start + 4
            etype = _ETH_IPV4 if caplen > 4 and data[ip] >> 4 == 4 else _ETH_IPV6
        else:
            continue
        link_len = ip - start
        # ---- network layer
        if etype == _ETH_IPV4:
            if ip + 20 > off:
                continue
            ihl = (data[ip] & 0x0F) * 4
            if data[ip + 9] != _IPPROTO_TCP:
                continue
            if be16(data, ip + 6)[0] & 0x1FFF:  # a non-first fragment: no TCP header
                continue
            ip_total = be16(data, ip + 2)[0] or (wirelen - link_len)
            src = data[ip + 12 : ip + 16]
            dst = data[ip + 16 : ip + 20]
            tcp = ip + ihl
            l4_len = ip_total - ihl
        elif etype == _ETH_IPV6:
            if ip + 40 > off or data[ip + 6] != _IPPROTO_TCP:
                continue  # extension headers before TCP: rare for our traffic, skipped
            plen = be16(data, ip + 4)[0] or (wirelen - link_len - 40)
            src = data[ip + 8 : ip + 24]
            dst = data[ip + 24 : ip + 40]
            tcp = ip + 40
            l4_len = plen
        else:
            continue
        # ---- TCP
        if tcp + 20 > off:
            continue
        sport, dport, seq, ack, off_byte, flags, win = tcp_hdr(data, tcp)
        payload = l4_len - (off_byte >> 4) * 4
        yield new(
            TcpPacket,
            (ts_ns, src, sport, dst, dport, flags, seq, ack, win, max(payload, 0), pkttype),
        )
    info.records = n
    info.truncated = truncated or off != size  # a record or its header cut short


def find_tcpdump() -> str | None:
    """tcpdump's path (Debian puts it in /usr/bin; /usr/sbin for older layouts)."""
    return shutil.which("tcpdump") or next(
        (p for p in ("/usr/bin/tcpdump", "/usr/sbin/tcpdump") if os.access(p, os.X_OK)), None
    )


def has_capture_privilege() -> bool:
    """Root, or CAP_NET_RAW in the effective set (what tcpdump needs to open a packet socket)."""
    if os.geteuid() == 0:
        return True
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 13))  # CAP_NET_RAW = 13
    except OSError:
        pass
    return False


class CaptureError(Exception):
    """tcpdump would not start or died; the message is for the report's ``reason``."""


class Tcpdump:
    """One tcpdump process for one window. Start with :meth:`start`, always :meth:`stop`."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.proc: asyncio.subprocess.Process | None = None
        self._stderr: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Spawn tcpdump and wait until it says it is listening (so the window's first packets are
        not missed). Raises :class:`CaptureError` with tcpdump's own words if it exits instead."""
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        listening = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read_stderr(self.proc.stderr, listening))
        try:
            await asyncio.wait_for(asyncio.shield(listening), START_TIMEOUT_S)
        except TimeoutError:
            await self.stop(flush=False)
            raise CaptureError(
                f"tcpdump did not start listening within {START_TIMEOUT_S:g} s"
            ) from None
        if not listening.result():
            await self.stop(flush=False)
            text = " ".join(line.strip() for line in self._stderr)[-300:]
            raise CaptureError(f"tcpdump exited: {text or 'no message'}")

    async def _read_stderr(
        self, stream: asyncio.StreamReader, listening: asyncio.Future[bool]
    ) -> None:
        while True:
            line = await stream.readline()
            if not line:
                break
            text = line.decode(errors="replace")
            self._stderr.append(text)
            if "listening on" in text and not listening.done():
                listening.set_result(True)
        if not listening.done():
            listening.set_result(False)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    async def stop(self, *, flush: bool = True) -> dict[str, int | None]:
        """Wait out the ring's block timeout (``flush``), SIGINT, reap, return exit statistics.

        Escalates to SIGKILL if tcpdump does not exit within :data:`STOP_TIMEOUT_S`."""
        proc = self.proc
        if proc is None:
            return parse_tcpdump_stats("")
        if proc.returncode is None:
            if flush:
                await asyncio.sleep(BLOCK_FLUSH_WAIT_S)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 2.0)
        return parse_tcpdump_stats(self.stderr)

    def kill_now(self) -> None:
        """Last-resort synchronous kill (for cleanup paths that cannot await)."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


def summarize_stats(stats: dict[str, int | None]) -> dict[str, Any]:
    """The capture-health keys of a window summary.

    tcpdump prints "dropped by interface" only when the count is not zero, so once it printed its
    statistics at all, a missing line means 0."""
    iface = stats.get("dropped_by_interface")
    if iface is None and stats.get("captured") is not None:
        iface = 0
    return {
        "capture_drops": stats.get("dropped_by_kernel"),
        "iface_drops": iface,
        "captured": stats.get("captured"),
    }


def iface_rx_dropped(iface: str | None) -> int | None:
    """The interface's own receive-drop counter (``/sys/class/net/IF/statistics/rx_dropped``)."""
    if not iface or iface == "any" or "/" in iface:
        return None
    try:
        return int(Path(f"/sys/class/net/{iface}/statistics/rx_dropped").read_text())
    except (OSError, ValueError):
        return None
