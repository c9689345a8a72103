"""A stub DNS server that answers NXDOMAIN to every query and logs the names asked.

``python tests/helpers/dns_stub.py --address 127.213.53.1 --ready-file F --log-file L``

Tests run pathprobe in a private mount namespace whose ``/etc/resolv.conf`` names only this stub,
so a lookup that would fail on a real network fails here, and no query ever leaves the machine.
The log proves the lookup really went to the stub.
"""

from __future__ import annotations

import argparse
import os
import socket


def nxdomain(query: bytes) -> bytes:
    """The query echoed back as a response with RCODE 3 (name error), no answers."""
    if len(query) < 12:
        return b""
    flags = 0x8000 | (query[2] & 0x79) << 8 | 0x0080 | 0x0003  # QR, opcode+RD kept, RA, NXDOMAIN
    qdcount = query[4:6]
    return query[:2] + flags.to_bytes(2, "big") + qdcount + b"\x00\x00" * 3 + query[12:]


def qname(query: bytes) -> str:
    labels, i = [], 12
    while i < len(query) and query[i]:
        n = query[i]
        labels.append(query[i + 1 : i + 1 + n].decode(errors="replace"))
        i += n + 1
    return ".".join(labels)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", default="127.213.53.1")
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--log-file", required=True)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.address, 53))
    tmp = f"{args.ready_file}.tmp"
    with open(tmp, "w") as fh:
        fh.write(args.address)
    os.replace(tmp, args.ready_file)
    while True:
        query, peer = sock.recvfrom(4096)
        with open(args.log_file, "a") as log:
            log.write(qname(query) + "\n")
        reply = nxdomain(query)
        if reply:
            sock.sendto(reply, peer)


if __name__ == "__main__":
    main()
