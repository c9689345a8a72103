"""The network probe against real traffic, captured by a real tcpdump.

Loopback: exact reconciliation of handshakes and bytes with what the client did, wire TTFB ≈ the
server's fixed delay. Namespace (``ppnet-…``, veth in 10.213.250.0/24): RTT rises by an NFQUEUE
delay over the idle baseline; random loss on the server's INPUT produces retransmissions.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from netprobe_helpers import drive, netns, nfq_delay, server_process

from pathprobe.config import ProbeOptions
from pathprobe.probes.base import Probe, Window
from pathprobe.probes.network import NetworkProbe

pytestmark = [pytest.mark.integration, pytest.mark.root]


def _window(path: str, url: str, step: int) -> Window:
    return Window(path=path, url=url, step=step, offered_rps=None, start_ns=time.monotonic_ns())


async def _capture(probe: NetworkProbe, path: str, url: str, step: int, coro: object) -> dict:
    window = _window(path, url, step)
    await probe.start_window(window)
    result = await coro  # type: ignore[misc]
    assert (await probe.stop_window(window))["pending"] is True
    # The capture is parsed after tcpdump waited out its block timeout, in the background.
    summary = (await probe.summaries())[-1]
    assert (summary["path"], summary["step"]) == (path, step)
    return {"summary": summary, "result": result}


def test_loopback_reconciles_with_the_client() -> None:
    delay_ms, body_bytes, conns, per_conn = 30.0, 3000, 4, 10
    request_body = b"q" * 700

    async def scenario(port: int) -> tuple[dict, dict]:
        url = f"http://127.0.0.1:{port}/"
        probe = NetworkProbe(ProbeOptions(), [url])
        assert isinstance(probe, Probe)
        try:
            await probe.open()
            got = await _capture(
                probe, "direct", url, 0,
                drive("127.0.0.1", port, connections=conns, per_connection=per_conn,
                      body=request_body),
            )  # fmt: skip
        finally:
            section = await probe.close()
        return got, section

    with server_process("127.0.0.1", 0, delay_ms, body_bytes) as port:
        got, section = asyncio.run(scenario(port))
    s, totals = got["summary"], got["result"]

    assert section["available"] is True, section
    assert section["tool"] == "tcpdump"
    assert s["available"] is True, s
    assert s["iface"] == "lo"
    assert s["path"] == "direct"
    assert s["step"] == 0
    assert isinstance(s["capture_drops"], int)
    assert s["capture_drops"] == 0
    assert s["handshakes"] == conns
    assert s["connections"] == conns
    assert s["rtt_ms"]["count"] == conns
    assert totals.requests == conns * per_conn
    # TCP payload = HTTP bytes exactly (headers included): nothing lost, nothing counted twice.
    assert s["bytes_to_server"] == totals.bytes_sent
    assert s["bytes_from_server"] == totals.bytes_received
    assert s["retransmissions"] == 0
    assert s["resets"] == 0
    ttfb = s["wire_ttfb_ms"]
    assert ttfb["count"] == conns * per_conn
    # The server sleeps delay_ms before answering: the wire gap cannot be shorter than that.
    assert ttfb["p50"] >= delay_ms * 0.98
    assert ttfb["p50"] < delay_ms + 200
    idle = section["idle_rtt_ms"]["direct"]
    assert idle["count"] >= 5
    assert section["windows"] == [s]


def test_no_capture_degrades_with_a_reason() -> None:
    async def scenario() -> tuple[dict, dict]:
        url = "http://127.0.0.1:9/"
        probe = NetworkProbe(ProbeOptions(capture=False), [url])
        await probe.open()
        w = _window("direct", url, 0)
        await probe.start_window(w)
        summary = await probe.stop_window(w)
        return summary, await probe.close()

    summary, section = asyncio.run(scenario())
    assert section["available"] is False
    assert "--no-capture" in section["reason"]
    assert section["how_to_enable"]
    assert summary["available"] is False
    assert summary["path"] == "direct"
    # Port 9 on loopback refuses: the idle baseline is empty, not an exception.
    assert section["idle_rtt_ms"]["direct"]["count"] == 0


def test_namespace_delay_raises_rtt_and_loss_causes_retransmissions() -> None:
    inject_ms = 40.0
    with netns() as ns, server_process(ns.ns_ip, 8080, 0.0, 2000, netns=ns.name) as port:
        url = f"http://{ns.ns_ip}:{port}/"

        async def scenario() -> tuple[dict, dict, dict]:
            probe = NetworkProbe(ProbeOptions(), [url])
            try:
                await probe.open()  # idle baseline, before any fault
                with nfq_delay(ns, 7, inject_ms, ["--sport", str(port)]):
                    delayed = await _capture(
                        probe, "direct", url, 0,
                        drive(ns.ns_ip, port, connections=6, per_connection=3),
                    )  # fmt: skip
                rule = ["-p", "tcp", "--dport", str(port), "-m", "statistic", "--mode",
                        "random", "--probability", "0.05", "-j", "DROP"]  # fmt: skip
                ns.run("iptables", "-A", "INPUT", *rule)
                try:
                    lossy = await _capture(
                        probe, "direct", url, 1,
                        drive(ns.ns_ip, port, connections=4, per_connection=60,
                              body=b"b" * 1200),
                    )  # fmt: skip
                finally:
                    ns.run("iptables", "-D", "INPUT", *rule, check=False)
            finally:
                section = await probe.close()
            return delayed["summary"], lossy["summary"], section

        delayed, lossy, section = asyncio.run(scenario())

    idle = section["idle_rtt_ms"]["direct"]
    assert section["available"] is True
    assert delayed["iface"] == ns.host_if  # found by the route lookup, not told
    assert idle["count"] >= 5
    assert idle["p50"] < inject_ms / 2
    assert delayed["handshakes"] == 6
    rise = delayed["rtt_ms"]["p50"] - idle["p50"]
    # The SYN/ACK is held inject_ms: the rise is at least that, and not wildly more.
    assert rise >= inject_ms * 0.95, (delayed["rtt_ms"], idle)
    assert rise < inject_ms + 100, (delayed["rtt_ms"], idle)
    assert delayed["retransmissions"] == 0
    # 5 % random loss of ≥ 240 client data segments: P(no loss) = 0.95**240 ≈ 4e-6.
    assert lossy["retransmissions"] > 0, lossy
    assert 0 < lossy["retransmission_rate"] < 0.5
    assert lossy["data_segments"] >= 240


def test_reconciles_with_the_load_engine() -> None:
    """Driven by pathprobe's own engine: handshakes seen == connections the engine opened, and the
    wire carries the bodies plus a steady per-request header overhead."""
    from pathprobe.config import LoadProfile
    from pathprobe.load.engine import AiohttpEngine, EngineOptions
    from pathprobe.load.payloads import PayloadPool
    from pathprobe.load.schedule import plan_step
    from pathprobe.probes.client import client_overhead_ms
    from pathprobe.probes.network import reconcile

    async def scenario(port: int) -> tuple[dict, dict]:
        url = f"http://127.0.0.1:{port}/"
        profile = LoadProfile(rates=(200.0,), concurrency=None, duration_s=1.0, warmup_s=0.2,
                              seed=3, connections=8, timeout_s=10.0)  # fmt: skip
        engine = AiohttpEngine(profile, PayloadPool((), cycle=False), EngineOptions())
        probe = NetworkProbe(ProbeOptions(), [url])
        try:
            await probe.open()
            window = _window("direct", url, 0)
            await probe.start_window(window)
            result = await engine.run_step("direct", url, plan_step(profile, 0, 0, cycle=False))
            await probe.stop_window(window)
            [summary] = await probe.summaries()
        finally:
            await probe.close()
        rec = reconcile(summary, result.records)
        rec["overhead"] = client_overhead_ms(result.records, summary["wire_ttfb_ms"])
        return summary, rec

    with server_process("127.0.0.1", 0, 2.0, 512) as port:
        summary, rec = asyncio.run(scenario(port))
    assert rec["requests"] == 240
    assert rec["connections_opened_by_client"] >= 1
    assert rec["handshakes_seen"] == rec["connections_opened_by_client"]
    assert rec["handshake_ratio"] == 1.0
    assert rec["body_bytes_in"] == 240 * 512
    # GET without a body: the wire carries only the request line and headers.
    assert 40 < rec["header_bytes_per_request_out"] < 1000
    assert 40 < rec["header_bytes_per_request_in"] < 1000
    assert summary["wire_ttfb_ms"]["count"] == 240
    # The application sees each response no earlier than the wire does (it sends before the last
    # request byte is on the wire and reads after the first response byte arrived).
    overhead = rec["overhead"]
    assert overhead["app_ttfb_ms"]["count"] >= 200
    assert overhead["overhead_p50_ms"] >= -0.05, overhead


NO_PRIVILEGE_SCRIPT = """
import asyncio, json
from pathprobe.config import ProbeOptions
from pathprobe.probes.network import NetworkProbe

async def main():
    probe = NetworkProbe(ProbeOptions(), ["http://127.0.0.1:9/"])
    await probe.open()
    return await probe.close()

print(json.dumps(asyncio.run(main())))
"""


def test_without_root_or_cap_net_raw_degrades_with_a_reason() -> None:
    """A real unprivileged process (uid nobody, no capabilities), not a mock."""
    import json
    import subprocess
    import sys

    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
         sys.executable, "-c", NO_PRIVILEGE_SCRIPT],
        capture_output=True, text=True, timeout=60, check=True, cwd="/",
    )  # fmt: skip
    section = json.loads(out.stdout)
    assert section["available"] is False
    assert "CAP_NET_RAW" in section["reason"]
    assert "setcap" in section["how_to_enable"]


def test_without_tcpdump_degrades_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    import pathprobe.probes.network as network

    monkeypatch.setattr(network, "find_tcpdump", lambda: None)

    async def scenario() -> dict:
        probe = NetworkProbe(ProbeOptions(), ["http://127.0.0.1:9/"])
        await probe.open()
        return await probe.close()

    section = asyncio.run(scenario())
    assert section["available"] is False
    assert "tcpdump is not installed" in section["reason"]
    assert "apt-get install tcpdump" in section["how_to_enable"]


def test_tcpdump_failing_to_start_is_a_reason_not_a_crash() -> None:
    async def scenario() -> tuple[dict, dict]:
        url = "http://127.0.0.1:9/"
        probe = NetworkProbe(ProbeOptions(capture_iface="ppnet-none0"), [url])
        await probe.open()
        w = _window("direct", url, 0)
        await probe.start_window(w)
        summary = await probe.stop_window(w)
        return summary, await probe.close()

    summary, section = asyncio.run(scenario())
    assert section["available"] is True  # the probe could run; this window could not
    assert summary["available"] is False
    assert "tcpdump exited" in summary["reason"]
    assert "ppnet-none0" in summary["reason"]


ORPHAN_SCRIPT = """
import asyncio, time
from pathprobe.config import ProbeOptions
from pathprobe.probes.base import Window
from pathprobe.probes.network import NetworkProbe

async def main():
    probe = NetworkProbe(ProbeOptions(), ["http://127.0.0.1:9/"])
    await probe.open()
    await probe.start_window(Window("direct", "http://127.0.0.1:9/", 0, None, time.monotonic_ns()))
    dump = next(iter(probe._running.values()))[0]
    print(dump.proc.pid, probe._tmpdir, flush=True)
    await asyncio.sleep(60)  # killed long before

asyncio.run(main())
"""


def test_tcpdump_does_not_outlive_a_killed_pathprobe() -> None:
    """SIGKILL gives no chance to clean up: the kernel's parent-death signal stops tcpdump."""
    import shutil
    import signal
    import subprocess
    import sys
    from pathlib import Path

    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT], stdout=subprocess.PIPE, text=True
    )
    tmpdir = None
    try:
        assert parent.stdout is not None
        pid_text, tmpdir = parent.stdout.readline().split()
        tcpdump_pid = int(pid_text)
        assert "tcpdump" in Path(f"/proc/{tcpdump_pid}/cmdline").read_text()
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(tcpdump_pid):
            time.sleep(0.05)
        assert not _alive(tcpdump_pid)
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.communicate(timeout=10)
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Running, i.e. neither gone nor a zombie waiting for its new parent to reap it."""
    from pathlib import Path

    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
