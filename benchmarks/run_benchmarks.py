"""pathprobe's load generator side by side with wrk and hey, in one run (issue 7).

    .venv/bin/python benchmarks/run_benchmarks.py [--repeats 3] [--only maxrate,workers,...]
        [--out results.json]

Installs the Debian packages it needs if missing (wrk, hey, nginx-light), starts nginx with
``return 200`` / ``return 204`` on 127.0.0.1 pinned to CPU 1 (its own temp config, stopped by PID),
pins every client to CPU 0 with ``taskset``, and measures:

* ``maxrate``  — 50 connections flat out: requests/s and requests per client CPU-second
                 (CPU of each client's whole process tree, from a cpuacct cgroup) for
                 pathprobe's fast and aiohttp engines, hey and wrk.
* ``workers``  — the fast engine with ``--workers 2`` vs 1: requests per client CPU-second.
* ``floor``    — nginx ``return 204`` at 1,000 requests/s: pathprobe p50 vs ``hey -c 10 -q 100``.
* ``delay``    — a server with a fixed 20 ms delay at 100 requests/s: p50 vs hey's.
* ``stall``    — a server that freezes 1 s every 5 s, open loop 100 requests/s for 20 s:
                 analytic p90 = 0.5 s, p99 = 0.95 s; pathprobe vs closed-loop hey and wrk.
* ``memory``   — peak RSS of a 1,000,000-request fast-engine run against nginx.

Each scenario runs ``--repeats`` times, tools interleaved; the report gives medians and ratios.
hey prints latencies to 0.1 ms; its percentiles are interpolated inside that bin (noted).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CLIENT = str(ROOT / "benchmarks" / "pp_client.py")
CLIENT_CPU = "0"
SERVER_CPU = "1"
SCENARIOS = ("maxrate", "workers", "floor", "delay", "stall", "memory")
HEY_BIN_S = 1e-4  # hey prints response times with 4 decimals (0.1 ms)


# --- tools and servers ---


def ensure_tools() -> None:
    """apt-get the Debian packages this needs when they are missing."""
    missing = [
        pkg
        for tool, pkg in (("wrk", "wrk"), ("hey", "hey"), ("nginx", "nginx-light"))
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()
    ]
    if missing:
        print(f"installing {' '.join(missing)} …", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", *missing], check=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
daemon off;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location = /204 {{ return 204; }}
    location / {{ return 200 "ok"; }}
  }}
}}
"""


@contextlib.contextmanager
def nginx() -> Iterator[int]:
    """nginx on 127.0.0.1 pinned to the server core; yields its port; stopped by PID."""
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory(prefix="ppbench-nginx-") as tmp:
        port = free_port()
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=tmp, port=port))
        proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, nginx_bin, "-c", str(conf), "-p", tmp],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(port)
            yield port
        finally:
            proc.terminate()  # SIGTERM to the master: it stops its workers
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@contextlib.contextmanager
def py_server(module: str, *args: str) -> Iterator[int]:
    """``python -m tests.servers.MODULE ARGS`` pinned to the server core; yields its port."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, PY, "-m", module, *args],
        stdout=subprocess.PIPE,
        env=env,
        cwd=ROOT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        wait_port(port)
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass
class Run:
    """One client process: its output and what it cost (CPU of its whole process tree)."""

    stdout: str
    cpu_s: float
    wall_s: float
    max_rss_bytes: int
    returncode: int


CPUACCT_ROOT = Path("/sys/fs/cgroup/cpuacct")


def run_client(argv: list[str]) -> Run:
    """Run ``argv`` pinned to the client core; CPU of every process it started.

    The client runs in a cpuacct cgroup of its own: load workers forked by multiprocessing's fork
    server are not the client's children, so the kernel's rusage of the client (``wait4``, which
    counts only waited-for children) would leave them out. Without cpuacct, rusage it is.
    """
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    group = _cpuacct_group()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            ["taskset", "-c", CLIENT_CPU, *argv], stdout=out, stderr=err, env=env, cwd=ROOT,
            preexec_fn=None if group is None else _joiner(group),
        )  # fmt: skip
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        cpu_s = usage.ru_utime + usage.ru_stime
        if group is not None:
            cpu_s = _drain_cpuacct(group)
        out.seek(0)
        err.seek(0)
        text = out.read().decode(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {err.read()[-2000:]!r}")
    return Run(text, cpu_s, wall, usage.ru_maxrss * 1024, proc.returncode)


def _cpuacct_group() -> Path | None:
    if not (CPUACCT_ROOT / "cgroup.procs").exists():
        return None
    group = CPUACCT_ROOT / f"pathprobe-bench-{os.getpid()}-{time.monotonic_ns()}"
    try:
        group.mkdir()
    except OSError:
        return None
    return group


def _joiner(group: Path) -> Any:
    def join() -> None:  # in the child, before exec
        (group / "cgroup.procs").write_text(str(os.getpid()))

    return join


def _drain_cpuacct(group: Path, timeout_s: float = 15.0) -> float:
    """CPU-seconds the group used, once its last process (e.g. a fork server) left; removes it."""
    deadline = time.monotonic() + timeout_s
    while (group / "cgroup.procs").read_text().split() and time.monotonic() < deadline:
        time.sleep(0.05)
    cpu_s = int((group / "cpuacct.usage").read_text()) / 1e9
    with contextlib.suppress(OSError):
        group.rmdir()
    return cpu_s


# --- output parsers ---


def parse_wrk(text: str) -> dict[str, Any]:
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    if not m:
        raise RuntimeError(f"cannot parse wrk output: {text[-500:]}")
    unit = {"s": 1.0, "ms": 1e-3, "m": 60.0}[m.group(3)]
    out: dict[str, Any] = {"requests": int(m.group(1)), "duration_s": float(m.group(2)) * unit}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["errors"] = int(errors.group(1)) if errors else 0
    for q, value, unit_s in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit_s]
        out[f"p{q}_ms"] = float(value) * scale
    return out


def parse_hey_summary(text: str) -> dict[str, Any]:
    total = re.search(r"Total:\s+([\d.]+) secs", text)
    codes = re.findall(r"\[(\d+)\]\s+(\d+) responses", text)
    if not total:
        raise RuntimeError(f"cannot parse hey output: {text[-500:]}")
    ok = sum(int(n) for code, n in codes if code.startswith("2"))
    return {
        "requests": sum(int(n) for _c, n in codes),
        "ok": ok,
        "duration_s": float(total.group(1)),
    }


def parse_hey_csv(text: str) -> np.ndarray:
    """Response times (seconds) of the successful requests in hey's CSV output."""
    times: list[float] = []
    for line in text.splitlines()[1:]:
        parts = line.split(",")
        if len(parts) >= 7 and parts[6].strip().startswith("2"):
            times.append(float(parts[0]))
    return np.array(times)


def binned_percentile(values: np.ndarray, q: float, bin_width: float) -> float:
    """The ``q``-th percentile of values rounded to ``bin_width``, spread evenly inside the bin."""
    ordered = np.sort(values)
    rank = q / 100 * (len(ordered) - 1)
    r = ordered[int(round(rank))]
    below = int(np.searchsorted(ordered, r - bin_width / 2, side="left"))
    equal = int(np.searchsorted(ordered, r + bin_width / 2, side="left")) - below
    frac = (rank - below + 0.5) / max(equal, 1)
    return float(r - bin_width / 2 + min(max(frac, 0.0), 1.0) * bin_width)


def pp(url: str, *args: str) -> list[str]:
    return [PY, CLIENT, url, *args]


def pp_json(run: Run) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return data


# --- scenarios ---


@dataclass
class Table:
    title: str
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, tool: str, row: dict[str, Any]) -> None:
        self.rows.setdefault(tool, []).append(row)
        print(f"  {self.title} {tool}: {json.dumps(row)}", file=sys.stderr, flush=True)

    def median(self, tool: str, key: str) -> float:
        values = [r[key] for r in self.rows.get(tool, []) if r.get(key) is not None]
        return float(statistics.median(values)) if values else float("nan")


def maxrate(repeats: int, duration_s: float) -> Table:
    table = Table("maxrate")
    d = f"{duration_s:g}"
    with nginx() as port:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(repeats):
            for engine in ("fast", "aiohttp"):
                run = run_client(
                    pp(
                        url,
                        "--engine",
                        engine,
                        "--concurrency",
                        "50",
                        "--connections",
                        "50",
                        "--duration",
                        d,
                    )
                )
                data = pp_json(run)
                table.add(
                    f"pathprobe-{engine}",
                    {
                        "rps": data["completed"] / data["wall_s"],
                        "req_per_cpu_s": data["completed"] / run.cpu_s,
                        "req_per_cpu_s_window": data["completed"] / data["cpu_window_s"],
                        "errors": data["errors"],
                    },
                )
            run = run_client(["hey", "-z", f"{d}s", "-c", "50", "-cpus", "1", url])
            hey = parse_hey_summary(run.stdout)
            table.add(
                "hey",
                {
                    "rps": hey["ok"] / hey["duration_s"],
                    "req_per_cpu_s": hey["ok"] / run.cpu_s,
                    "errors": hey["requests"] - hey["ok"],
                },
            )
            run = run_client(["wrk", "-t1", "-c50", f"-d{d}s", "--latency", url])
            wrk = parse_wrk(run.stdout)
            table.add(
                "wrk",
                {
                    "rps": wrk["requests"] / wrk["duration_s"],
                    "req_per_cpu_s": wrk["requests"] / run.cpu_s,
                    "errors": wrk["errors"],
                },
            )
    return table


def workers(repeats: int, duration_s: float) -> Table:
    table = Table("workers")
    with nginx() as port:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(repeats):
            for n in ("1", "2"):
                run = run_client(
                    pp(
                        url,
                        "--engine",
                        "fast",
                        "--concurrency",
                        "50",
                        "--connections",
                        "50",
                        "--duration",
                        f"{duration_s:g}",
                        "--workers",
                        n,
                    )
                )
                data = pp_json(run)
                table.add(
                    f"fast-workers-{n}",
                    {
                        "rps": data["completed"] / data["wall_s"],
                        "req_per_cpu_s": data["completed"] / run.cpu_s,
                        "req_per_cpu_s_window": data["completed"] / data["cpu_window_s"],
                    },
                )
    table.notes.append(
        "both workers share CPU 0 (2 cores, nginx on the other): efficiency, "
        "not scaling; external CPU includes start-up of the worker processes"
    )
    return table


def hey_latency_row(run: Run) -> dict[str, Any]:
    times = parse_hey_csv(run.stdout)
    return {
        "requests": len(times),
        "p50_ms": binned_percentile(times, 50, HEY_BIN_S) * 1e3,
        "p90_ms": binned_percentile(times, 90, HEY_BIN_S) * 1e3,
        "p99_ms": binned_percentile(times, 99, HEY_BIN_S) * 1e3,
    }


def pp_latency_row(run: Run) -> dict[str, Any]:
    data = pp_json(run)
    return {
        "requests": data["completed"],
        "p50_ms": data["latency_ms"]["p50"],
        "p90_ms": data["latency_ms"]["p90"],
        "p99_ms": data["latency_ms"]["p99"],
        "service_p50_ms": data["service_ms"]["p50"],
        "slip_p50_ms": data["slip_ms"]["p50"],
        "slip_p99_ms": data["slip_ms"]["p99"],
    }


def floor(repeats: int) -> Table:
    table = Table("floor")
    with nginx() as port:
        latency_side_by_side(table, f"http://127.0.0.1:{port}/204", port, 1000, repeats)
    table.notes.append(
        "pathprobe p50 is from the intended send time (includes schedule slip); "
        "hey's from its actual send, 0.1 ms resolution interpolated"
    )
    table.notes.append(
        "wire_p50_ms (first repeat): tcpdump on lo, last request byte → first response byte, "
        "the floor no client can go below; each client's p50 minus it is its own overhead"
    )
    return table


def latency_side_by_side(table: Table, url: str, port: int, rate: int, repeats: int) -> None:
    """Both pathprobe engines and hey at ``rate`` requests/s over 10 connections, 10 s each,
    interleaved; the first repeat also captures the wire (:func:`wire_ttfb`)."""
    hey_per_worker = str(rate // 10)  # hey -q is per worker (-c 10)
    for i in range(repeats):
        for engine in ("fast", "aiohttp"):
            argv = pp(url, "--engine", engine, "--rate", str(rate), "--connections", "10",
                      "--duration", "10", "--warmup", "1")  # fmt: skip
            with wire_ttfb(port, enabled=i == 0) as wire:
                run = run_client(argv)
            table.add(f"pathprobe-{engine}", {**pp_latency_row(run), **wire})
        argv = ["hey", "-c", "10", "-q", hey_per_worker, "-z", "10s", "-cpus", "1", "-o", "csv",
                url]  # fmt: skip
        with wire_ttfb(port, enabled=i == 0) as wire:
            run = run_client(argv)
        table.add("hey", {**hey_latency_row(run), **wire})


@contextlib.contextmanager
def wire_ttfb(port: int, enabled: bool) -> Iterator[dict[str, Any]]:
    """While the block runs, capture the loopback traffic to ``port``; afterwards the dict holds
    ``wire_p50_ms``, the median wire TTFB pathprobe's own capture analysis finds in it."""
    found: dict[str, Any] = {}
    if not enabled or shutil.which("tcpdump") is None:
        yield found
        return
    from pathprobe.decode.pcap import PcapInfo, iter_pcap
    from pathprobe.decode.tcpflows import analyze

    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "floor.pcap"
        dump = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-w", str(pcap), "-s", "128", "-B", "32768", "-n", "-p",
             "-Z", "root", "--time-stamp-precision", "nano", f"tcp port {port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1.0)  # tcpdump has no ready signal; it listens well within this
        try:
            yield found
        finally:
            time.sleep(0.5)
            dump.terminate()
            dump.wait(timeout=10)
        stats = analyze(iter_pcap(pcap, PcapInfo(-1, 0, False)), [], port).summary()
        found["wire_p50_ms"] = stats["wire_ttfb_ms"]["p50"]


def delay(repeats: int) -> Table:
    table = Table("delay")
    with py_server("tests.servers.fixed_delay", "0.020") as port:
        latency_side_by_side(table, f"http://127.0.0.1:{port}/", port, 100, repeats)
    table.notes.append(
        "wire_p50_ms (first repeat): the server's 20 ms as the wire saw it; no client's p50 can be "
        "below it"
    )
    return table


def stall(repeats: int) -> Table:
    table = Table("stall")
    with py_server("tests.servers.stall", "5", "1") as port:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(repeats):
            run = run_client(
                pp(
                    url,
                    "--engine",
                    "fast",
                    "--rate",
                    "100",
                    "--connections",
                    "100",
                    "--duration",
                    "20",
                    "--warmup",
                    "1",
                )
            )
            table.add("pathprobe-fast", pp_latency_row(run))
            run = run_client(
                ["hey", "-c", "10", "-q", "10", "-z", "20s", "-cpus", "1", "-o", "csv", url]
            )
            table.add("hey (closed loop, 10 workers × 10/s)", hey_latency_row(run))
            run = run_client(["wrk", "-t1", "-c10", "-d20s", "--latency", url])
            wrk = parse_wrk(run.stdout)
            table.add(
                "wrk (closed loop, 10 connections)",
                {
                    "requests": wrk["requests"],
                    "p50_ms": wrk.get("p50_ms"),
                    "p90_ms": wrk.get("p90_ms"),
                    "p99_ms": wrk.get("p99_ms"),
                },
            )
    table.notes.append("analytic (open loop): p90 = 500 ms, p99 = 950 ms")
    return table


def memory(_repeats: int) -> Table:
    table = Table("memory")
    with nginx() as port:
        url = f"http://127.0.0.1:{port}/"
        run = run_client(
            pp(
                url,
                "--engine",
                "fast",
                "--rate",
                "20000",
                "--connections",
                "50",
                "--duration",
                "50",
                "--timeout",
                "60",
            )
        )
        data = pp_json(run)
        table.add(
            "pathprobe-fast 1M requests",
            {
                "requests": data["requests"],
                "completed": data["completed"],
                "max_rss_run_mb": data["max_rss_run_bytes"] / 2**20,
                "max_rss_process_mb": run.max_rss_bytes / 2**20,
                "wall_s": run.wall_s,
                "achieved_rps": data["completed"] / data["wall_s"],
            },
        )
    table.notes.append(
        "max_rss_run_mb: peak RSS when the step returned (engine + records); "
        "max_rss_process_mb: the whole client process incl. its percentile analysis"
    )
    table.notes.append(
        "per-request records kept whole up to --max-records (65,536, ~5 MB), then a sample "
        "by request number; every request still counted exactly (load.store)"
    )
    return table


RUNNERS: dict[str, Callable[[argparse.Namespace], Table]] = {
    "maxrate": lambda a: maxrate(a.repeats, a.duration),
    "workers": lambda a: workers(a.repeats, 2 * a.duration),
    "floor": lambda a: floor(a.repeats),
    "delay": lambda a: delay(a.repeats),
    "stall": lambda a: stall(a.repeats),
    "memory": lambda a: memory(a.repeats),
}


# --- report ---


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def report(tables: list[Table], meta: dict[str, Any]) -> str:
    lines = [
        f"# pathprobe benchmarks — {meta['date']}",
        "",
        f"machine: {meta['machine']}; load average at start {meta['loadavg_start']}, "
        f"at end {meta['loadavg_end']}; client on CPU {CLIENT_CPU}, servers on CPU "
        f"{SERVER_CPU}; medians of {meta['repeats']} repeats",
        "",
    ]
    for table in tables:
        keys: list[str] = []
        for rows in table.rows.values():
            for row in rows:
                keys += [k for k in row if k not in keys]
        lines += [
            f"## {table.title}",
            "",
            "| tool | " + " | ".join(keys) + " |",
            "|---" * (len(keys) + 1) + "|",
        ]
        for tool in table.rows:
            lines.append(
                f"| {tool} | " + " | ".join(fmt(table.median(tool, k)) for k in keys) + " |"
            )
        lines += [""] + [f"* {n}" for n in table.notes] + [""]
        lines += ratios(table)
    return "\n".join(lines)


def ratios(table: Table) -> list[str]:
    out: list[str] = []
    m = table.median
    if table.title == "maxrate":
        out += [
            f"* pathprobe-fast / hey {key}: {m('pathprobe-fast', key) / m('hey', key):.2f}×"
            f"; / wrk: {m('pathprobe-fast', key) / m('wrk', key):.2f}×"
            for key in ("rps", "req_per_cpu_s")
        ]
        out.append(
            f"* pathprobe-fast / hey req per in-step CPU-s: "
            f"{m('pathprobe-fast', 'req_per_cpu_s_window') / m('hey', 'req_per_cpu_s'):.2f}×"
        )
    if table.title == "workers":
        out += [
            f"* workers 2 / 1 {key}: {m('fast-workers-2', key) / m('fast-workers-1', key):.2f}×"
            for key in ("req_per_cpu_s", "req_per_cpu_s_window")
        ]
    if table.title in ("floor", "delay"):
        for tool in ("pathprobe-fast", "pathprobe-aiohttp"):
            diff_us = (m(tool, "p50_ms") - m("hey", "p50_ms")) * 1e3
            svc_us = (m(tool, "service_p50_ms") - m("hey", "p50_ms")) * 1e3
            out.append(
                f"* {tool} p50 − hey p50: {diff_us:+.0f} µs (service time: {svc_us:+.0f} µs)"
            )
    if table.title == "stall":
        out += [
            f"* {tool}: p90 {m(tool, 'p90_ms') / 500:.2f}× analytic, "
            f"p99 {m(tool, 'p99_ms') / 950:.2f}× analytic"
            for tool in table.rows
        ]
    return out + ([""] if out else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="max-rate run length (s)")
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs 2 CPUs (client on CPU 0, servers on CPU 1)")
    ensure_tools()
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"{platform.platform()}",
        "loadavg_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "repeats": args.repeats,
    }
    tables = []
    for name in args.only.split(","):
        print(f"== {name}", file=sys.stderr, flush=True)
        tables.append(RUNNERS[name](args))
    meta["loadavg_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    text = report(tables, meta)
    print(text)
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "meta": meta,
                    "tables": {t.title: {"rows": t.rows, "notes": t.notes} for t in tables},
                    "report": text,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
