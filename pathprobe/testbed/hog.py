"""Fault ``starved_client``: a CPU hog with a duty cycle, pinned to the client's core.

``python -m pathprobe.testbed.hog --cpu N --duty 0.9 --period-ms 100``: busy for ``duty`` of every
period, asleep for the rest. The sleep matters: a hog that never sleeps makes even Python start-up
crawl on that core. Its scheduler autogroup gets nice -20 (``/proc/self/autogroup``), because with
autogroups on, plain ``nice`` does not starve a process in another session.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cpu", type=int, required=True)
    parser.add_argument("--duty", type=float, default=0.9)
    parser.add_argument("--period-ms", type=float, default=100.0)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {args.cpu})
    try:
        Path("/proc/self/autogroup").write_text("-20")
    except OSError as exc:  # not root, or autogroups off: fall back to the process's own nice
        print(f"hog: autogroup nice not set ({exc})", file=sys.stderr)
        try:
            os.nice(-20)
        except OSError:
            pass
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    busy_s = args.period_ms / 1000.0 * args.duty
    idle_s = args.period_ms / 1000.0 - busy_s
    # Bounded: a hog that outlives a crashed testbed stops by itself.
    end = time.monotonic() + args.max_seconds
    while time.monotonic() < end:
        until = time.monotonic() + busy_s
        while time.monotonic() < until:
            pass
        time.sleep(idle_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
