"""Shared fixtures: small real servers in subprocesses, always killed, and a clean proxy env.

Keep this file small and generic; module-specific fixtures live beside their tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HELPERS = Path(__file__).parent / "helpers"
SERVERS_SCRIPT = HELPERS / "servers.py"


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proxy variables must never route test traffic off the machine (as httpx's conftest)."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)


@dataclass
class ServerProc:
    """A server subprocess on 127.0.0.1:``port``; ``stats()`` reads what it counted."""

    proc: subprocess.Popen[bytes]
    port: int
    stats_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stats(self) -> dict[str, int]:
        try:
            data: dict[str, int] = json.loads(self.stats_file.read_text())
        except FileNotFoundError:
            return {"connections": 0, "requests": 0}
        return data

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def start_process(
    argv: list[str], ready_file: Path, timeout_s: float = 20.0, **popen: object
) -> subprocess.Popen[bytes]:
    """Start ``argv``; wait until it writes ``ready_file``. Kills it if it never gets ready."""
    proc = subprocess.Popen(argv, **popen)  # type: ignore[call-overload]
    deadline = time.monotonic() + timeout_s
    while not ready_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            raise RuntimeError(f"{argv[:3]} did not get ready (exit {proc.returncode})")
        time.sleep(0.02)
    return proc


@pytest.fixture
def spawn_server(tmp_path: Path) -> Iterator[Callable[..., ServerProc]]:
    """``spawn_server(kind, *extra_args)`` → a running tests/helpers/servers.py, killed after."""
    started: list[ServerProc] = []

    def spawn(kind: str, *extra: str) -> ServerProc:
        n = len(started)
        ready = tmp_path / f"server-{n}.port"
        stats = tmp_path / f"server-{n}.stats"
        argv = [sys.executable, str(SERVERS_SCRIPT), kind, "--ready-file", str(ready)]
        proc = start_process([*argv, "--stats-file", str(stats), *extra], ready)
        server = ServerProc(proc, int(ready.read_text()), stats)
        started.append(server)
        return server

    try:
        yield spawn
    finally:
        for server in started:
            server.kill()


def free_env() -> dict[str, str]:
    """The environment for a pathprobe subprocess: ours without proxies, unbuffered output."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI every tool is installed and we run as root: a skipped test is a failure there."""
    if not os.environ.get("PATHPROBE_FAIL_ON_SKIP"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter is not None else 0
    if skipped:
        sys.stderr.write(f"\nPATHPROBE_FAIL_ON_SKIP: {skipped} test(s) skipped in CI\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
