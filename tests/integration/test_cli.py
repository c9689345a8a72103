"""The command line: bad input is one line and exit 2 with nothing sent; a real run through the
console script; secrets never reach an output (issue 8 points 1 and 4, issue 2's CLI contract)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pathprobe.cli.main import app, main
from pathprobe.errors import UsageError
from tests.conftest import SERVERS_SCRIPT, ServerProc, free_env, start_process

pytestmark = pytest.mark.integration

PATHPROBE = str(Path(sys.executable).parent / "pathprobe")


@pytest.fixture(scope="module")
def counting_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """One server for the whole module that counts every connection it is sent."""
    d = tmp_path_factory.mktemp("counting")
    ready, stats = d / "port", d / "stats"
    proc = start_process(
        [sys.executable, str(SERVERS_SCRIPT), "ok", "--ready-file", str(ready),
         "--stats-file", str(stats)],
        ready,
    )  # fmt: skip
    server = ServerProc(proc, int(ready.read_text()), stats)
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def sleeper() -> Iterator[int]:
    """The PID of a process that is not Python."""
    proc = subprocess.Popen(["sleep", "300"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def files(tmp: Path) -> dict[str, str]:
    """Fixture files for the bad-input table."""
    (tmp / "unknown.toml").write_text("rate = 10\nrate_limit = 5\n")
    (tmp / "broken.toml").write_text("rate = \n")
    (tmp / "empty").mkdir(exist_ok=True)
    (tmp / "a_file").write_text("x")
    return {"tmp": str(tmp)}


# (argv after "diagnose", with {url} and {tmp}; a fragment of the one stderr line)
BAD_CLI: list[tuple[list[str], str]] = [
    (["--bogus"], "No such option: --bogus"),
    (["--rate", "abc"], "Invalid value for '--rate'"),
    (["--rate"], "Option '--rate' requires an argument"),
    (["--server-pid", "abc"], "Invalid value for '--server-pid'"),
    (["--config", "{tmp}/unknown.toml"], "unknown key in {tmp}/unknown.toml: 'rate_limit'"),
    (["--config", "{tmp}/broken.toml"], "is not valid TOML"),
    (["--config", "{tmp}/missing.toml"], "config file not found"),
    (["--config", "{tmp}"], "config file not readable"),
    (["--path", "direct=ftp://127.0.0.1/"], "URL must start with http:// or https://"),
    (["--path", "direct=127.0.0.1:80"], "URL must start with http:// or https://"),
    (["--path", "direct=http://[::1"], "malformed URL"),
    (["--path", "direct=http://127.0.0.1:99999/"], "malformed URL"),
    (["--path", "edge={url}"], "unknown path name 'edge'"),
    (["--path", "direct"], "--path expects NAME=URL"),
    (["--rate", "0"], "--rate must be a positive number"),
    (["--rate", "-5"], "--rate must be a positive number"),
    (["--rate", "nan"], "--rate must be a positive number"),
    (["--rate", "inf"], "--rate must be a positive number"),
    (["--rate", "1e12"], "add --allow-high-load if you mean it"),
    (["--rates", "10,0,20"], "--rates must be a positive number"),
    (["--rates", "10,1e12"], "add --allow-high-load if you mean it"),
    (["--duration", "0"], "--duration must be a positive number"),
    (["--duration", "-1"], "--duration must be a positive number"),
    (["--duration", "nan"], "--duration must be a positive number"),
    (["--duration", "1e12"], "add --allow-high-load if you mean it"),
    (["--concurrency", "0"], "--concurrency must be at least 1"),
    (["--concurrency", "1000000"], "add --allow-high-load if you mean it"),
    (["--rate", "10", "--concurrency", "2"], "give only one of --rate, --rates, --concurrency"),
    (["--body-file", "{tmp}/nope.bin"], "no such file"),
    (["--body-file", "{tmp}/empty"], "is a directory"),
    (["--body-file", "/proc/self/mem"], "cannot be read"),
    (["--cacert", "{tmp}/nope.pem"], "--cacert {tmp}/nope.pem: no such file"),
    (["--cacert", "{tmp}/a_file"], "--cacert: cannot load the TLS file(s)"),
    (["--payload-dir", "{tmp}/nope"], "is not a directory"),
    (["--payload-dir", "{tmp}/empty"], "holds no files"),
    (["--payload", "image:900-10"], "need 8 <= MIN <= MAX <= 8192"),
    (["--payload", "image:abc"], "must look like image:MIN-MAX"),
    (["--server-pid", "4194000"], "no such process"),
    (["--server-pid", "{sleeper}"], "--server-pid {sleeper} is not a Python process (sleep)"),
    (["--out", "{tmp}/a_file"], "cannot be created: File exists"),
    (["--out", "{tmp}/a_file/sub"], "cannot be created: Not a directory"),
    (["--out", "/proc/pathprobe-x"], "--out /proc/pathprobe-x cannot be created"),
    (["--header", "NoColon"], "--header #1 is not 'Name: value'"),
    (["--method", "GE T"], "is not an HTTP method"),
    (["--timeout", "0"], "--timeout must be a positive number"),
    (["--target-error-rate", "2"], "between 0 and 1"),
    (["--abort-on-error-rate", "1.5"], "between 0 and 1"),
    (["--arrival", "burst"], "--arrival must be uniform or poisson"),
    (["--engine", "turbo"], "--engine must be auto, aiohttp or fast"),
    (["--agent", "notaurl"], "--agent: URL must start with http://"),
]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The console script's ``main()`` in this process: (exit code, stdout, stderr)."""
    saved = sys.argv
    sys.argv = ["pathprobe", *argv]
    try:
        with pytest.raises(SystemExit) as info:
            main()
    finally:
        sys.argv = saved
    captured = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 0), captured.out, captured.err


@pytest.mark.parametrize(("args", "fragment"), BAD_CLI)
def test_bad_input_one_line_exit_2_nothing_sent(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    counting_server: ServerProc,
    sleeper: int,
    args: list[str],
    fragment: str,
) -> None:
    subst = {**files(tmp_path), "url": counting_server.url, "sleeper": str(sleeper)}
    args = [a.format(**subst) for a in args]
    given = {a for a in args if a.startswith("--")}
    base = []
    if "--path" not in given:
        base += ["--path", f"direct={counting_server.url}"]
    if "--out" not in given:
        base += ["--out", str(tmp_path / "out")]
    before = counting_server.stats()["connections"]
    code, _out, err = run_main(["diagnose", *base, *args], capsys)
    assert code == 2, err
    assert err.count("\n") == 1, err
    assert err.startswith("pathprobe: error: ")
    assert fragment.format(**subst) in err
    assert "Traceback" not in err
    assert counting_server.stats()["connections"] == before, "bad input sent load"


def test_usage_error_names_one_problem_and_help_exits_cleanly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_main(["diagnose", "--help"], capsys)
    assert code == 0
    assert "--abort-on-error-rate" in out
    assert "--dry-run" in out
    assert "--max-records" in out
    # Defaults are shown (rich would take an unescaped "[default: 10]" for markup and drop it).
    flat = " ".join(out.replace("│", " ").split())
    for shown in ("[default: 10]", "[default: uniform]", "[default: auto]", "[default: 65536]"):
        assert shown in flat, shown
    assert err == ""
    code, out, err = run_main([], capsys)
    assert code == 2
    assert "diagnose" in out  # the help, and no empty error line
    assert "error" not in err


def test_cli_runner_dry_run_and_usage_error(tmp_path: Path, counting_server: ServerProc) -> None:
    runner = CliRunner()
    before = counting_server.stats()["connections"]
    result = runner.invoke(
        app,
        ["diagnose", "--path", f"direct={counting_server.url}", "--rates", "10,20",
         "--duration", "3", "--out", str(tmp_path / "o"), "--dry-run"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"direct={counting_server.url}" in result.output
    assert "dry run: nothing sent" in result.output
    assert counting_server.stats()["connections"] == before
    bad = runner.invoke(
        app, ["diagnose", "--path", f"direct={counting_server.url}", "--rate", "-1", "--out", "o"]
    )
    assert isinstance(bad.exception, UsageError)
    assert "--rate must be a positive number" in bad.exception.message


def test_real_subprocess_run(tmp_path: Path, spawn_server: Callable[..., ServerProc]) -> None:
    """The installed console script, end to end: exit 0 with no targets, exit 1 when missed."""
    server = spawn_server("ok", "--delay-ms", "30")
    out = tmp_path / "out"
    argv = [
        PATHPROBE, "diagnose", "--path", f"direct={server.url}", "--rate", "20",
        "--duration", "2", "--warmup", "0", "--no-capture", "--no-profile", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, timeout=120, env=free_env(), check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert not done.stderr.startswith(b"\n")  # no progress bar residue in a pipe
    assert f"json:   {out / 'report.json'}" in done.stdout.decode()
    report = json.loads((out / "report.json").read_text())
    assert report["interrupted"] is False
    assert report["paths"]["direct"]["steps"][0]["status_codes"] == {"200": 40}
    assert b"Traceback" not in done.stderr
    # A 1 ms p99 target against a 30 ms server is missed: exit 1, report still written.
    missed = subprocess.run(
        [*argv, "--target-p99", "1", "--out", str(tmp_path / "missed")],
        capture_output=True, timeout=120, env=free_env(), check=False,
    )  # fmt: skip
    assert missed.returncode == 1, missed.stderr.decode()
    assert (
        json.loads((tmp_path / "missed" / "report.json").read_text())["verdict"]["targets_met"]
        is False
    )


# --- secrets ---------------------------------------------------------------------------------

SECRETS = {
    "authorization": "AUTHZ-5ecret-a1",
    "cookie": "COOKIE-5ecret-b2",
    "proxy": "PROXYAUTH-5ecret-c3",
    "apikey": "APIKEY-5ecret-d4",
    "password": "URLPASS-5ecret-e5",
    "query": "QUERYTOKEN-5ecret-f6",
    "agent": "AGENTTOKEN-5ecret-g7",
    "toml": "TOMLAUTH-5ecret-h8",
}


def leaks(text: str) -> list[str]:
    return [name for name, value in SECRETS.items() if value in text]


@pytest.mark.parametrize(
    ("where", "engine"),
    # The fast engine refuses URL credentials (a usage error), so that pair is not run.
    [("headers", "aiohttp"), ("headers", "fast"), ("url-password", "aiohttp")],
)
def test_secrets_never_reach_any_output(
    tmp_path: Path, spawn_server: Callable[..., ServerProc], where: str, engine: str
) -> None:
    """A real diagnose (all probes on) given every kind of secret; then every output is grepped.

    A URL password and an Authorization header cannot go together (a usage error), hence two
    runs: every secret header, or a password in the URL; a query token and the agent token in
    both."""
    server = spawn_server("ok")
    config = tmp_path / "c.toml"
    config.write_text(f'header = ["X-Auth-Token: {SECRETS["toml"]}"]\n')
    out = tmp_path / "out"
    userinfo = f"svc:{SECRETS['password']}@" if where == "url-password" else ""
    url = (
        f"http://{userinfo}127.0.0.1:{server.port}/predict?access_token={SECRETS['query']}&model=a"
    )
    headers = [
        "--header", f"Authorization: Bearer {SECRETS['authorization']}",
        "-H", f"Cookie: session={SECRETS['cookie']}",
        "--header", f"Proxy-Authorization: Basic {SECRETS['proxy']}",
        f"--header=X-Api-Key: {SECRETS['apikey']}",
        "--config", str(config),
    ]  # fmt: skip
    argv = [
        PATHPROBE, "diagnose", "--path", f"direct={url}", "--rate", "10", "--duration", "1",
        "--warmup", "0", "--server-pid", str(server.proc.pid), "--engine", engine,
        *(headers if where == "headers" else []), "--out", str(out),
    ]  # fmt: skip
    env = {**free_env(), "PATHPROBE_AGENT_TOKEN": SECRETS["agent"]}
    done = subprocess.run(argv, capture_output=True, timeout=180, env=env, check=False)
    assert done.returncode == 0, done.stderr.decode()
    # The server did get them (the run was real) ...
    assert server.stats()["requests"] >= 10
    steps = json.loads((out / "report.json").read_text())["paths"]["direct"]["steps"]
    assert steps[0]["status_codes"] == {"200": 10}
    # ... and no output holds any.
    outputs = {
        "stdout": done.stdout.decode(errors="replace"),
        "stderr": done.stderr.decode(errors="replace"),
        **{p.name: p.read_text(errors="replace") for p in out.iterdir() if p.is_file()},
    }
    assert {"report.json", "report.html"} <= outputs.keys()
    found = {name: leaks(text) for name, text in outputs.items() if leaks(text)}
    assert found == {}
    report = json.loads(outputs["report.json"])
    assert "[REDACTED]" in json.dumps(report["run"])


@pytest.mark.parametrize(
    "args",
    [
        ["--path", f"direct=ftp://u:{SECRETS['password']}@127.0.0.1/"],
        ["--path", f"direct=http://u:{SECRETS['password']}@[::1"],
        ["--header", f"Authorization Bearer {SECRETS['authorization']}"],
        ["--header", f"Authorization: Bearer {SECRETS['authorization']}\nX: y"],
    ],
    ids=["ftp-url", "unparseable-url", "header-without-colon", "header-line-break"],
)
def test_secrets_not_echoed_in_error_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    base = ["diagnose", "--out", str(tmp_path / "o")]
    if "--path" not in args:
        base += ["--path", "direct=http://127.0.0.1:9/"]
    code, out, err = run_main([*base, *args], capsys)
    assert code == 2
    assert leaks(err + out) == []


def test_secrets_not_in_internal_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception whose text quotes a header: one line, exit 3, redacted."""
    import pathprobe.config as config_module  # the diagnose command imports it when it runs

    def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError(
            f"boom while sending {{'Authorization': 'Bearer {SECRETS['authorization']}'}} to "
            f"http://u:{SECRETS['password']}@h/?token={SECRETS['query']}"
        )

    monkeypatch.setattr(config_module, "build_config", explode)
    monkeypatch.delenv("PATHPROBE_DEBUG", raising=False)
    code, _out, err = run_main(
        ["diagnose", "--path", "direct=http://127.0.0.1:9/", "--out", str(tmp_path)], capsys
    )
    assert code == 3
    assert err.count("\n") == 1
    assert "internal error: RuntimeError" in err
    assert leaks(err) == []
    # With PATHPROBE_DEBUG the traceback is shown, still redacted.
    monkeypatch.setenv("PATHPROBE_DEBUG", "1")
    code, _out, err = run_main(
        ["diagnose", "--path", "direct=http://127.0.0.1:9/", "--out", str(tmp_path)], capsys
    )
    assert code == 3
    assert "Traceback (most recent call last)" in err
    assert "RuntimeError: boom" in err
    assert leaks(err) == []
