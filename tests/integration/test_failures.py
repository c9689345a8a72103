"""Failing and hostile targets: every failure is counted by kind, reported, and the run finishes
in bounded time and memory (issue 8, points 2 and 5).

Each test runs a real diagnosis (``run_diagnosis``, probes off) against a real misbehaving server
from ``tests/helpers/servers.py``, on every load engine that can speak the URL.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from pathprobe.config import build_config
from pathprobe.errors import CannotRunError
from pathprobe.session import BASELINE_S, run_diagnosis
from tests.conftest import HELPERS, ServerProc, free_env, start_process
from tests.helpers.certs import make_tls_files
from tests.helpers.servers import BIG_BODY_BYTES, OVERSIZED_HEADER_CHARS, XSS

pytestmark = pytest.mark.integration

# Every load engine; the fast one speaks plain http:// only (TLS tests use aiohttp).
ENGINES = ["aiohttp", "fast"]

Spawn = Callable[..., ServerProc]
# Generous bound on a short run's wall time: catches hangs (a missing timeout), not slowness.
HANG_S = 60.0


def diagnose(
    out: Path, paths: dict[str, str], engine: str = "aiohttp", **extra: Any
) -> tuple[dict[str, Any], int, float]:
    """One real diagnosis; returns (report.json as written, exit code, wall seconds)."""
    raw: dict[str, Any] = {
        "path": paths, "out": str(out), "engine": engine, "no_capture": True,
        "no_profile": True, "rate": 20, "duration": 1, "warmup": 0, "timeout": 2,
        "connect_timeout": 1,
    }  # fmt: skip
    raw.update(extra)
    config = build_config(raw)
    started = time.monotonic()
    report, code = run_diagnosis(config, ["diagnose"])
    elapsed = time.monotonic() - started
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["schema"] == "pathprobe.report/v1"
    assert (out / "report.html").stat().st_size > 0
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temp files left"
    assert on_disk["paths"].keys() == report["paths"].keys()
    return on_disk, code, elapsed


def step(report: dict[str, Any], path: str = "direct") -> dict[str, Any]:
    steps = report["paths"][path]["steps"]
    assert len(steps) == 1
    result: dict[str, Any] = steps[0]
    return result


@pytest.mark.parametrize("engine", ENGINES)
def test_connection_refused_is_counted(tmp_path: Path, spawn_server: Spawn, engine: str) -> None:
    good = spawn_server("ok")
    refusing = spawn_server("refuse")
    report, code, elapsed = diagnose(tmp_path, {"direct": good.url, "proxy": refusing.url}, engine)
    assert code == 0  # no targets given: nothing to miss
    bad = step(report, "proxy")
    assert bad["engine"] == engine
    assert bad["errors"] == bad["requests"] > 0
    assert bad["errors_by_kind"] == {"refused": bad["requests"]}
    assert "unreachable" in report["paths"]["proxy"]
    assert any("proxy was not reachable" in note for note in report["notes"])
    assert step(report, "direct")["errors"] == 0
    assert elapsed < HANG_S


def test_no_path_reachable_is_cannot_run(tmp_path: Path, spawn_server: Spawn) -> None:
    refusing = spawn_server("refuse")
    config = build_config({"path": {"direct": refusing.url}, "out": str(tmp_path), "rate": 5})
    with pytest.raises(CannotRunError, match=r"no path reachable \(direct: .*refused"):
        run_diagnosis(config, ["diagnose"])
    assert not (tmp_path / "report.json").exists()


@pytest.mark.parametrize("engine", ENGINES)
def test_server_that_never_answers_times_out(
    tmp_path: Path, spawn_server: Spawn, engine: str
) -> None:
    silent = spawn_server("silent")
    report, code, elapsed = diagnose(tmp_path, {"direct": silent.url}, engine, timeout=1)
    s = step(report)
    assert s["requests"] == 20
    assert s["errors_by_kind"] == {"timeout": 20}
    assert s["status_codes"] == {}
    # Bounded: the step (1 s) plus one request timeout (1 s), not the server's hour.
    assert elapsed < HANG_S
    assert silent.stats()["requests"] >= 1


@pytest.mark.parametrize("engine", ENGINES)
def test_connect_that_never_completes_times_out(
    tmp_path: Path, spawn_server: Spawn, engine: str
) -> None:
    """SYNs dropped (accept queue full): each request fails at the connect timeout."""
    good = spawn_server("ok")
    stuck = spawn_server("backlog")
    report, _code, elapsed = diagnose(
        tmp_path, {"direct": good.url, "proxy": stuck.url}, engine, rate=10, connect_timeout=1
    )
    s = step(report, "proxy")
    assert s["requests"] == 10
    assert s["errors_by_kind"] == {"connect_timeout": 10}
    assert "timed out" in report["paths"]["proxy"]["unreachable"]
    assert elapsed < HANG_S


@pytest.mark.parametrize("engine", ENGINES)
def test_body_that_trickles_hits_the_whole_request_timeout(
    tmp_path: Path, spawn_server: Spawn, engine: str
) -> None:
    """Headers arrive and bytes keep coming, slowly: the timeout covers the whole request, not
    only the wait for the first byte."""
    drip = spawn_server("drip")
    report, _code, elapsed = diagnose(tmp_path, {"direct": drip.url}, engine, rate=5, timeout=2)
    s = step(report)
    assert s["errors_by_kind"] == {"timeout": 5}
    assert s["responses"] == 0
    assert elapsed < HANG_S


@pytest.mark.parametrize("engine", ENGINES)
def test_response_cut_mid_body(tmp_path: Path, spawn_server: Spawn, engine: str) -> None:
    cut = spawn_server("cut")
    report, _code, _ = diagnose(tmp_path, {"direct": cut.url}, engine)
    s = step(report)
    assert s["errors"] == s["requests"] == 20
    assert set(s["errors_by_kind"]) <= {"protocol", "reset"}
    assert s["responses"] == 0  # a truncated body is not a completed response


@pytest.mark.parametrize("engine", ENGINES)
def test_garbage_response(tmp_path: Path, spawn_server: Spawn, engine: str) -> None:
    garbage = spawn_server("garbage")
    report, _code, _ = diagnose(tmp_path, {"direct": garbage.url}, engine)
    s = step(report)
    assert s["errors"] == s["requests"] == 20
    assert set(s["errors_by_kind"]) <= {"protocol", "reset"}
    assert s["latency_ms"]["p50"] is None or s["responses"] == 0


class RssSampler:
    """Peak RSS of this process while a block runs (sampled every 20 ms in a thread)."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = self.start = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize("engine", ENGINES)
def test_two_gigabyte_body_is_cut_and_memory_stays_bounded(
    tmp_path: Path, spawn_server: Spawn, engine: str
) -> None:
    huge = spawn_server("huge")
    with RssSampler() as rss:
        report, _code, elapsed = diagnose(
            tmp_path, {"direct": huge.url}, engine, rate=1, duration=2, timeout=60
        )
    s = step(report)
    assert s["requests"] == 2
    assert s["errors_by_kind"] == {"too_large": 2}
    # The client read past its 256 MiB cap on each request, yet held none of it.
    assert s["bytes_in"] == 0 or s["bytes_in"] > 256 << 20
    grown_mb = (rss.peak - rss.start) / 2**20
    assert grown_mb < 128, f"client RSS grew {grown_mb:.0f} MiB reading a 2 GiB body"
    assert elapsed < HANG_S + 60


@pytest.mark.parametrize("engine", ENGINES)
def test_large_legitimate_body_is_a_success(
    tmp_path: Path, spawn_server: Spawn, engine: str
) -> None:
    """1 MiB answered in one write: the head and much body arrive in the first read. Only the
    header block counts against the header-size limit, never the body after it."""
    big = spawn_server("big")
    report, _code, _ = diagnose(tmp_path, {"direct": big.url}, engine, rate=10)
    s = step(report)
    assert s["errors_by_kind"] == {}
    assert s["status_codes"] == {"200": 10}
    assert s["bytes_in"] == 10 * BIG_BODY_BYTES


@pytest.mark.parametrize("engine", ENGINES)
def test_server_killed_mid_run(tmp_path: Path, spawn_server: Spawn, engine: str) -> None:
    server = spawn_server("ok")
    # 1.5 s into the step: after the baseline the session sends first (no calibration here).
    killer = threading.Timer(BASELINE_S + 1.5, server.kill)
    killer.start()
    try:
        report, _code, elapsed = diagnose(
            tmp_path, {"direct": server.url}, engine, rate=20, duration=4, abort_on_error_rate=1.0,
            no_calibrate=True,
        )  # fmt: skip
    finally:
        killer.cancel()
    s = step(report)
    assert s["requests"] == 80
    ok = s["status_codes"].get("200", 0)
    assert ok > 0  # before the kill
    assert s["errors"] > 0  # after it
    assert ok + s["errors"] == s["requests"]
    assert set(s["errors_by_kind"]) <= {"refused", "reset", "protocol"}
    # Errors come after successes on the timeline, never before.
    timeline = [b for b in s["timeline"] if b["rps"] or b["errors"]]
    first_error = next(i for i, b in enumerate(timeline) if b["errors"])
    assert all(b["errors"] == 0 for b in timeline[:first_error])
    assert elapsed < HANG_S


# --- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(spawn_server: Spawn, tls_files: Any) -> str:
    server = spawn_server(
        "ok", "--tls-cert", str(tls_files.server_cert), "--tls-key", str(tls_files.server_key)
    )
    return f"https://127.0.0.1:{server.port}/"


def test_tls_verification_failure_is_a_tls_error(tmp_path: Path, tls_server: str) -> None:
    report, _code, _ = diagnose(tmp_path, {"direct": tls_server}, "aiohttp", rate=10)
    s = step(report)
    assert s["errors_by_kind"] == {"tls": 10}


def test_tls_insecure_works(tmp_path: Path, tls_server: str) -> None:
    report, _code, _ = diagnose(tmp_path, {"direct": tls_server}, "aiohttp", rate=10, insecure=True)
    s = step(report)
    assert s["errors"] == 0
    assert s["status_codes"] == {"200": 10}


def test_tls_handshake_is_its_own_phase(tmp_path: Path, tls_server: str) -> None:
    """Without keep-alive every request handshakes: TLS time is recorded apart from connect."""
    report, _code, _ = diagnose(
        tmp_path, {"direct": tls_server}, "aiohttp", rate=10, insecure=True, no_keepalive=True
    )
    s = step(report)
    assert s["errors"] == 0
    assert s["tls_ms"]["count"] == 10
    assert s["connect_ms"]["count"] == 10
    assert s["tls_ms"]["p50"] > 0


def test_tls_cacert_works(tmp_path: Path, tls_server: str, tls_files: Any) -> None:
    report, _code, _ = diagnose(
        tmp_path, {"direct": tls_server}, "aiohttp", rate=10, cacert=str(tls_files.ca_cert)
    )
    s = step(report)
    assert s["errors"] == 0
    assert s["status_codes"] == {"200": 10}


# --- DNS, through a stub resolver in a private mount namespace ----------------------------------


@pytest.fixture
def dns_stub(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A stub DNS server answering NXDOMAIN, and a resolv.conf that names only it."""
    ready, log = tmp_path / "dns.ready", tmp_path / "dns.log"
    proc = start_process(
        [sys.executable, str(HELPERS / "dns_stub.py"), "--ready-file", str(ready),
         "--log-file", str(log)],
        ready,
    )  # fmt: skip
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {ready.read_text()}\noptions timeout:1 attempts:1\n")
    try:
        yield resolv, log
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("engine", ENGINES)
def test_dns_failure_is_counted(
    tmp_path: Path, spawn_server: Spawn, dns_stub: tuple[Path, Path], engine: str
) -> None:
    """A name that does not resolve (RFC 6761 ``.invalid``), asked of a stub resolver only: the
    real pathprobe runs in a mount namespace whose /etc/resolv.conf names the stub, so no query
    can reach a real DNS server."""
    resolv, log = dns_stub
    good = spawn_server("ok")
    out = tmp_path / "out"
    pathprobe = shutil.which("pathprobe", path=str(Path(sys.executable).parent))
    assert pathprobe is not None
    argv = [
        pathprobe, "diagnose", "--path", f"direct={good.url}",
        "--path", f"proxy=http://pathprobe-dns-test.invalid:{good.port}/",
        "--rate", "10", "--duration", "1", "--warmup", "0", "--engine", engine,
        "--no-capture", "--no-profile", "--out", str(out),
    ]  # fmt: skip
    script = f'mount --bind "{resolv}" /etc/resolv.conf && exec "$@"'
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv],
        capture_output=True, timeout=HANG_S, env=free_env(), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads((out / "report.json").read_text())
    bad = step(report, "proxy")
    assert bad["errors_by_kind"] == {"dns": 10}
    assert step(report, "direct")["errors"] == 0
    assert "pathprobe-dns-test.invalid" in log.read_text()  # asked of the stub, nobody else
    assert Path("/etc/resolv.conf").read_text() != resolv.read_text()  # host untouched


# --- hostile servers ----------------------------------------------------------------------------


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


@pytest.mark.parametrize("engine", ENGINES)
def test_hostile_server_does_not_break_the_run(
    tmp_path: Path, spawn_server: Spawn, engine: str
) -> None:
    """HTML/JS in the status line, headers and body; one header value of 6000 characters."""
    hostile = spawn_server("hostile")
    report, code, _ = diagnose(tmp_path, {"direct": hostile.url}, engine, target_p99=10_000)
    s = step(report)
    assert code == 0
    assert s["status_codes"] == {"200": 20}
    assert s["errors"] == 0
    # What reaches report.json from the server is bounded: nothing near the 6000-char header.
    from_server = [t for t in strings(report) if "AAAA" in t or "pp-xss" in t]
    assert all(len(t) <= 600 for t in from_server), max(map(len, from_server))
    assert not any("A" * OVERSIZED_HEADER_CHARS in t for t in strings(report))
    # The replica names it chose for itself are clipped too (64 characters).
    assert all(len(name) <= 64 for name in s["by_replica"])
    # Never evaluated, kept as inert text at most: the report is still plain JSON of our schema.
    html = (tmp_path / "report.html").read_text()
    assert XSS not in html


@pytest.mark.parametrize("engine", ENGINES)
def test_endless_header_block_is_cut(tmp_path: Path, spawn_server: Spawn, engine: str) -> None:
    """Header lines that never end: a protocol error after a bounded read, memory bounded."""
    flood = spawn_server("endless-headers")
    with RssSampler() as rss:
        report, _code, elapsed = diagnose(tmp_path, {"direct": flood.url}, engine, rate=5)
    s = step(report)
    assert s["errors_by_kind"] == {"protocol": 5}
    assert (rss.peak - rss.start) / 2**20 < 128
    assert elapsed < HANG_S
