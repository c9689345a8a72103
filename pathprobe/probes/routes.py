"""Which network interface carries traffic to a target host (where the capture must listen).

Order of evidence: a loopback address → ``lo``; else the kernel's own answer, ``ip route get
ADDR`` (policy routing, source routes and all); else a longest-prefix match over
``/proc/net/route`` (IPv4 only, no iproute2 needed). Parsing is split from running so it is
unit-testable.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import socket
import struct
import subprocess
from pathlib import Path

LOOPBACK_IFACE = "lo"
_DEV_RE = re.compile(r"\bdev\s+(\S+)")


def resolve_host(host: str, port: int) -> list[str]:
    """Numeric addresses of ``host`` (IPv4 first), de-duplicated, in resolver order."""
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    seen: list[str] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for fam, _, _, _, sockaddr in infos:
            addr = str(sockaddr[0])
            if fam == family and addr not in seen:
                seen.append(addr)
    return seen


def parse_ip_route_get(output: str) -> str | None:
    """The ``dev`` of ``ip route get`` output (``… dev eth0 src …``); ``None`` if absent."""
    m = _DEV_RE.search(output)
    return m.group(1) if m else None


def parse_proc_net_route(text: str, addr: str) -> str | None:
    """Longest-prefix match of IPv4 ``addr`` over ``/proc/net/route`` (hex, host byte order)."""
    target = int(ipaddress.IPv4Address(addr))
    best: tuple[int, int, str] | None = None  # (prefix length, -metric, iface)
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 8:
            continue
        try:
            dest = _le_hex_to_int(cols[1])
            flags = int(cols[3], 16)
            metric = int(cols[6])
            mask = _le_hex_to_int(cols[7])
        except ValueError:
            continue
        if not flags & 0x1:  # RTF_UP
            continue
        if target & mask != dest & mask:
            continue
        prefix = bin(mask).count("1")
        cand = (prefix, -metric, cols[0])
        if best is None or cand[:2] > best[:2]:
            best = cand
    return best[2] if best else None


def _le_hex_to_int(value: str) -> int:
    """``/proc/net/route`` prints addresses as native-endian hex; convert to a network-order int."""
    raw = struct.pack("=I", int(value, 16))
    return int.from_bytes(raw, "big")


def route_iface(addr: str) -> str | None:
    """The interface the kernel would use to reach ``addr`` (numeric), or ``None`` if unknown."""
    ip = ipaddress.ip_address(addr)
    if ip.is_loopback:
        return LOOPBACK_IFACE
    ip_cmd = shutil.which("ip")
    if ip_cmd:
        try:
            out = subprocess.run(
                [ip_cmd, "route", "get", addr],
                capture_output=True,
                text=True,
                timeout=3,
                check=False,
            )
            dev = parse_ip_route_get(out.stdout) if out.returncode == 0 else None
            if dev:
                return dev
        except (OSError, subprocess.TimeoutExpired):
            pass
    if ip.version == 4:
        try:
            return parse_proc_net_route(Path("/proc/net/route").read_text(), addr)
        except OSError:
            return None
    return None


def capture_iface_for(addrs: list[str]) -> str | None:
    """One interface for all of a target's addresses: the shared one, or ``any`` if they differ."""
    ifaces = {route_iface(a) for a in addrs}
    ifaces.discard(None)
    if not ifaces:
        return None
    if len(ifaces) == 1:
        return ifaces.pop()
    return "any"
