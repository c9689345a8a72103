"""The doctor's pure parts: its line format and exit code, which checks a diagnosis runs, and what
each check says when a tool, a privilege or a module is missing (faked, never uninstalled)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pathprobe import doctor
from pathprobe.cli.doctor import parse_target
from pathprobe.cli.testbed import check_testbed_ready
from pathprobe.config import build_config
from pathprobe.doctor import Check, exit_code, format_line
from pathprobe.errors import UsageError


def test_format_line_ok_and_not() -> None:
    ok = format_line(Check("capture", True, "tcpdump can capture on lo"))
    assert ok == "capture    ok  tcpdump can capture on lo"
    bad = format_line(Check("profiler", False, "py-spy not found", "pip install py-spy"))
    assert bad == "profiler   NO  py-spy not found — to enable: pip install py-spy"
    optional = format_line(Check("testbed", False, "missing nginx", "apt-get", required=False))
    assert optional.startswith("testbed    no  missing nginx")


def test_format_line_is_one_line() -> None:
    line = format_line(Check("cgroup", False, "a\nb", "c\nd"))
    assert "\n" not in line


def test_exit_code_counts_required_checks_only() -> None:
    ok = Check("capture", True, "")
    assert exit_code([ok, Check("testbed", False, "", required=False)]) == 0
    assert exit_code([ok, Check("profiler", False, "")]) == 1


def test_capture_ifaces() -> None:
    assert doctor.capture_ifaces([], None) == {"": "lo"}
    assert doctor.capture_ifaces(["http://127.0.0.1:8080/x"], None) == {
        "http://127.0.0.1:8080/x": "lo"
    }
    assert doctor.capture_ifaces(["http://[::1]:80/"], "eth9") == {"http://[::1]:80/": "eth9"}
    assert doctor.capture_ifaces([], "eth9") == {"": "eth9"}


def test_capture_without_tcpdump(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "find_tcpdump", lambda: None)
    check = doctor.check_capture([], trial=False)
    assert not check.ok
    assert "apt-get install tcpdump" in (check.how_to_enable or "")


def test_capture_without_privilege(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "find_tcpdump", lambda: "/usr/bin/tcpdump")
    monkeypatch.setattr(doctor, "has_capture_privilege", lambda: False)
    check = doctor.check_capture([], trial=False)
    assert not check.ok
    assert "CAP_NET_RAW" in check.detail
    assert "setcap" in (check.how_to_enable or "")


def test_capture_on_a_missing_interface(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "find_tcpdump", lambda: "/usr/bin/tcpdump")
    monkeypatch.setattr(doctor, "has_capture_privilege", lambda: True)
    check = doctor.check_capture(["http://127.0.0.1/"], "nosuch0", trial=False)
    assert not check.ok
    assert check.detail == "interface nosuch0 does not exist"


def test_capture_with_an_unresolvable_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "find_tcpdump", lambda: "/usr/bin/tcpdump")
    monkeypatch.setattr(doctor, "has_capture_privilege", lambda: True)
    monkeypatch.setattr(doctor, "resolve_host", lambda host, port: [])
    check = doctor.check_capture(["http://nowhere.invalid/"], trial=False)
    assert not check.ok
    assert "no route found" in check.detail


def test_profiler_without_py_spy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "find_py_spy", lambda: None)
    check = doctor.check_profiler()
    assert not check.ok
    assert "pip install py-spy" in (check.how_to_enable or "")


def test_profiler_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathprobe.probes.base import Unavailable

    monkeypatch.setattr(doctor, "find_py_spy", lambda: "/x/py-spy")
    monkeypatch.setattr(
        doctor, "ptrace_refusal", lambda pid: Unavailable("ptrace refused", "grant SYS_PTRACE")
    )
    check = doctor.check_profiler([123], trial=False)
    assert (check.ok, check.detail, check.how_to_enable) == (
        False,
        "ptrace refused",
        "grant SYS_PTRACE",
    )


def test_cgroup_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor.cgroups, "cgroup_of", lambda pid: None)
    check = doctor.check_cgroup()
    assert not check.ok
    assert check.how_to_enable == doctor.cgroups.CGROUP_HOW_TO


def test_cgroup_memory_files_unreadable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    paths = doctor.cgroups.CgroupPaths(2, tmp_path, tmp_path, "/x")
    (tmp_path / "memory.current").write_text("1\n")
    monkeypatch.setattr(doctor.cgroups, "cgroup_of", lambda pid: paths)
    check = doctor.check_cgroup()
    assert not check.ok
    assert "memory.max, memory.events" in check.detail
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory.events").write_text("oom 0\n")
    assert doctor.check_cgroup().ok


def test_testbed_missing_tool_and_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None if name == "haproxy" else name)
    check = doctor.check_testbed("fastapi")
    assert (check.ok, check.required) == (False, False)
    assert "haproxy (Debian: haproxy)" in check.detail
    monkeypatch.setattr(doctor.shutil, "which", lambda name: name)
    monkeypatch.setattr(doctor, "missing_modules", lambda names: ["gunicorn"])
    check = doctor.check_testbed("fastapi")
    assert check.detail == "missing Python modules gunicorn"
    assert "pathprobe[testbed]" in (check.how_to_enable or "")


def test_missing_modules_looks_up_without_importing() -> None:
    assert doctor.missing_modules(["json", "no_such_module_xyz", "no.such.dotted"]) == [
        "no_such_module_xyz",
        "no.such.dotted",
    ]


def test_net_delay_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "missing_modules", lambda names: list(names))
    check = doctor.check_net_delay()
    assert not check.ok
    assert "netfilterqueue" in check.detail
    assert "libnetfilter-queue-dev" in (check.how_to_enable or "")
    assert "pathprobe[netdelay]" in (check.how_to_enable or "")


def test_testbed_ready_is_one_usage_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "check_testbed", lambda stack: Check("testbed", True, ""))
    monkeypatch.setattr(doctor, "missing_modules", lambda names: list(names))
    check_testbed_ready(["heavy_preprocessing"], "fastapi")  # no net_delay: not asked
    with pytest.raises(UsageError) as err:
        check_testbed_ready(["net_delay"], "fastapi")
    assert "netfilterqueue" in err.value.message
    assert "\n" not in err.value.message


def _config(**raw: object) -> object:
    return build_config({"path": {"direct": "http://127.0.0.1:9/"}, "out": "/tmp/x", **raw})


def test_diagnose_checks_follow_the_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "check_capture", lambda *a, **k: Check("capture", True, ""))
    names = [c.name for c in doctor.diagnose_checks(_config())]  # type: ignore[arg-type]
    assert names == ["capture"]  # no --server-pid: no profiler or cgroup to check
    assert doctor.diagnose_checks(_config(no_capture=True)) == []  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("http://127.0.0.1:8080/predict", "http://127.0.0.1:8080/predict"),
        ("direct=http://127.0.0.1/", "http://127.0.0.1/"),
        ("http://h/?a=b", "http://h/?a=b"),
    ],
)
def test_parse_target(value: str, url: str) -> None:
    assert parse_target(value) == url


@pytest.mark.parametrize("value", ["ftp://x", "direct=", "http://[::1", "nohost"])
def test_parse_target_rejects(value: str) -> None:
    with pytest.raises(UsageError):
        parse_target(value)
