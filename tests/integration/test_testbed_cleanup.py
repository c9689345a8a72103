"""Clean-up of the testbed: after up/down, an interrupted start and a failed start, nothing of ours
remains — no process (of any recorded process group), namespace, veth, cgroup or work directory."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pathprobe.errors import CannotRunError
from pathprobe.testbed import Testbed, bed, cgroup, netns
from pathprobe.testbed.procs import ProcRecord, is_alive

pytestmark = [pytest.mark.integration, pytest.mark.root]

PATHPROBE = [str(Path(sys.executable).parent / "pathprobe")]


def leftovers(state: dict[str, Any]) -> list[str]:
    """Everything ``state`` records that still exists."""
    found = []
    pgids = set()
    for raw in state.get("processes", []):
        record = ProcRecord.from_json(raw)
        pgids.add(record.pgid)
        if is_alive(record):
            found.append(f"process {record.name} {record.pid}")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) in pgids and fields[0] != "Z":  # a zombie holds nothing but a PID
                found.append(f"group member {entry.name}: {fields[0]}")
    ns = state.get("netns")
    if ns and ns["name"] in netns.list_namespaces():
        found.append(f"netns {ns['name']}")
    if ns and netns.link_exists(ns["outer_if"]):
        found.append(f"link {ns['outer_if']}")
    found += [f"cgroup {p}" for p in state.get("cgroups", []) if Path(p).exists()]
    if state.get("owns_workdir") and Path(state["workdir"]).exists():
        found.append(f"workdir {state['workdir']}")
    return found


def ours_by_tag(tag: str) -> list[str]:
    """Namespaces, links and cgroups named after ``tag``, whether recorded or not."""
    names = netns.leftovers()
    found = [n for n in names["netns"] + names["links"] if tag in n]
    return found + [str(p) for p in cgroup.leftovers() if tag in p.name]


def test_up_status_down_leave_nothing_behind(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    faults = ["--fault", "net_delay", "--fault", "oom", "--fault", "proxy_queue"]
    up = subprocess.run([*PATHPROBE, "testbed", "up", *faults, "--state-dir", str(state_dir)],
                        capture_output=True, text=True, timeout=180)  # fmt: skip
    state_file = state_dir / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    try:
        assert up.returncode == 0, up.stderr
        info = json.loads(up.stdout)
        assert set(info["urls"]) == {"direct", "proxy", "lb"}
        assert {f["name"] for f in info["faults"]} == {"net_delay", "oom", "proxy_queue"}
        # Up means up: the processes outlive the command, in their namespace and cgroups.
        assert len(leftovers(state)) >= 5
        status = subprocess.run([*PATHPROBE, "testbed", "status", "--state-dir", str(state_dir)],
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert status.returncode == 0
        assert all(p["alive"] for p in json.loads(status.stdout)["processes"])
        again = subprocess.run([*PATHPROBE, "testbed", "up", "--state-dir", str(state_dir)],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
        assert again.returncode == 2, "a second up on the same state dir is refused"
    finally:
        down = subprocess.run([*PATHPROBE, "testbed", "down", "--state-dir", str(state_dir)],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert "warning" not in down.stderr
    assert leftovers(state) == []
    assert ours_by_tag(state["tag"]) == []
    assert not state_file.exists()


def test_up_bare_with_grpc_times_nothing_and_serves_both_protocols(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    up = subprocess.run([*PATHPROBE, "testbed", "up", "--bare", "--grpc", "--stack", "aiohttp",
                         "--state-dir", str(state_dir)],
                        capture_output=True, text=True, timeout=180)  # fmt: skip
    state_file = state_dir / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    try:
        assert up.returncode == 0, up.stderr
        info = json.loads(up.stdout)
        assert info["instrumented"] is False
        assert set(info["grpc_urls"]) == {"direct", "proxy", "lb"}
        # Through every hop: an answer, and no header that times anything.
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), (120, 30, 200)).save(buf, "JPEG")
        jpeg = buf.getvalue()
        request = urllib.request.Request(info["urls"]["lb"] + "/predict/image", data=jpeg,
                                         headers={"Content-Type": "image/jpeg"})  # fmt: skip
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=30) as resp:
            assert resp.status == 200
            names = {name.lower() for name in resp.headers}
        assert "x-replica" in names
        assert not names & {"server-timing", "x-haproxy-timers", "x-upstream-header-time"}
    finally:
        down = subprocess.run([*PATHPROBE, "testbed", "down", "--state-dir", str(state_dir)],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert leftovers(state) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_start_leaves_nothing_behind(tmp_path: Path, sig: signal.Signals) -> None:
    state_dir = tmp_path / "state"
    state_file = state_dir / "state.json"
    proc = subprocess.Popen(
        [*PATHPROBE, "testbed", "up", "--fault", "net_delay", "--fault", "oom",
         "--state-dir", str(state_dir)],  # fmt: skip
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    state: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 60
        # Interrupt once both servers exist but before the proxies do: half-way.
        while time.monotonic() < deadline and proc.poll() is None:
            if state_file.exists():
                try:
                    state = json.loads(state_file.read_text())
                except json.JSONDecodeError:
                    continue
                if len(state["processes"]) >= 2:
                    break
            time.sleep(0.02)
        assert proc.poll() is None, "start finished before it could be interrupted"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert state["netns"]
    assert state["cgroups"]
    assert leftovers(state) == []
    assert ours_by_tag(state["tag"]) == []
    assert not state_file.exists()


def test_failed_start_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # haproxy refuses this configuration and exits: start fails after servers and nginx are up.
    monkeypatch.setattr(bed, "render_haproxy", lambda **kw: "this is not a haproxy config\n")
    testbed = Testbed(faults=["net_delay", "oom"], stack="aiohttp")
    with pytest.raises(CannotRunError, match="haproxy"):
        testbed.start()
    assert testbed.owned() == {}
    workdir = testbed.workdir
    assert not workdir.exists()
    assert ours_by_tag(testbed.tag) == []
    for pid in testbed.server_pids:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def test_a_second_ctrl_c_during_teardown_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C arrives again just as the teardown begins (an impatient user): the teardown still
    runs to its end, and nothing of the testbed remains."""
    real_teardown = bed.state.teardown
    hits: list[int] = []

    def impatient(*args: Any, **kwargs: Any) -> Any:
        hits.append(1)
        signal.raise_signal(signal.SIGINT)  # would raise KeyboardInterrupt right here
        return real_teardown(*args, **kwargs)

    monkeypatch.setattr(bed.state, "teardown", impatient)
    tb = Testbed(faults=["net_delay"], stack="aiohttp")
    tb.start()
    recorded = tb.owned()
    assert recorded["processes"]
    assert tb.stop() == []
    assert hits == [1]
    assert leftovers(recorded) == []
    assert ours_by_tag(tb.tag) == []
    # The default handler is back: Ctrl-C works again after the teardown.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
