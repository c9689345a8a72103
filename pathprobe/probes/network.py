"""The network probe: a packet capture of each path's traffic, per (path, step) window.

For every window it runs tcpdump on the interface that routes to that path's target (or
``--capture-iface``) with the kernel filter ``tcp and host H and port P``, then parses the pcap and
folds it with :func:`pathprobe.decode.tcpflows.analyze`. In :meth:`NetworkProbe.open`, before any
load, it times a few TCP connects to each target: ``idle_rtt_ms``, the baseline that "RTT rose under
load" is judged against.

Window summary keys (attribution and report read them): ``path``, ``step``, ``iface``, ``packets``,
``capture_drops``, ``iface_drops``, ``handshakes``, ``rtt_ms``, ``retransmissions``,
``retransmission_rate``, ``resets``, ``zero_windows``, ``bytes_to_server``, ``bytes_from_server``,
``wire_ttfb_ms``, ``connections`` (+ a few diagnostics: ``parse_s``, ``pcap_bytes``, …).

It degrades, never raises: no tcpdump, no root/CAP_NET_RAW, ``--no-capture`` or a tcpdump that will
not start → ``available: false`` with the reason and how to enable it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import socket
import tempfile
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pathprobe.config import ProbeOptions
from pathprobe.decode.pcap import PcapInfo, iter_pcap
from pathprobe.decode.tcpflows import TcpPacket, analyze, dedupe_loopback, distribution_ms
from pathprobe.probes.base import JSONDict, Unavailable, Window
from pathprobe.probes.capture import (
    CaptureError,
    Tcpdump,
    bpf_filter,
    die_with_parent,
    find_tcpdump,
    has_capture_privilege,
    iface_rx_dropped,
    summarize_stats,
    tcpdump_argv,
)
from pathprobe.probes.routes import capture_iface_for, resolve_host

#: Idle-RTT connects per target (each connect ≈ one round trip) and the bound on each.
IDLE_CONNECTS = 12
IDLE_CONNECT_TIMEOUT_S = 1.0
IDLE_TOTAL_BUDGET_S = 5.0


@dataclass(frozen=True)
class _Stopping:
    """A window whose tcpdump is waiting out its block timeout, to be parsed once it exits."""

    window: Window
    dump: Tcpdump
    task: asyncio.Task[dict[str, int | None]]
    pcap: Path
    target: Target
    rx_dropped: int | None
    # pcap stamps are CLOCK_REALTIME, windows CLOCK_MONOTONIC: the offset when the window ended.
    realtime_offset_ns: int = field(default_factory=lambda: time.time_ns() - time.monotonic_ns())


@dataclass(frozen=True)
class Target:
    url: str
    host: str
    port: int
    addrs: tuple[str, ...]
    iface: str | None


def _target(url: str, iface_override: str | None) -> Target:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addrs = tuple(resolve_host(host, port)) if host else ()
    iface = iface_override or (capture_iface_for(list(addrs)) if addrs else None)
    return Target(url, host, port, addrs, iface)


def idle_connect_rtts_ns(addr: str, port: int, count: int = IDLE_CONNECTS) -> list[int]:
    """Blocking: time ``count`` TCP connects to ``addr:port`` (each ≈ 1 RTT). Stops at the first
    failure or when :data:`IDLE_TOTAL_BUDGET_S` is spent. Meant for a worker thread."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    out: list[int] = []
    deadline = time.monotonic() + IDLE_TOTAL_BUDGET_S
    for _ in range(min(count, 20)):
        if time.monotonic() > deadline:
            break
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(IDLE_CONNECT_TIMEOUT_S)
        # Close with RST, not FIN: no TIME_WAIT pile-up and no half-closed session at the server.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        try:
            t0 = time.perf_counter_ns()
            s.connect((addr, port))
            out.append(time.perf_counter_ns() - t0)
        except OSError:
            break
        finally:
            s.close()
        time.sleep(0.005)  # spread the samples a little; a burst measures one instant
    return out


class NetworkProbe:
    """Packet capture per (path, step) window. See the module docstring for the contract."""

    name = "network"

    def __init__(self, options: ProbeOptions, targets: Sequence[str]) -> None:
        self.options = options
        self.urls = list(targets)
        self.unavailable: Unavailable | None = None
        self.tcpdump_path: str | None = None
        self.targets: dict[str, Target] = {}
        self.windows: list[JSONDict] = []
        self.idle_rtt_ms: dict[str, JSONDict] = {}
        self._tmpdir: Path | None = None
        self._running: dict[tuple[str, int], tuple[Tcpdump, Path, Target]] = {}
        self._window_errors: dict[tuple[str, int], str] = {}
        self._url_path: dict[str, str] = {}
        self._rx_dropped_start: dict[tuple[str, int], int | None] = {}
        self._stopping: list[_Stopping] = []
        self._capture_numbers = itertools.count()

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        for url in self.urls:
            try:
                self.targets[url] = await asyncio.to_thread(
                    _target, url, self.options.capture_iface
                )
            except ValueError:  # a malformed URL is the config's to reject; observe nothing
                continue
        await self._measure_idle_rtt()
        self.unavailable = self._check_available()
        if self.unavailable is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="pathprobe-capture-"))
            # Removed by close(); this covers a run that ends without it (an exception, exit).
            weakref.finalize(self, shutil.rmtree, self._tmpdir, ignore_errors=True)

    def _check_available(self) -> Unavailable | None:
        if not self.options.capture:
            return Unavailable(
                "packet capture switched off (--no-capture)", "run without --no-capture"
            )
        self.tcpdump_path = find_tcpdump()
        if self.tcpdump_path is None:
            return Unavailable(
                "tcpdump is not installed",
                "install tcpdump (Debian/Ubuntu: apt-get install tcpdump)",
            )
        if not has_capture_privilege():
            return Unavailable(
                "packet capture needs root or CAP_NET_RAW",
                "run as root, or grant the capability: "
                f"setcap cap_net_raw,cap_net_admin=eip {self.tcpdump_path} "
                "and run pathprobe with CAP_NET_RAW",
            )
        return None

    async def _measure_idle_rtt(self) -> None:
        for url, tgt in self.targets.items():
            if not tgt.addrs:
                self.idle_rtt_ms[url] = {**distribution_ms([]), "error": "host did not resolve"}
                continue
            samples = await asyncio.to_thread(idle_connect_rtts_ns, tgt.addrs[0], tgt.port)
            dist = distribution_ms(samples)
            dist["min"] = round(min(samples) / 1e6, 4) if samples else None
            self.idle_rtt_ms[url] = dist

    async def start_window(self, window: Window) -> None:
        key = (window.path, window.step)
        self._url_path[window.url] = window.path
        if self.unavailable is not None or self._tmpdir is None or self.tcpdump_path is None:
            return
        tgt = self.targets.get(window.url)
        if tgt is None:
            try:
                tgt = await asyncio.to_thread(_target, window.url, self.options.capture_iface)
            except ValueError as exc:
                self._window_errors[key] = f"cannot capture for {window.url!r}: {exc}"
                return
            self.targets[window.url] = tgt
        if tgt.iface is None:
            self._window_errors[key] = f"no route to {tgt.host!r} found to pick an interface"
            return
        # Numbered: a window measured again must not write over its first attempt's capture,
        # whose tcpdump may still be stopping (stop_window).
        pcap = self._tmpdir / f"{window.path}-{window.step}-{next(self._capture_numbers)}.pcap"
        argv = die_with_parent(
            tcpdump_argv(self.tcpdump_path, tgt.iface, pcap, bpf_filter(tgt.addrs, tgt.port))
        )
        dump = Tcpdump(argv)
        try:
            await dump.start()
        except (CaptureError, OSError) as exc:
            self._window_errors[key] = str(exc)
            return
        self._running[key] = (dump, pcap, tgt)
        self._rx_dropped_start[key] = iface_rx_dropped(tgt.iface)

    async def stop_window(self, window: Window) -> JSONDict:
        """Stop capturing ``window``; its summary lands in ``windows`` later.

        tcpdump must outlive the window by libpcap's block timeout (see ``capture``), 1.15 s that
        every window used to wait out here. It now runs out in the background while the next
        window starts, and the capture is parsed at the next ``stop_window`` or at ``close``,
        between windows, since parsing costs the client's CPU. The summary returned here carries
        only ``path``, ``step`` and ``pending``."""
        await self.summaries()
        key = (window.path, window.step)
        base: JSONDict = {"path": window.path, "step": window.step}
        run = self._running.pop(key, None)
        if run is None:
            reason = self._window_errors.pop(key, None) or (
                self.unavailable.reason if self.unavailable else "capture was not started"
            )
            summary = {**base, "available": False, "reason": reason}
            self.windows.append(summary)
            return summary
        dump, pcap, tgt = run
        rx0, rx1 = self._rx_dropped_start.pop(key, None), iface_rx_dropped(tgt.iface)
        rx_delta = rx1 - rx0 if rx0 is not None and rx1 is not None else None
        stopping = asyncio.create_task(dump.stop())
        self._stopping.append(_Stopping(window, dump, stopping, pcap, tgt, rx_delta))
        return {**base, "pending": True}

    async def summaries(self) -> list[JSONDict]:
        """The summaries of every window stopped so far, in window order: the captures still
        being stopped are waited for and parsed now (so call it between windows, not in one)."""
        while self._stopping:
            self.windows.append(await self._summarize(self._stopping.pop(0)))
        return self.windows

    async def _summarize(self, stopping: _Stopping) -> JSONDict:
        window, pcap, tgt = stopping.window, stopping.pcap, stopping.target
        base: JSONDict = {"path": window.path, "step": window.step}
        stats = await stopping.task
        t0 = time.perf_counter()
        # The capture runs over the warm-up too; per-exchange numbers (wire TTFB, loss stalls)
        # must describe the same requests as the load's measured records. pcap stamps are
        # CLOCK_REALTIME, windows CLOCK_MONOTONIC.
        measured_from = window.start_ns + stopping.realtime_offset_ns
        try:
            result = await asyncio.to_thread(_parse_and_analyze, pcap, tgt, measured_from)
        except (OSError, ValueError) as exc:
            return {
                **base,
                "available": False,
                "iface": tgt.iface,
                "reason": f"could not read the capture: {exc}",
                **summarize_stats(stats),
            }
        finally:
            pcap_bytes = pcap.stat().st_size if pcap.exists() else 0
            with contextlib.suppress(OSError):
                pcap.unlink()
        return {
            **base,
            "available": True,
            "iface": tgt.iface,
            "filter": bpf_filter(tgt.addrs, tgt.port),
            **summarize_stats(stats),
            "iface_rx_dropped": stopping.rx_dropped,
            **result,
            "pcap_bytes": pcap_bytes,
            "parse_s": round(time.perf_counter() - t0, 3),
        }

    async def close(self) -> JSONDict:
        await self.summaries()
        for dump, pcap, _ in list(self._running.values()):
            await dump.stop(flush=False)
            with contextlib.suppress(OSError):
                pcap.unlink()
        self._running.clear()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        section: JSONDict = {
            "available": self.unavailable is None,
            "reason": self.unavailable.reason if self.unavailable else None,
            "how_to_enable": self.unavailable.how_to_enable if self.unavailable else None,
            "tool": "tcpdump",
            "windows": self.windows,
            "idle_rtt_ms": {self._path_of(url): v for url, v in self.idle_rtt_ms.items()},
            "targets": {
                self._path_of(url): {
                    "host": t.host,
                    "port": t.port,
                    "addrs": list(t.addrs),
                    "iface": t.iface,
                }
                for url, t in self.targets.items()
            },
        }
        return section

    def _path_of(self, url: str) -> str:
        """Key by path name when a window told us which path this URL is, else by URL."""
        return self._url_path.get(url, url)

    def __del__(self) -> None:  # last resort: never leave a tcpdump running
        for dump, _, _ in getattr(self, "_running", {}).values():
            dump.kill_now()
        for stopping in getattr(self, "_stopping", []):
            stopping.dump.kill_now()


def _parse_and_analyze(pcap: Path, tgt: Target, measured_from_ns: int | None) -> dict[str, Any]:
    info = PcapInfo(-1, 0, False)
    packets: Iterable[TcpPacket] = iter_pcap(pcap, info)  # streamed: memory stays per-flow
    if tgt.iface == "any":
        packets = dedupe_loopback(packets)
    server = [
        socket.inet_pton(socket.AF_INET6 if ":" in a else socket.AF_INET, a) for a in tgt.addrs
    ]
    stats = analyze(packets, server, tgt.port, measured_from_ns).summary()
    stats["pcap_records"] = info.records
    stats["pcap_truncated"] = info.truncated
    stats["linktype"] = info.linktype
    return stats


def reconcile(summary: JSONDict, records: Any) -> JSONDict:
    """Line the capture's numbers up with the load engine's own for the same window (pure).

    ``records`` are the window's per-request records (all of them, warm-up included, when the
    capture ran over the warm-up too). Handshakes seen should equal the connections the engine
    opened (``connect_ns >= 0``); wire bytes exceed body bytes by the HTTP headers, so the
    per-request difference is reported and should be a steady few hundred bytes.
    """
    n = len(records)
    opened = int((records["connect_ns"] >= 0).sum()) if n else 0
    body_out = int(records["bytes_out"].sum()) if n else 0
    body_in = int(records["bytes_in"].sum()) if n else 0
    seen = summary.get("handshakes")
    out: JSONDict = {
        "requests": n,
        "connections_opened_by_client": opened,
        "handshakes_seen": seen,
        "handshake_ratio": round(seen / opened, 4) if seen is not None and opened else None,
        "body_bytes_out": body_out,
        "body_bytes_in": body_in,
    }
    for key, body, name in (
        ("bytes_to_server", body_out, "header_bytes_per_request_out"),
        ("bytes_from_server", body_in, "header_bytes_per_request_in"),
    ):
        wire = summary.get(key)
        out[name] = round((wire - body) / n, 1) if wire is not None and n else None
    return out
