"""Start-up stays cheap: the root command imports no heavy module (each command imports its own
when it runs), and the agent defaults the CLI copies match the modules that own them."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "matplotlib",
    "jinja2",
    "numpy",
    "aiohttp",
    "psutil",
    "pathprobe.session",
    "pathprobe.config",
    "pathprobe.agent.server",
    "pathprobe.reports.render",
)


def test_the_root_command_imports_no_heavy_module() -> None:
    code = (
        "import json, sys; import pathprobe.cli.main; "
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout) == []


def test_agent_defaults_match_their_owners() -> None:
    from pathprobe.agent import server
    from pathprobe.cli import agent as cli_agent
    from pathprobe.probes import remote

    assert cli_agent.TOKEN_ENV == remote.TOKEN_ENV
    assert cli_agent.DEFAULT_PORT == server.DEFAULT_PORT
    assert cli_agent.DEFAULT_MAX_RECORD_S == server.DEFAULT_MAX_RECORD_S
    assert cli_agent.DEFAULT_MAX_CONCURRENT == server.DEFAULT_MAX_CONCURRENT
    assert cli_agent.DEFAULT_RATE_HZ == server.DEFAULT_RATE_HZ
