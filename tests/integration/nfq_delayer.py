"""A constant-delay NFQUEUE verdict loop (this kernel has no netem).

Usage: ``python nfq_delayer.py QUEUE DELAY_MS`` — run inside the network namespace whose iptables
rule sends packets to QUEUE. Each packet is accepted DELAY_MS after it arrived, in arrival order
(a constant delay keeps FIFO order, so a deque is enough). Prints ``READY`` once bound. Exits
after 300 s at the latest; the test kills it long before.
"""

from __future__ import annotations

import collections
import select
import sys
import time
from typing import Any

from netfilterqueue import NetfilterQueue


def main() -> None:
    queue_num = int(sys.argv[1])
    delay_s = float(sys.argv[2]) / 1000
    held: collections.deque[tuple[float, Any]] = collections.deque()

    def on_packet(pkt: Any) -> None:
        held.append((time.monotonic() + delay_s, pkt))  # verdict later, outside the callback

    nfq = NetfilterQueue()
    nfq.bind(queue_num, on_packet, max_len=4096)
    fd = nfq.get_fd()
    print("READY", flush=True)
    stop_at = time.monotonic() + 300
    try:
        while time.monotonic() < stop_at:
            timeout = max(0.0, held[0][0] - time.monotonic()) if held else 0.5
            readable, _, _ = select.select([fd], [], [], timeout)
            if readable:
                nfq.run(block=False)
            now = time.monotonic()
            while held and held[0][0] <= now:
                held.popleft()[1].accept()
    finally:
        for _, pkt in held:
            pkt.accept()
        nfq.unbind()


if __name__ == "__main__":
    main()
