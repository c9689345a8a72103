"""The server probe, remotely: :class:`AgentServerProbe` talks to a ``pathprobe agent``.

It keeps the :class:`~pathprobe.probes.base.Probe` contract, so ``diagnose --agent URL`` runs the
same session code as ``--server-pid``. Failures never raise: an unreachable agent, a refused
token or a failed window become ``available: false`` with the reason.

Times: the agent's ``t0_ns`` is on *its* host's monotonic clock; the summary's ``t0_ns`` is
replaced by this host's ``time.monotonic_ns()`` when the agent confirmed the start (off by the
one-way request latency), and the agent's value is kept as ``agent_t0_ns``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import aiohttp

from pathprobe.probes.base import JSONDict, Unavailable, Window

TOKEN_ENV = "PATHPROBE_AGENT_TOKEN"
#: Stopping waits for py-spy to write its file; allow it time.
REQUEST_TIMEOUT_S = 60.0


class AgentServerProbe:
    """:class:`~pathprobe.probes.base.Probe` ``server`` backed by a remote agent."""

    name = "server"

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV)
        self.unavailable: Unavailable | None = None
        self.info: JSONDict = {}
        self._session: aiohttp.ClientSession | None = None
        self._ids: dict[tuple[str, int], tuple[str, int]] = {}
        self._errors: dict[tuple[str, int], str] = {}
        self._windows: list[JSONDict] = []

    async def open(self) -> None:
        if not self.token:
            self.unavailable = Unavailable(
                "no token for the agent",
                f"set {TOKEN_ENV} (or agent_token in the config) to the agent's token",
            )
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            headers={"Authorization": f"Bearer {self.token}"},
            trust_env=False,  # never route the agent's token through a proxy from the environment
        )
        status, body = await self._call("GET", "/v1/info")
        if status != 200:
            self.unavailable = Unavailable(
                f"agent {self.url}: {_describe(status, body)}",
                "start `pathprobe agent --pid PID` beside the server and pass its URL and token",
            )
            return
        self.info = body
        if not body.get("available", False):
            self.unavailable = Unavailable(
                f"agent {self.url}: {body.get('reason')}",
                str(body.get("how_to_enable") or "see the agent's log"),
            )

    async def start_window(self, window: Window) -> None:
        key = (window.path, window.step)
        if self.unavailable is not None:
            return
        status, body = await self._call(
            "POST", "/v1/windows", {"path": window.path, "step": window.step}
        )
        if status != 201 or not isinstance(body.get("id"), str):
            self._errors[key] = f"agent refused to start: {_describe(status, body)}"
            return
        self._ids[key] = (body["id"], time.monotonic_ns())

    async def stop_window(self, window: Window) -> JSONDict:
        key = (window.path, window.step)
        started = self._ids.pop(key, None)
        if started is None:
            reason = self._errors.pop(key, None) or (
                self.unavailable.reason if self.unavailable else "window was not started"
            )
            summary: JSONDict = {
                "path": window.path, "step": window.step, "available": False, "reason": reason,
            }  # fmt: skip
        else:
            rec_id, local_t0_ns = started
            status, body = await self._call("POST", f"/v1/windows/{rec_id}/stop")
            if status != 200:
                summary = {
                    "path": window.path,
                    "step": window.step,
                    "available": False,
                    "reason": f"agent failed to stop the window: {_describe(status, body)}",
                }
            else:
                summary = dict(body, path=window.path, step=window.step)
                summary["agent_t0_ns"] = summary.get("t0_ns")
                summary["t0_ns"] = local_t0_ns
        self._windows.append(summary)
        return summary

    async def close(self) -> JSONDict:
        # Stop what is still recording so the agent's slots are freed.
        for rec_id, _ in list(self._ids.values()):
            await self._call("POST", f"/v1/windows/{rec_id}/stop")
        self._ids.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
        unavailable = self.unavailable
        return {
            "available": unavailable is None,
            "reason": None if unavailable is None else unavailable.reason,
            "how_to_enable": None if unavailable is None else unavailable.how_to_enable,
            "windows": list(self._windows),
            "profiler": self.info.get("profiler", {"tool": "py-spy", "version": None}),
            "cgroup": self.info.get("cgroup_state"),
            "pids": self.info.get("watched_pids", self.info.get("pids", [])),
            "agent": {"url": self.url, "version": self.info.get("version")},
        }

    async def _call(
        self, method: str, path: str, payload: JSONDict | None = None
    ) -> tuple[int, JSONDict]:
        """(status, JSON body); status 0 with ``{"error": …}`` when the agent is unreachable."""
        if self._session is None:
            return 0, {"error": "no session"}
        try:
            async with self._session.request(method, self.url + path, json=payload) as resp:
                try:
                    body: Any = await resp.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    body = {"error": (await resp.text())[:200]}
                if not isinstance(body, dict):
                    body = {"error": "agent answered something other than a JSON object"}
                return resp.status, body
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return 0, {"error": f"unreachable ({type(exc).__name__}: {exc})"[:300]}


def _describe(status: int, body: JSONDict) -> str:
    error = str(body.get("error", ""))[:200]
    if status == 0:
        return error
    if status == 401:
        return "token refused (401)"
    return f"HTTP {status} {error}".strip()
