"""What the packet capture costs the client, and whether it keeps up, at 2,000 requests/s.

nginx (``return 200``, one worker) on 127.0.0.1 pinned to CPU 1; pathprobe's load engine pinned to
CPU 0 (its event-loop thread; tcpdump, started from that thread, inherits CPU 0 too — the capture
competes with the client, the pessimistic placement). Windows with and without
:class:`~pathprobe.probes.network.NetworkProbe` are interleaved (off, on, off, on, …) so drift in
the shared machine's load hits both alike. Per window: client CPU (this process, user+sys, in % of
one core), tcpdump's CPU (reaped child rusage), achieved rate, p99 latency, capture drops, packets,
pcap parse time; and once, parse speed of the struct reader vs scapy's RawPcapReader vs scapy's full
dissection.

Run as root:  .venv/bin/python benchmarks/bench_capture_overhead.py [--rate 2000] [--duration 10]
              [--repeats 2] [--json out.json]
The issue's target: ≤ 10 % extra client CPU with capture, drops zero or explained.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pathprobe.config import LoadProfile, ProbeOptions
from pathprobe.decode.pcap import read_pcap
from pathprobe.load.engine import EngineOptions
from pathprobe.load.payloads import PayloadPool
from pathprobe.load.schedule import plan_step
from pathprobe.load.select import build_engine
from pathprobe.model.records import completed
from pathprobe.model.results import measured, tally_of
from pathprobe.probes.base import Window
from pathprobe.probes.network import NetworkProbe

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 "ok"; }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def nginx(core: int) -> Iterator[int]:
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    d = Path(tempfile.mkdtemp(prefix="pp-bench-nginx-"))
    port = _free_port()
    (d / "nginx.conf").write_text(NGINX_CONF.format(d=d, port=port))
    proc = subprocess.Popen([exe, "-c", str(d / "nginx.conf"), "-p", str(d)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for pid in [proc.pid]:
            os.sched_setaffinity(pid, {core})
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        # Workers fork after start-up: pin every process of this nginx.
        for child in Path(f"/proc/{proc.pid}/task").iterdir():
            os.sched_setaffinity(int(child.name), {core})
        for line in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                   text=True, check=False).stdout.split():  # fmt: skip
            os.sched_setaffinity(int(line), {core})
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(d, ignore_errors=True)


def _cpu_s(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


ENGINE = "aiohttp"


async def one_window(url: str, rate: float, duration_s: float, step: int, capture: bool,
                     keep_pcap: Path | None) -> dict[str, Any]:  # fmt: skip
    profile = LoadProfile(rates=(rate,), concurrency=None, duration_s=duration_s, warmup_s=1.0,
                          seed=step, connections=64, timeout_s=10.0)  # fmt: skip
    plan = plan_step(profile, 0, 0, cycle=False)
    engine = build_engine(ENGINE, profile, PayloadPool((), cycle=False), EngineOptions())
    probe = NetworkProbe(ProbeOptions(capture=capture), [url]) if capture else None
    if probe is not None:
        await probe.open()
    window = Window("direct", url, step, rate, time.monotonic_ns())
    if probe is not None:
        await probe.start_window(window)
    self0, kids0, t0 = (
        _cpu_s(resource.RUSAGE_SELF),
        _cpu_s(resource.RUSAGE_CHILDREN),
        time.monotonic(),
    )
    result = await engine.run_step("direct", url, plan)
    self1, t1 = _cpu_s(resource.RUSAGE_SELF), time.monotonic()
    summary: dict[str, Any] = {}
    if probe is not None:
        if keep_pcap is not None:  # keep this window's pcap for the parser comparison
            dump, pcap, _ = probe._running[("direct", step)]
            await dump.stop()
            shutil.copy(pcap, keep_pcap)
            probe._running.pop(("direct", step))
            summary = {"kept_pcap": str(keep_pcap)}
        else:
            summary = await probe.stop_window(window)
        await probe.close()
    kids1 = _cpu_s(resource.RUSAGE_CHILDREN)
    recs = measured(result)  # a sample past --max-records: counts come from the tally
    ok = recs[completed(recs)]
    tally = tally_of(result)
    lat_ms = (ok["end_ns"] - ok["intended_ns"]) / 1e6
    wall = t1 - t0
    return {
        "capture": capture,
        "client_cpu_percent": round((self1 - self0) / wall * 100, 1),
        # Per request sent: steadier than % of wall time when neighbours steal the core.
        "client_cpu_us_per_request": round((self1 - self0) / max(tally.all_requests, 1) * 1e6, 1),
        "tcpdump_cpu_percent": round((kids1 - kids0) / wall * 100, 2) if capture else 0.0,
        "achieved_rps": round(tally.responses / duration_s, 1),
        "p50_ms": round(float(np.percentile(lat_ms, 50)), 3) if len(ok) else None,
        "p99_ms": round(float(np.percentile(lat_ms, 99)), 3) if len(ok) else None,
        "errors": tally.errors,
        **{
            k: summary.get(k)
            for k in (
                "capture_drops",
                "iface_drops",
                "packets",
                "handshakes",
                "bytes_to_server",
                "parse_s",
                "pcap_bytes",
            )
        },  # fmt: skip
    }


def parse_speed(pcap: Path) -> dict[str, Any]:
    """Seconds per packet: our struct reader, scapy RawPcapReader (read only), scapy dissection."""
    t = time.perf_counter()
    pkts, _ = read_pcap(pcap)
    ours = time.perf_counter() - t
    import scapy.layers.inet
    import scapy.layers.inet6
    import scapy.layers.l2  # noqa: F401  (registers Ethernet/SLL so PcapReader dissects)
    from scapy.utils import PcapReader, RawPcapReader

    t = time.perf_counter()
    n_raw = sum(1 for _ in RawPcapReader(str(pcap)))
    raw_s = time.perf_counter() - t
    limit = 20_000
    t = time.perf_counter()
    n_full = 0
    with PcapReader(str(pcap)) as reader:
        for _pkt in reader:
            n_full += 1
            if n_full >= limit:
                break
    full = time.perf_counter() - t
    return {
        "packets": len(pkts),
        "struct_reader_s": round(ours, 3),
        "struct_reader_us_per_packet": round(ours / max(len(pkts), 1) * 1e6, 2),
        "scapy_rawpcapreader_us_per_packet_read_only": round(raw_s / max(n_raw, 1) * 1e6, 2),
        "scapy_full_dissection_us_per_packet": round(full / max(n_full, 1) * 1e6, 1),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    speed: dict[str, Any] = {}
    with nginx(core=args.server_core) as port:
        url = f"http://127.0.0.1:{port}/"
        tmp = Path(tempfile.mkdtemp(prefix="pp-bench-pcap-"))
        try:
            step = 0
            for rep in range(args.repeats):
                for capture in (False, True):
                    row = await one_window(url, args.rate, args.duration, step, capture, None)
                    row["repeat"] = rep
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    step += 1
            kept = tmp / "kept.pcap"
            await one_window(url, args.rate, min(args.duration, 5.0), step, True, kept)
            speed = parse_speed(kept)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    off = [r["client_cpu_percent"] for r in rows if not r["capture"]]
    on = [r["client_cpu_percent"] for r in rows if r["capture"]]
    dump = [r["tcpdump_cpu_percent"] for r in rows if r["capture"]]
    per_off = [r["client_cpu_us_per_request"] for r in rows if not r["capture"]]
    per_on = [r["client_cpu_us_per_request"] for r in rows if r["capture"]]
    return {
        "engine": ENGINE,
        "rate_rps": args.rate,
        "duration_s": args.duration,
        "windows": rows,
        "client_cpu_percent_off_mean": round(float(np.mean(off)), 1),
        "client_cpu_percent_on_mean": round(float(np.mean(on)), 1),
        "client_cpu_extra_percent_of_off": round((np.mean(on) / np.mean(off) - 1) * 100, 1),
        "client_cpu_us_per_request_off_mean": round(float(np.mean(per_off)), 1),
        "client_cpu_us_per_request_on_mean": round(float(np.mean(per_on)), 1),
        "tcpdump_cpu_percent_mean": round(float(np.mean(dump)), 2),
        "errors_total": sum(int(r["errors"]) for r in rows),
        "capture_drops_total": sum(int(r["capture_drops"] or 0) for r in rows if r["capture"]),
        "parse_speed": speed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--client-core", type=int, default=0)
    ap.add_argument("--server-core", type=int, default=1)
    ap.add_argument("--engine", choices=("aiohttp", "fast"), default="aiohttp")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    global ENGINE
    ENGINE = args.engine
    if os.geteuid() != 0:
        sys.exit("run as root (tcpdump needs CAP_NET_RAW)")
    os.sched_setaffinity(0, {args.client_core})
    out = asyncio.run(main_async(args))
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
