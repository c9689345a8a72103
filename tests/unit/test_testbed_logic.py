"""Pure parts of the testbed: fault names and magnitudes, config rendering, server settings,
the demo's diagnosis config, and the sample TOML configs in examples/."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from pathprobe.config import build_config
from pathprobe.errors import UsageError
from pathprobe.options import load_toml
from pathprobe.testbed import DEFAULT_MAGNITUDES, FAULTS, STACKS
from pathprobe.testbed.faults import relevant_magnitudes, resolve_magnitudes, validate_faults
from pathprobe.testbed.render import render_haproxy, render_nginx
from pathprobe.testbed.settings import ENV_VAR, ServerSettings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_fault_names_map_to_design_stages() -> None:
    assert set(FAULTS.values()) == {
        "preprocessing", "inference", "oom", "server_concurrency", "proxy",
        "load_balancer", "network", "client",
    }  # fmt: skip
    assert validate_faults(["oom", "net_delay", "oom"]) == ("oom", "net_delay")
    with pytest.raises(UsageError, match="unknown fault 'slow'"):
        validate_faults(["slow"])


def test_the_two_stacks_differ_in_magnitudes() -> None:
    assert set(STACKS) == set(DEFAULT_MAGNITUDES)
    fast, aio = DEFAULT_MAGNITUDES["fastapi"], DEFAULT_MAGNITUDES["aiohttp"]
    for key in ("heavy_preprocessing_ms", "slow_inference_ms", "accelerator_ms", "workers"):
        assert fast[key] != aio[key], key


def test_magnitude_overrides_are_validated() -> None:
    merged = resolve_magnitudes("aiohttp", {"net_delay_ms": 50})
    assert merged["net_delay_ms"] == 50.0
    assert merged["slow_inference_ms"] == DEFAULT_MAGNITUDES["aiohttp"]["slow_inference_ms"]
    for bad, match in [
        ({"net_delay": 5}, "unknown testbed magnitude"),
        ({"net_delay_ms": "5"}, "must be a number"),
        ({"net_delay_ms": True}, "must be a number"),
        ({"net_delay_ms": -1}, "zero or more"),
        ({"starved_client_duty": 1.0}, "between 0 and 1"),
        ({"lb_maxconn": 0}, "at least 1"),
    ]:
        with pytest.raises(UsageError, match=match):
            resolve_magnitudes("fastapi", bad)
    with pytest.raises(UsageError, match="unknown stack"):
        resolve_magnitudes("flask", None)


def test_relevant_magnitudes_name_only_the_injected_faults() -> None:
    mags = resolve_magnitudes("fastapi", None)
    assert set(relevant_magnitudes([], mags)) == {"accelerator_ms", "workers"}
    picked = relevant_magnitudes(["net_delay", "single_concurrency"], mags)
    assert picked["net_delay_ms"] == mags["net_delay_ms"]
    assert picked["workers"] == 1.0
    assert "net_loss_pct" not in picked


def test_nginx_config_queues_with_limit_req_only_when_asked(tmp_path: Path) -> None:
    plain = render_nginx(replica="r1", workdir=tmp_path, listen_host="127.0.0.1",
                         listen_port=8080, server_port=8000)  # fmt: skip
    assert "limit_req" not in plain
    assert "server 127.0.0.1:8000;" in plain
    assert "listen 127.0.0.1:8080" in plain
    assert "client_max_body_size 64m;" in plain
    assert "add_header X-Upstream-Header-Time $upstream_header_time always;" in plain
    limited = render_nginx(replica="r2", workdir=tmp_path, listen_host="0.0.0.0", listen_port=1,
                           server_port=2, limit_rate_rps=15, limit_burst=500)  # fmt: skip
    assert "rate=15r/s" in limited
    assert "limit_req zone=pptb_r2 burst=500;" in limited
    assert "nodelay" not in limited, "excess requests must wait, not be rejected"
    # No burst: nginx refuses "burst=0", so the parameter is left out (everything beyond the
    # rate is turned away with 503).
    rejecting = render_nginx(replica="r1", workdir=tmp_path, listen_host="127.0.0.1",
                             listen_port=1, server_port=2, limit_rate_rps=15,
                             limit_burst=0)  # fmt: skip
    assert "limit_req zone=pptb_r1;" in rejecting
    assert "burst" not in rejecting
    assert "limit_req_status 503;" in rejecting


def test_haproxy_config_sets_maxconn_and_timers_header(tmp_path: Path) -> None:
    cfg = render_haproxy(workdir=tmp_path, listen_host="127.0.0.1", listen_port=9000,
                         backends=[("r1", 8080), ("r2", 8081)], maxconn=1)  # fmt: skip
    assert "server r1 127.0.0.1:8080 maxconn 1" in cfg
    assert "server r2 127.0.0.1:8081 maxconn 1" in cfg
    assert 'x-haproxy-timers "Tw=%Tw Tc=%Tc Tr=%Tr"' in cfg
    assert "maxconn 1" not in render_haproxy(
        workdir=tmp_path, listen_host="127.0.0.1", listen_port=9000, backends=[("r1", 1)]
    )


def test_server_settings_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ServerSettings("r2", ("oom", "single_concurrency"), {"workers": 4.0}, "x-rep")
    monkeypatch.setenv(ENV_VAR, settings.to_env())
    back = ServerSettings.from_env()
    assert back == settings
    assert back.workers == 1, "single_concurrency forces one worker"
    monkeypatch.setenv(ENV_VAR, "{}")
    assert ServerSettings.from_env().replica, "falls back to the host name"


@pytest.mark.parametrize("instrumented", [True, False])
def test_demo_config_is_a_valid_diagnosis(tmp_path: Path, instrumented: bool) -> None:
    from pathprobe.cli.demo import demo_raw_config

    ports = {"direct": 1001, "proxy": 1002, "lb": 1003}
    bed = SimpleNamespace(
        urls={name: f"http://127.0.0.1:{port}" for name, port in ports.items()},
        server_pids=[os.getpid()],
        replica_header="x-replica",
        lb_timers_header="x-haproxy-timers",
        instrumented=instrumented,
    )
    raw = demo_raw_config(bed, tmp_path / "out")  # type: ignore[arg-type]
    # A bare testbed's haproxy sends no timers header: the demo does not look for one.
    assert ("lb_timers_header" in raw) is instrumented
    cfg = build_config(raw)
    assert [p.name for p in cfg.paths] == ["direct", "proxy", "lb"]
    assert cfg.paths[-1].url == "http://127.0.0.1:1003/predict/image"
    assert cfg.load.payload.kind == "image"
    assert cfg.probes.server_pids == (os.getpid(),)
    steps = len(cfg.paths) * len(cfg.load.steps)
    assert steps * (cfg.load.warmup_s + cfg.load.duration_s) < 60, "the demo stays short"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_example_configs_parse(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(EXAMPLES)  # body_file paths are relative to where pathprobe runs
    cfg = build_config(load_toml(path))
    assert cfg.paths
    assert cfg.targets.any


def test_there_are_example_configs() -> None:
    assert len(list(EXAMPLES.glob("*.toml"))) >= 3


@pytest.mark.parametrize("version", [1, 2])
def test_memory_cgroup_files_v1_and_v2(tmp_path: Path, version: int) -> None:
    from pathprobe.testbed.cgroup import MemoryCgroup

    if version == 1:
        (tmp_path / "memory.usage_in_bytes").write_text("123456\n")
        (tmp_path / "memory.oom_control").write_text(
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"
        )
        (tmp_path / "memory.failcnt").write_text("17\n")
    else:
        (tmp_path / "memory.current").write_text("123456\n")
        (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 4\noom_kill 3\n")
    (tmp_path / "cgroup.procs").write_text("10\n11\n")
    cg = MemoryCgroup(tmp_path, version)
    assert cg.usage_bytes() == 123456
    assert cg.oom_kills() == 3
    assert cg.failcnt() == (17 if version == 1 else None)
    assert cg.pids() == [10, 11]
    cg.set_limit_bytes(1 << 20)
    limit_file = "memory.limit_in_bytes" if version == 1 else "memory.max"
    assert (tmp_path / limit_file).read_text() == str(1 << 20)
    swap_file = "memory.swappiness" if version == 1 else "memory.swap.max"
    assert (tmp_path / swap_file).read_text() == "0", "no swap: the limit is a hard wall"


def test_listening_ports_come_from_below_the_ephemeral_range_and_are_never_reused() -> None:
    from pathprobe.testbed.procs import LISTEN_PORTS_LOW, ephemeral_range, free_port

    low, _ = ephemeral_range()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    if low - LISTEN_PORTS_LOW >= 1000:
        # An outgoing connection's source port can never take them between pick and bind.
        assert all(LISTEN_PORTS_LOW <= port < low for port in ports)
