"""tcpdump as a subprocess writing one pcap per window.

Why tcpdump and not a capture loop in Python: the kernel runs the BPF filter, libpcap's
TPACKET_V3 ring (``-B``) absorbs bursts, and tcpdump only copies headers (``-s``) to a file, so the
client's own process pays nothing per packet. The pcap is parsed after the window, by
:func:`pathprobe.decode.pcap.read_pcap`.

Stopping: tcpdump runs without ``--immediate-mode``, so libpcap hands packets over in ring blocks
that are retired when full or after libpcap's buffer timeout (tcpdump uses 1000 ms). On SIGINT the
block being filled is *not* delivered; :meth:`Tcpdump.stop` therefore waits that timeout out before
signalling, so the packets of the window's last second are not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Bytes per packet kept: Ethernet/SLL2 (≤ 20) + IPv6 (40) + TCP with options (≤ 60) fit in 128.
SNAPLEN_BYTES = 128
#: libpcap ring size in KiB (``-B``): ~32 MiB holds several seconds of headers at 2,000 requests/s.
BUFFER_KIB = 32 * 1024
#: tcpdump's libpcap buffer timeout (it calls ``pcap_set_timeout(…, 1000)``), plus a margin.
BLOCK_FLUSH_WAIT_S = 1.15
START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 10.0


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
