"""build_config: every bad input is a UsageError with one line naming the problem (design.md §5)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pathprobe.config import (
    MAX_CONCURRENCY,
    MAX_DURATION_S,
    MAX_RATE_RPS,
    DiagnoseConfig,
    build_config,
    check_out_dir,
    looks_like_python,
)
from pathprobe.errors import EXIT_USAGE, UsageError
from pathprobe.options import load_toml, merge

URL = "http://127.0.0.1:9/"


def raw(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"path": {"direct": URL}, "out": "/tmp/pathprobe-test-out"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None or k not in ("path", "out")}


def usage_error(values: dict[str, Any]) -> str:
    with pytest.raises(UsageError) as info:
        build_config(values)
    message = info.value.message
    assert info.value.exit_code == EXIT_USAGE
    assert "\n" not in message, message
    assert message.strip() == message
    assert message
    return message


def test_a_minimal_config_builds() -> None:
    config = build_config(raw())
    assert isinstance(config, DiagnoseConfig)
    assert config.load.rates == (10.0,)
    assert config.abort_on_error_rate == 0.9  # on by default, at a high value


# (overrides, a fragment the one-line message must contain)
BAD_INPUTS: list[tuple[dict[str, Any], str]] = [
    ({"bogus": 1}, "unknown option: 'bogus'"),
    ({"path": {"direct": "ftp://127.0.0.1/"}}, "must start with http:// or https://"),
    ({"path": {"direct": "127.0.0.1:8080"}}, "must start with http:// or https://"),
    ({"path": {"direct": "http://[::1"}}, "malformed URL"),
    ({"path": {"direct": "http:///x"}}, "no host"),
    ({"path": {"direct": "http://127.0.0.1:99999/"}}, "malformed URL"),
    ({"path": {"direct": "http://127.0.0.1:0/"}}, "port 0"),
    ({"path": {"direct": "http://a b/"}}, "whitespace"),
    ({"path": {"direct": "http://a\x00b/"}}, "control characters"),
    ({"path": {"direct": ""}}, "URL is empty"),
    ({"path": {"direct": 5}}, "URL must be a string, got 5"),
    ({"path": {"edge": URL}}, "unknown path name 'edge'"),
    ({"path": {"Direct": URL}}, "unknown path name 'Direct'"),
    ({"path": {}}, "path must be a table"),
    ({"path": "direct"}, "path must be a table"),
    ({"path": ["direct"]}, "--path expects NAME=URL"),
    ({"path": [f"direct={URL}", f"direct={URL}"]}, "given twice"),
    ({"path": None}, "at least one --path"),
    ({"out": None}, "--out DIR is required"),
    ({"out": "  "}, "--out DIR is required"),
    ({"rate": 0}, "--rate must be a positive number"),
    ({"rate": -5}, "--rate must be a positive number"),
    ({"rate": math.nan}, "--rate must be a positive number"),
    ({"rate": "nan"}, "--rate must be a positive number"),
    ({"rate": math.inf}, "--rate must be a positive number"),
    ({"rate": 1e12}, "add --allow-high-load"),
    ({"rate": 10**400}, "--rate must be a number"),
    ({"rate": "fast"}, "--rate must be a number"),
    ({"rate": True}, "--rate must be a number"),
    ({"rates": "10,0,20"}, "--rates must be a positive number"),
    ({"rates": "10,,20"}, "--rates must be a number"),
    ({"rates": "10,1e12"}, "add --allow-high-load"),
    ({"rates": []}, "comma-separated list"),
    ({"rates": ",".join(["1"] * 51)}, "at most 50 steps"),
    ({"rate": 10, "concurrency": 5}, "give only one of --rate, --rates, --concurrency"),
    ({"concurrency": 0}, "--concurrency must be at least 1"),
    ({"concurrency": MAX_CONCURRENCY + 1}, "add --allow-high-load"),
    ({"concurrency": 1.5}, "--concurrency must be an integer"),
    ({"target_rps": 1e12}, "add --allow-high-load"),
    ({"duration": 0}, "--duration must be a positive number"),
    ({"duration": -1}, "--duration must be a positive number"),
    ({"duration": math.nan}, "--duration must be a positive number"),
    ({"duration": math.inf}, "--duration must be a positive number"),
    ({"duration": 1e12}, "add --allow-high-load"),
    ({"warmup": -1}, "--warmup must be zero or more"),
    ({"warmup": 1e9}, "add --allow-high-load"),
    ({"timeout": 0}, "--timeout must be a positive number"),
    ({"timeout": 1e9}, "add --allow-high-load"),
    ({"connect_timeout": -2}, "--connect-timeout must be a positive number"),
    (
        {"rates": ",".join(["10"] * 30), "duration": 600, "path": {"direct": URL, "lb": URL}},
        "the run would take 10.0 h",
    ),
    (
        {"rates": "20000,20000,20000", "duration": 600, "path": {"direct": URL, "lb": URL}},
        "the run would send 7.21e+07 requests, above 5e+07",
    ),
    (
        {"path": {"direct": "http://u:pw@127.0.0.1/"}, "header": ["Authorization: Basic x"]},
        "has credentials in its URL (user:password@) and --header Authorization is given too",
    ),
    ({"target_error_rate": 2}, "between 0 and 1"),
    ({"abort_on_error_rate": 1.5}, "between 0 and 1"),
    ({"abort_on_error_rate": -0.1}, "between 0 and 1"),
    ({"arrival": "burst"}, "--arrival must be uniform or poisson"),
    ({"encoding": "gzip"}, "--encoding must be raw, multipart or base64-json"),
    ({"engine": "turbo"}, "--engine must be auto, aiohttp or fast"),
    ({"workers": 0}, "--workers must be at least 1"),
    ({"workers": 65}, "above 64"),
    ({"max_records": 5}, "--max-records must be at least 1024"),
    ({"max_records": "many"}, "--max-records"),
    ({"seed": -1}, "--seed must be at least 0"),
    ({"seed": "x"}, "--seed must be an integer"),
    ({"method": "GE T"}, "is not an HTTP method"),
    ({"header": ["NoColon"]}, "--header #1 is not 'Name: value'"),
    ({"header": ["Bad Name: v"]}, "--header #1 is not 'Name: value'"),
    ({"header": ["X-A: 1\r\nX-B: 2"]}, "line break"),
    ({"header": 5}, "header must be a list"),
    ({"payload": "image:900-10"}, "need 8 <= MIN <= MAX <= 8192"),
    ({"payload": "image:1-100000"}, "need 8 <= MIN <= MAX <= 8192"),
    ({"payload": "image:abc"}, "must look like image:MIN-MAX"),
    ({"payload": "image:" + "9" * 5000 + "-10"}, "must look like image:MIN-MAX"),
    ({"payload": "video:1-2"}, "must look like image:MIN-MAX"),
    ({"payload": "image:10-20", "body_file": "/etc/hostname"}, "give only one of --body-file"),
    ({"body_file": "/nonexistent/body.bin"}, "--body-file /nonexistent/body.bin: no such file"),
    ({"body_file": "/tmp"}, "is a directory"),
    # Root passes every permission check; /proc/self/mem still fails to read at offset 0.
    ({"body_file": "/proc/self/mem"}, "cannot be read"),
    ({"cacert": "/nonexistent/ca.pem"}, "--cacert /nonexistent/ca.pem: no such file"),
    ({"cacert": "/etc/hostname"}, "--cacert: cannot load the TLS file(s)"),
    ({"cert": "/etc/hostname"}, "--cert/--key: cannot load the TLS file(s)"),
    ({"key": "/etc/hostname"}, "--key needs --cert"),
    ({"payload_dir": "/nonexistent"}, "is not a directory"),
    ({"server_pid": 0}, "is not a process id"),
    ({"server_pid": -3}, "is not a process id"),
    ({"server_pid": "abc"}, "--server-pid must be an integer"),
    ({"server_pid": 2**22 + 7}, "no such process"),
    ({"agent": "notaurl"}, "--agent: URL must start with http://"),
    ({"stage_rules": {"(": "inference"}}, "bad regex"),
    ({"stage_rules": {"x": "gpu"}}, "'gpu' is not a stage"),
    ({"stage_rules": ["x"]}, "stage_rules must be a table"),
    ({"replica_header": "bad header"}, "is not a header name"),
    ({"insecure": "yes"}, "must be true or false"),
    ({"dry_run": 1}, "must be true or false"),
]


@pytest.mark.parametrize(("overrides", "fragment"), BAD_INPUTS)
def test_bad_input_is_one_line_usage_error(overrides: dict[str, Any], fragment: str) -> None:
    message = usage_error(raw(**overrides))
    assert fragment in message


def test_empty_payload_dir(tmp_path: Path) -> None:
    assert "holds no files" in usage_error(raw(payload_dir=str(tmp_path)))


def test_ceilings_give_way_to_allow_high_load() -> None:
    config = build_config(
        raw(rate=MAX_RATE_RPS * 2, duration=MAX_DURATION_S * 2, timeout=900, allow_high_load=True)
    )
    assert config.load.rates == (MAX_RATE_RPS * 2,)
    assert config.load.duration_s == MAX_DURATION_S * 2
    assert config.allow_high_load


def test_server_pid_must_be_python() -> None:
    """Decision: a PID is "Python" when /proc/PID/exe or argv[0] is named like an interpreter, or
    a libpython is mapped (embedded interpreters). ``sleep`` is none of these."""
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert not looks_like_python(sleeper.pid)
        message = usage_error(raw(server_pid=[sleeper.pid]))
        assert f"--server-pid {sleeper.pid} is not a Python process (sleep)" in message
    finally:
        sleeper.kill()
        sleeper.wait()
    assert looks_like_python(os.getpid())
    config = build_config(raw(server_pid=[os.getpid()]))
    assert config.probes.server_pids == (os.getpid(),)


def test_server_pid_renamed_python_still_counts() -> None:
    """gunicorn renames its process title; the executable is still the interpreter."""
    code = "import sys, time; sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(30)"
    proc = subprocess.Popen(
        ["gunicorn: master [app]", "-c", code], executable=sys.executable, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        assert looks_like_python(proc.pid)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_header_error_does_not_echo_a_secret() -> None:
    secret = "sk-live-0123456789abcdef"
    message = usage_error(raw(header=[f"Authorization Bearer {secret}"]))
    assert secret not in message


# --- the TOML file -------------------------------------------------------------------------


def test_toml_unknown_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("rate = 10\nrate_limit = 5\n")
    with pytest.raises(UsageError, match="unknown key in .*: 'rate_limit'"):
        load_toml(cfg)


def test_toml_missing_and_invalid(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="config file not found"):
        load_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("rate = \n")
    with pytest.raises(UsageError, match="is not valid TOML"):
        load_toml(bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00rate")
    with pytest.raises(UsageError, match="is not valid TOML"):
        load_toml(binary)
    with pytest.raises(UsageError, match="config file not readable: .* \\(Is a directory\\)"):
        load_toml(tmp_path)


def test_toml_values_validated_like_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('path = {direct = "http://127.0.0.1:9/", edge = "http://x/"}\nrate = 5\n')
    merged = merge(load_toml(cfg), {"out": str(tmp_path / "o"), "rate": None})
    assert "unknown path name 'edge'" in usage_error(merged)


def test_flags_override_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('path = {direct = "http://127.0.0.1:9/"}\nrate = 5\nduration = 3\n')
    config = build_config(merge(load_toml(cfg), {"out": str(tmp_path), "rate": 7.0}))
    assert config.load.rates == (7.0,)
    assert config.load.duration_s == 3


# --- --out, checked before any load ---------------------------------------------------------


def test_out_under_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="cannot be created: File exists"):
        check_out_dir(blocker)
    with pytest.raises(UsageError, match="cannot be created: Not a directory"):
        check_out_dir(blocker / "sub")


def test_out_unwritable_even_for_root() -> None:
    # /proc refuses new entries whoever asks (tests run as root, so mode bits prove nothing).
    with pytest.raises(UsageError, match="--out /proc/pathprobe-x cannot be created"):
        check_out_dir(Path("/proc/pathprobe-x"))
    with pytest.raises(UsageError, match="--out /proc/self is not writable"):
        check_out_dir(Path("/proc/self"))


def test_out_is_created_and_left_clean(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    check_out_dir(out)
    assert out.is_dir()
    assert list(out.iterdir()) == []
