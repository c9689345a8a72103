"""``pathprobe agent`` as a real process on 127.0.0.1: every refusal, and the remote probe.

Each refusal of issue 8 item 6 has its test: no/wrong token (401), a PID outside the agent's
tree (403), more concurrent recordings than allowed (429), recordings past the length cap (stopped
by the agent itself), fields that could carry a command (400, nothing run), loopback by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from serverprobe_helpers import App, drive, start_app

from pathprobe.probes.base import Window
from pathprobe.probes.remote import AgentServerProbe

pytestmark = [pytest.mark.integration, pytest.mark.root]

TOKEN = "test-token-0123456789abcdef"
PATHPROBE = str(Path(sys.executable).with_name("pathprobe"))
MAX_RECORD_S = 3


@dataclass
class Agent:
    proc: subprocess.Popen[bytes]
    url: str


def _spawn_agent(args: list[str], token: str | None = TOKEN) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.pop("PATHPROBE_AGENT_TOKEN", None)
    if token is not None:
        env["PATHPROBE_AGENT_TOKEN"] = token
    return subprocess.Popen(
        [PATHPROBE, "agent", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )


def _read_url(proc: subprocess.Popen[bytes], timeout_s: float = 90.0) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise RuntimeError(f"agent did not start: {proc.stderr.read() if proc.stderr else ''}")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            line += os.read(proc.stdout.fileno(), 256)
    assert line.startswith(b"listening "), line
    return line.split()[1].decode()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@contextlib.contextmanager
def running_agent(app: App, *extra: str) -> Iterator[Agent]:
    proc = _spawn_agent(
        ["--pid", str(app.pid), "--listen", "127.0.0.1:0", "--max-record", str(MAX_RECORD_S),
         "--max-concurrent", "2", "--rate", "50", *extra]
    )  # fmt: skip
    try:
        yield Agent(proc, _read_url(proc))
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def app() -> Iterator[App]:
    with start_app("light", workers=2) as server:
        yield server


@pytest.fixture(scope="module")
def agent(app: App) -> Iterator[Agent]:
    with running_agent(app) as running:
        yield running


async def _call(
    url: str, method: str, path: str, *, token: str | None = TOKEN, json: Any = None,
    data: bytes | None = None, headers: dict[str, str] | None = None,
) -> tuple[int, Any]:  # fmt: skip
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.request(method, url + path, json=json, data=data, headers=hdrs) as resp,
    ):
        try:
            body = await resp.json(content_type=None)
        except ValueError:
            body = await resp.text()
        return resp.status, body


def call(url: str, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    return asyncio.run(_call(url, method, path, **kwargs))


def _py_spy_children(pid: int) -> list[int]:
    with contextlib.suppress(psutil.Error):
        return [c.pid for c in psutil.Process(pid).children(recursive=True)
                if "py-spy" in c.name()]  # fmt: skip
    return []


# --- 401 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/info"), ("POST", "/v1/windows"), ("POST", "/v1/windows/abc/stop"),
     ("GET", "/not-a-route")],
)  # fmt: skip
def test_every_endpoint_needs_the_token(agent: Agent, method: str, path: str) -> None:
    body = {"path": "direct", "step": 0} if path == "/v1/windows" else None
    assert call(agent.url, method, path, token=None, json=body)[0] == 401
    assert call(agent.url, method, path, token="wrong-token-0123456789", json=body)[0] == 401
    assert call(agent.url, method, path, token=TOKEN[:-1], json=body)[0] == 401  # a prefix
    assert call(agent.url, method, path, token=TOKEN + "x", json=body)[0] == 401
    basic = {"Authorization": f"Basic {TOKEN}"}
    assert call(agent.url, method, path, token=None, json=body, headers=basic)[0] == 401
    # Not in the query string either.
    assert call(agent.url, method, f"{path}?token={TOKEN}", token=None, json=body)[0] == 401
    assert agent.proc.poll() is None


def test_the_right_token_is_accepted(agent: Agent, app: App) -> None:
    status, info = call(agent.url, "GET", "/v1/info")
    assert status == 200
    assert info["pids"] == [app.pid]
    assert set(app.workers()) <= set(info["watched_pids"])
    assert info["max_record_s"] == MAX_RECORD_S
    assert info["max_concurrent"] == 2
    assert info["profiler"]["available"] is True


# --- 403 ---------------------------------------------------------------------------------------


def test_pids_outside_the_agents_tree_are_refused(agent: Agent, app: App) -> None:
    for foreign in (os.getpid(), 1, agent.proc.pid, 4_000_000):
        status, body = call(
            agent.url, "POST", "/v1/windows", json={"path": "direct", "step": 0, "pids": [foreign]}
        )
        assert status == 403, (foreign, body)
        assert "not one of the processes" in body["error"]
    # One foreign PID among its own ones is enough to refuse.
    mixed = [*app.workers(), os.getpid()]
    status, _ = call(agent.url, "POST", "/v1/windows", json={"path": "d", "step": 0, "pids": mixed})
    assert status == 403
    assert call(agent.url, "GET", "/v1/info")[1]["active"] == 0


def test_its_own_workers_are_accepted_including_restarted_ones(agent: Agent, app: App) -> None:
    victim = app.workers()[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        workers = app.workers()
        if len(workers) == 2 and victim not in workers:
            break
        time.sleep(0.2)
    replacement = (set(app.workers()) - {victim}).pop()
    status, body = call(
        agent.url, "POST", "/v1/windows", json={"path": "direct", "step": 1, "pids": [replacement]}
    )
    assert status == 201, body
    status, summary = call(agent.url, "POST", f"/v1/windows/{body['id']}/stop")
    assert status == 200
    assert summary["path"] == "direct"
    assert summary["step"] == 1
    assert {w["pid"] for w in summary["workers"]} == {replacement}


# --- 429 and the length cap --------------------------------------------------------------------


def test_concurrent_recordings_are_capped(agent: Agent) -> None:
    ids = []
    try:
        for step in range(2):
            status, body = call(agent.url, "POST", "/v1/windows", json={"path": "c", "step": step})
            assert status == 201, body
            ids.append(body["id"])
        status, body = call(agent.url, "POST", "/v1/windows", json={"path": "c", "step": 9})
        assert status == 429
        assert "at most 2" in body["error"]
        assert call(agent.url, "POST", f"/v1/windows/{ids.pop(0)}/stop")[0] == 200
        status, body = call(agent.url, "POST", "/v1/windows", json={"path": "c", "step": 3})
        assert status == 201
        ids.append(body["id"])
    finally:
        for rec_id in ids:
            call(agent.url, "POST", f"/v1/windows/{rec_id}/stop")
    assert call(agent.url, "GET", "/v1/info")[1]["active"] == 0


def test_recordings_stop_by_themselves_at_the_length_cap(agent: Agent) -> None:
    status, body = call(agent.url, "POST", "/v1/windows", json={"path": "long", "step": 0})
    assert status == 201
    assert _py_spy_children(agent.proc.pid)
    time.sleep(MAX_RECORD_S + 3)
    assert call(agent.url, "GET", "/v1/info")[1]["active"] == 0
    assert _py_spy_children(agent.proc.pid) == []  # stopped and reaped by the agent
    status, summary = call(agent.url, "POST", f"/v1/windows/{body['id']}/stop")
    assert status == 200
    assert summary["truncated"] is True
    assert summary["window_ms"] < (MAX_RECORD_S + 2.5) * 1000
    assert call(agent.url, "POST", "/v1/windows/0123456789abcdef/stop")[0] == 404


# --- 400: data only, nothing is ever run --------------------------------------------------------


def test_requests_that_could_carry_a_command_are_refused(agent: Agent, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile: list[dict[str, Any]] = [
        {"path": "direct", "step": 0, "command": f"touch {marker}"},
        {"path": "direct", "step": 0, "argv": ["touch", str(marker)]},
        {"path": "direct", "step": 0, "py_spy_args": ["--", "touch", str(marker)]},
        {"path": f"$(touch {marker})", "step": 0},
        {"path": "direct; touch x", "step": 0},
        {"path": "direct", "step": "0; touch x"},
        {"path": "direct", "step": 0, "pids": ["1; touch x"]},
        {"path": "direct", "step": True},
    ]
    for body in hostile:
        status, answer = call(agent.url, "POST", "/v1/windows", json=body)
        assert status == 400, (body, answer)
    assert call(agent.url, "POST", "/v1/windows", data=b"not json")[0] == 400
    assert call(agent.url, "POST", "/v1/windows", json=["a", "list"])[0] == 400
    assert call(agent.url, "POST", "/v1/windows", data=b"x" * 200_000)[0] == 413
    assert not marker.exists()
    assert call(agent.url, "GET", "/v1/info")[1]["active"] == 0


# --- the remote probe ---------------------------------------------------------------------------


def test_agent_server_probe_records_a_window_remotely(agent: Agent, app: App) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        probe = AgentServerProbe(agent.url, TOKEN)
        await probe.open()
        window = Window("direct", app.url, 0, None, time.monotonic_ns())
        await probe.start_window(window)
        # Within the agent's 3 s cap (module fixture), so the window is not truncated.
        await drive(app.url + "/predict", b"\x01" * 4096, 150, concurrency=2, time_limit_s=2)
        summary = await probe.stop_window(
            Window("direct", app.url, 0, None, window.start_ns, time.monotonic_ns())
        )
        return summary, await probe.close()

    summary, section = asyncio.run(scenario())
    assert section["available"] is True
    assert section["profiler"]["tool"] == "py-spy"
    assert section["profiler"]["rate_hz"] == 50  # the agent's --rate
    assert set(app.workers()) <= set(section["pids"])
    assert summary["available"] is True
    assert summary["path"] == "direct"
    assert summary["samples"] > 10
    assert summary["stage_share"]["inference"] > 0.3
    assert summary["truncated"] is False
    assert len(section["windows"]) == 1


def test_agent_server_probe_with_a_wrong_token_is_unavailable(agent: Agent) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        probe = AgentServerProbe(agent.url, "wrong-token-0123456789")
        await probe.open()
        window = Window("direct", "", 0, None, time.monotonic_ns())
        await probe.start_window(window)
        return await probe.stop_window(window), await probe.close()

    summary, section = asyncio.run(scenario())
    assert section["available"] is False
    assert "token refused" in section["reason"]
    assert summary["available"] is False


def test_agent_server_probe_unreachable_is_unavailable() -> None:
    async def scenario() -> dict[str, Any]:
        probe = AgentServerProbe("http://127.0.0.1:9", TOKEN)
        await probe.open()
        return await probe.close()

    section = asyncio.run(scenario())
    assert section["available"] is False
    assert "unreachable" in section["reason"]


# --- start-up refusals and lifecycle ------------------------------------------------------------


def test_binds_loopback_by_default(app: App) -> None:
    proc = _spawn_agent(["--pid", str(app.pid)])
    try:
        url = _read_url(proc)
        assert url == "http://127.0.0.1:9787"
        listening = [
            c.laddr for c in psutil.Process(proc.pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]  # fmt: skip
        assert listening
        assert all(addr.ip == "127.0.0.1" for addr in listening)
    finally:
        _stop(proc)


@pytest.mark.parametrize(
    ("args", "token", "message"),
    [
        (["--listen", "127.0.0.1:0"], TOKEN, "needs --pid"),
        (["--pid", "PID", "--listen", "127.0.0.1:0"], None, "a token is required"),
        (["--pid", "PID", "--listen", "127.0.0.1:0"], "short", "at least 16 characters"),
        (["--pid", "4000000", "--listen", "127.0.0.1:0"], TOKEN, "no such process"),
        (["--pid", "PID", "--listen", "nonsense"], TOKEN, "HOST:PORT"),
        (["--pid", "PID", "--max-record", "100000"], TOKEN, "--max-record"),
        (["--pid", "PID", "--token-file", "/nonexistent/token"], TOKEN, "--token-file"),
    ],
)
def test_refuses_to_start_without_a_safe_setup(
    app: App, args: list[str], token: str | None, message: str
) -> None:
    args = [str(app.pid) if a == "PID" else a for a in args]
    proc = _spawn_agent(args, token=token)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        _stop(proc)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert message in lines[0]
    assert "Traceback" not in err.decode()


def test_token_file_and_sigterm_reaps_py_spy(app: App, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    proc = _spawn_agent(
        ["--pid", str(app.pid), "--listen", "127.0.0.1:0", "--token-file", str(token_file)],
        token=None,
    )
    try:
        url = _read_url(proc)
        status, _ = call(url, "POST", "/v1/windows", json={"path": "direct", "step": 0})
        assert status == 201
        spies = _py_spy_children(proc.pid)
        assert spies
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        _stop(proc)
    assert proc.returncode == 0
    for pid in spies:
        assert not psutil.pid_exists(pid)
