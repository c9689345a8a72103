"""Soak: one long ``pathprobe diagnose`` at a steady rate against a local server, RSS sampled.

    .venv/bin/python benchmarks/soak.py [--rate 200] [--duration 600] [--every 10] [--out DIR]

Starts the ``ok`` server of ``tests/helpers/servers.py`` (fixed delay) on 127.0.0.1, runs the real
CLI as a subprocess (capture and profiling off: this measures the load engine and the session),
samples the client's RSS (the process and any children) every ``--every`` seconds, and writes
``DIR/soak.json`` with the samples plus a table on stdout. Per-request records are kept whole up
to ``--max-records`` per window (pathprobe's default 65,536, about 5 MB) and thinned beyond it,
so RSS should level off once that many requests have been sent; growth after that is a leak.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ROOT / "tests" / "helpers" / "servers.py"
PATHPROBE = Path(sys.executable).parent / "pathprobe"


def rss_bytes(proc: psutil.Process) -> int:
    """RSS of ``proc`` and its children (py-spy/tcpdump or worker processes, if any)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--every", type=float, default=10.0, help="RSS sampling interval, s")
    parser.add_argument("--delay-ms", type=float, default=5.0)
    parser.add_argument("--engine", default="auto", help="auto, aiohttp or fast")
    parser.add_argument("--max-records", type=int, default=None, help="passed to diagnose")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="pathprobe-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    ready = out / "server.port"
    ready.unlink(missing_ok=True)
    server = subprocess.Popen(
        [sys.executable, str(SERVERS), "ok", "--ready-file", str(ready),
         "--delay-ms", str(args.delay_ms)]
    )  # fmt: skip
    samples: list[dict[str, float]] = []
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("soak: the server did not start")
            time.sleep(0.05)
        url = f"http://127.0.0.1:{ready.read_text()}/"
        argv = [
            str(PATHPROBE), "diagnose", "--path", f"direct={url}", "--rate", f"{args.rate:g}",
            "--duration", f"{args.duration:g}", "--warmup", "0", "--engine", args.engine,
            "--no-capture", "--no-profile",
            "--out", str(out / "report"),
        ]  # fmt: skip
        if args.max_records is not None:
            argv += ["--max-records", str(args.max_records)]
        started = time.monotonic()
        client = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc = psutil.Process(client.pid)
        next_sample = started
        while client.poll() is None:
            now = time.monotonic()
            if now >= next_sample:
                rss = rss_bytes(proc)
                samples.append({"t_s": round(now - started, 1), "rss_mb": round(rss / 2**20, 1)})
                print(f"t={now - started:6.1f} s  rss={rss / 2**20:7.1f} MB", flush=True)
                next_sample += args.every
            time.sleep(0.2)
        stdout, stderr = client.communicate()
        elapsed = time.monotonic() - started
    finally:
        server.kill()
        server.wait()
    report_path = out / "report" / "report.json"
    steps: list[dict[str, object]] = []
    if report_path.exists():
        steps = json.loads(report_path.read_text())["paths"]["direct"]["steps"]
    requests = sum(int(s["requests"]) for s in steps)  # type: ignore[call-overload]
    result = {
        "engine": args.engine,
        "rate_rps": args.rate,
        "duration_s": args.duration,
        "elapsed_s": round(elapsed, 1),
        "exit_code": client.returncode,
        "stderr_tail": stderr.decode(errors="replace")[-500:],
        "requests": requests,
        "achieved_rps": [s.get("achieved_rps") for s in steps],
        "errors": [s.get("errors") for s in steps],
        "samples": samples,
    }
    during = [s for s in samples if s["t_s"] <= args.duration]
    if len(during) >= 3 and requests:
        # Growth during the load (start-up and the final report rendering left out), per request.
        first, last = during[1], during[-1]
        growth_mb = last["rss_mb"] - first["rss_mb"]
        result["rss_peak_mb"] = max(s["rss_mb"] for s in samples)
        result["rss_growth_mb"] = round(growth_mb, 1)
        result["rss_growth_bytes_per_request"] = round(growth_mb * 2**20 / max(requests, 1), 1)
        # Bounded records: the second half of the load should add nothing.
        half = next(s for s in during if s["t_s"] >= args.duration / 2)
        result["rss_growth_second_half_mb"] = round(last["rss_mb"] - half["rss_mb"], 1)
    (out / "soak.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    print(f"written: {out / 'soak.json'}")
    return 0 if client.returncode in (0, 1) else 1


if __name__ == "__main__":
    sys.exit(main())
