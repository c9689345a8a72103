"""Redaction: no secret given to pathprobe survives into a report, a log line or an error."""

from __future__ import annotations

import pytest

from pathprobe.redact import (
    REDACTED,
    is_secret_header,
    redact_argv,
    redact_config,
    redact_header_line,
    redact_text,
    redact_url,
)

SECRET = "s3cr3t-V4LUE"


@pytest.mark.parametrize(
    "name",
    [
        "Authorization", "authorization", "Proxy-Authorization", "Cookie", "Set-Cookie",
        "X-Api-Key", "Api-Key", "apikey", "X-Goog-Api-Key", "X-Auth-Token", "Private-Token",
        "X-Amz-Security-Token", "X-Session-Id", "X-Client-Secret", "X-Access-Key",
        "Ocp-Apim-Subscription-Key", "X-CSRF-Token", "X-Password",
    ],
)  # fmt: skip
def test_secret_headers(name: str) -> None:
    assert is_secret_header(name)
    assert redact_header_line(f"{name}: {SECRET}") == f"{name}: {REDACTED}"
    assert redact_header_line(f"{name}:{SECRET}") == f"{name}: {REDACTED}"


@pytest.mark.parametrize(
    "name", ["Content-Type", "Accept", "X-Request-Id", "User-Agent", "X-Replica", "Monkey"]
)
def test_ordinary_headers_kept(name: str) -> None:
    assert not is_secret_header(name)
    assert redact_header_line(f"{name}: value") == f"{name}: value"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"http://user:{SECRET}@127.0.0.1:8080/x", f"http://user:{REDACTED}@127.0.0.1:8080/x"),
        (f"http://{SECRET}@127.0.0.1/", f"http://{REDACTED}@127.0.0.1/"),
        (f"https://h/p?token={SECRET}&page=2", f"https://h/p?token={REDACTED}&page=2"),
        (f"https://h/?api_key={SECRET}", f"https://h/?api_key={REDACTED}"),
        (f"https://h/?access_token={SECRET}#f", f"https://h/?access_token={REDACTED}#f"),
        (f"https://h/?X-Amz-Signature={SECRET}", f"https://h/?X-Amz-Signature={REDACTED}"),
        (f"https://h/p;jsessionid={SECRET}", f"https://h/p;jsessionid={REDACTED}"),
        ("http://127.0.0.1:9/?q=cats&page=2", "http://127.0.0.1:9/?q=cats&page=2"),
        ("http://127.0.0.1:9/", "http://127.0.0.1:9/"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_url_that_does_not_parse() -> None:
    # urlsplit raises on this; the password must go all the same.
    assert SECRET not in redact_url(f"http://u:{SECRET}@[::1")


@pytest.mark.parametrize(
    "text",
    [
        f"--path direct: malformed URL 'http://u:{SECRET}@[::1' (Invalid IPv6 URL)",
        f"--path direct: URL must start with http:// or https://, got 'ftp://u:{SECRET}@h/'",
        f"cannot connect to http://127.0.0.1:9/?token={SECRET}: refused",
        f"request failed: Cookie: session={SECRET}",
        f"headers were {{'Authorization': 'Bearer {SECRET}'}}",
        f"Authorization: Bearer {SECRET}",
        f"direct=http://user:{SECRET}@127.0.0.1/",
    ],
)
def test_redact_text(text: str) -> None:
    out = redact_text(text)
    assert SECRET not in out
    assert REDACTED in out


def test_redact_text_leaves_plain_messages() -> None:
    message = "--rate must be a positive number of requests/s, got -5.0"
    assert redact_text(message) == message


def test_redact_argv() -> None:
    argv = [
        "diagnose",
        "--header", f"Authorization: Bearer {SECRET}1",
        "-H", f"Cookie: s={SECRET}2",
        f"--header=X-Api-Key: {SECRET}3",
        "--agent-token", f"{SECRET}4",
        f"--agent-token={SECRET}5",
        "--path", f"direct=http://u:{SECRET}6@h/?token={SECRET}7",
        f"--path=lb=http://h/?sig={SECRET}8",
        f"-HProxy-Authorization: Basic {SECRET}9",
        "--header", "X-Trace: keep-me",
        "--rate", "50",
    ]  # fmt: skip
    out = redact_argv(argv)
    assert len(out) == len(argv)
    assert not [a for a in out if SECRET in a]
    assert "X-Trace: keep-me" in out
    assert out[-2:] == ["--rate", "50"]


def test_redact_config() -> None:
    config = {
        "load": {"headers": [f"Authorization: {SECRET}", "Accept: */*"]},
        "probes": {"agent_token": SECRET, "agent_url": f"http://h:1/?token={SECRET}"},
        "paths": [{"name": "direct", "url": f"http://u:{SECRET}@h/"}],
        "header": [f"Cookie: {SECRET}"],
        "password": SECRET,
        "seed": 1,
    }
    out = redact_config(config)
    assert SECRET not in repr(out)
    assert out["load"]["headers"][1] == "Accept: */*"
    assert out["seed"] == 1
    assert out["paths"][0]["name"] == "direct"
