"""The option declaration (pathprobe.options): one entry per key, and the flags, the TOML keys,
the defaults and the checks all derive from it (design.md §5: add keys, never change them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer

from pathprobe.cli.main import app
from pathprobe.config import build_config
from pathprobe.errors import EXIT_USAGE, UsageError
from pathprobe.options import CLI_OPTIONS, KNOWN_KEYS, OPTION, OPTIONS, flag_values, read

BASE: dict[str, Any] = {"path": {"direct": "http://127.0.0.1:9/"}, "out": "/tmp/pathprobe-unit"}

# Every key scripts and config files may already use: the contract only grows.
CONTRACT_KEYS = {
    "path", "rate", "rates", "concurrency", "duration", "warmup", "arrival", "method", "header",
    "body_file", "payload", "payload_dir", "encoding", "server_pid", "agent", "agent_token",
    "target_p99", "target_rps", "target_error_rate", "seed", "out", "connections",
    "no_keepalive", "cacert", "cert", "key", "insecure", "timeout", "connect_timeout",
    "workers", "engine", "capture_iface", "no_capture", "no_profile", "replica_header",
    "abort_on_error_rate", "dry_run", "allow_high_load", "stage_rules", "max_records",
    "no_calibrate", "server_timing_header", "upstream_time_header", "lb_timers_header",
    "envoy_time_header", "grpc_input", "grpc_datatype", "ray",
}  # fmt: skip


def test_each_key_is_declared_once_and_every_contract_key_is_known() -> None:
    keys = [option.key for option in OPTIONS]
    assert len(keys) == len(set(keys))
    assert CONTRACT_KEYS <= KNOWN_KEYS
    assert KNOWN_KEYS == {option.key for option in OPTIONS if option.toml}
    assert "config" not in KNOWN_KEYS  # the file does not name another file


def test_every_cli_option_has_exactly_one_typer_parameter_and_vice_versa() -> None:
    command = typer.main.get_command(app).commands["diagnose"]
    params = {p.name: p for p in command.params if p.name != "help"}
    assert sorted(params) == sorted(option.key for option in CLI_OPTIONS)
    for option in CLI_OPTIONS:
        param = params[option.key]
        assert param.opts[0] == option.flag == "--" + option.key.replace("_", "-")
        assert param.help == option.help_text
        assert param.is_flag == (option.kind == "flag")
        assert param.multiple == (option.kind in ("strs", "ints"))
        assert not param.secondary_opts  # --no-capture has no --capture twin
    assert params["header"].opts == ["--header", "-H"]
    assert params["agent_token"].envvar == "PATHPROBE_AGENT_TOKEN"


def test_help_shows_the_declared_default() -> None:
    assert OPTION["duration"].help_text == "Measured seconds per step and path \\[default: 10]."
    assert OPTION["max_records"].help_text.endswith("\\[default: 65536].")
    assert OPTION["abort_on_error_rate"].help_text.endswith("\\[default: 0.9].")
    assert OPTION["arrival"].help_text == "uniform or poisson \\[default: uniform]."
    assert OPTION["method"].help_text.endswith("\\[default: GET, or POST with a body].")
    assert OPTION["target_p99"].help_text == "Target p99 latency, ms."


def test_unset_flags_are_not_given_and_paths_become_text() -> None:
    unset = {option.key: False if option.kind == "flag" else None for option in CLI_OPTIONS}
    assert set(flag_values(unset).values()) == {None}
    assert "config" not in flag_values(unset)
    given = {**unset, "out": Path("/tmp/o"), "header": [], "insecure": True, "rate": 0.0}
    flags = flag_values(given)
    assert flags["out"] == "/tmp/o"
    assert flags["header"] is None
    assert flags["insecure"] is True
    assert flags["rate"] == 0.0  # a zero is given (and refused by build_config), not dropped


def test_defaults_reach_the_config() -> None:
    cfg = build_config(BASE)
    assert cfg.load.duration_s == OPTION["duration"].default
    assert cfg.load.warmup_s == OPTION["warmup"].default
    assert cfg.load.connections == OPTION["connections"].default
    assert cfg.load.payload.grpc_datatype == OPTION["grpc_datatype"].default
    assert cfg.max_records == OPTION["max_records"].default
    assert cfg.probes.envoy_time_header == OPTION["envoy_time_header"].default
    assert read({}, "header") == ()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("duration", -1, "--duration must be a positive number, got -1"),
        ("duration", "x", "--duration must be a number, got 'x'"),
        ("warmup", -0.5, "--warmup must be zero or more, got -0.5"),
        ("target_error_rate", 2, "--target-error-rate must be a fraction between 0 and 1, got 2"),
        ("seed", -1, "--seed must be at least 0, got -1"),
        ("seed", True, "--seed must be an integer, got True"),
        ("workers", 65, "--workers 65 is above 64"),
        ("max_records", 10, "--max-records must be at least 1024, got 10"),
        ("arrival", "burst", "--arrival must be uniform or poisson, got 'burst'"),
        ("grpc_datatype", "FP32", "grpc_datatype must be BYTES or UINT8, got 'FP32'"),
        ("no_capture", "yes", "no_capture must be true or false, got 'yes'"),
        ("server_timing_header", "a b", "--server-timing-header: 'a b' is not a header name"),
        ("cacert", "/nonexistent/ca.pem", "--cacert /nonexistent/ca.pem: no such file"),
        ("payload", "image:4-16", "--payload image:4-16: need 8 <= MIN <= MAX <= 8192 pixels"),
        ("stage_rules", {"x": "gpu"}, "stage_rules: 'gpu' is not a stage"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_option(key: str, value: Any, message: str) -> None:
    with pytest.raises(UsageError) as info:
        build_config({**BASE, key: value})
    assert info.value.message == message
    assert info.value.exit_code == EXIT_USAGE


@pytest.mark.parametrize("key", ["arrival", "engine", "encoding", "grpc_input", "grpc_datatype"])
def test_none_means_not_given(key: str) -> None:
    assert build_config({**BASE, key: None}) == build_config(BASE)
