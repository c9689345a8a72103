"""Packet delay without netem: hold every queued packet for a fixed time, then accept it.

Run inside the service's network namespace (``ip netns exec NS python -m
pathprobe.testbed.nfq_delay --queue Q --delay-ms D``); the testbed's iptables rules send the veth's
packets (both directions) to NFQUEUE ``Q``. A constant delay keeps packet order (FIFO). The rules
use ``--queue-bypass``, so if this helper dies traffic flows undelayed instead of stopping.
SIGTERM/SIGINT: release what is held and exit.
"""

from __future__ import annotations

import argparse
import collections
import select
import signal
import sys
import time
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queue", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, required=True)
    args = parser.parse_args(argv)

    from netfilterqueue import COPY_META, NetfilterQueue

    delay_s = args.delay_ms / 1000.0
    held: collections.deque[tuple[float, Any]] = collections.deque()
    stopping = False

    def on_packet(packet: Any) -> None:
        held.append((time.monotonic() + delay_s, packet))

    def on_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    queue = NetfilterQueue()
    # Metadata only: the verdict needs no payload, and copying none keeps this helper cheap.
    queue.bind(args.queue, on_packet, max_len=65536, mode=COPY_META)
    fd = queue.get_fd()
    print(f"nfq_delay: queue {args.queue}, {args.delay_ms} ms", file=sys.stderr, flush=True)
    try:
        while not stopping:
            now = time.monotonic()
            while held and held[0][0] <= now:
                held.popleft()[1].accept()
            wait_s = min(0.1, held[0][0] - now) if held else 0.1
            try:
                ready, _, _ = select.select([fd], [], [], max(0.0, wait_s))
            except InterruptedError:
                continue
            if ready:
                queue.run(block=False)
    finally:
        while held:
            held.popleft()[1].accept()
        queue.unbind()
    return 0


if __name__ == "__main__":
    sys.exit(main())
