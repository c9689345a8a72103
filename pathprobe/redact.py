"""Redaction of secrets before anything reaches a report, a log or the terminal.

Reports are attached to incident reviews and shared widely; a bearer token in one is a breach.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "[REDACTED]"

_SECRET_HEADER = re.compile(
    r"^(authorization|proxy-authorization|cookie|set-cookie|x-api-key|api-key|x-auth-token"
    r"|x-amz-security-token|x-goog-api-key)$|(token|secret|passw|api[-_]?key|auth|session|signature"
    r"|credential|csrf|xsrf)"
    # Names ending in "key" are credentials (X-Access-Key, Ocp-Apim-Subscription-Key).
    r"|(^|[-_])key$",
    re.IGNORECASE,
)
_SECRET_PARAM = re.compile(
    r"(token|secret|passw|pwd|api[-_]?key|apikey|key|auth|sig|signature|session|code|credential)",
    re.IGNORECASE,
)
# Any scheme, not only http: an ftp:// or a mistyped URL in an error message may carry a password.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
# userinfo of a URL that urlsplit cannot parse (``http://u:pw@[::1``): hide what follows the colon.
_USERINFO = re.compile(r"(//[^/@:\s]*:)[^/@\s]*@")
# A secret header quoted inside free text (an error message, a traceback line).
_SECRET_HEADER_IN_TEXT = re.compile(
    r"\b(proxy-authorization|authorization|set-cookie|cookie|x-api-key|api-key|x-auth-token)"
    r"(\s*:\s*)[^\r\n'\"]+",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}", re.IGNORECASE)
_PATH_PARAM = re.compile(r";([^/;=?#]+)=([^/;?#]*)")
# Flags whose value is itself a secret.
_SECRET_FLAGS = frozenset({"--agent-token"})


def is_secret_header(name: str) -> bool:
    return bool(_SECRET_HEADER.search(name.strip()))


def redact_header_line(line: str) -> str:
    """``"Authorization: Bearer x"`` → ``"Authorization: [REDACTED]"``."""
    name, sep, _value = line.partition(":")
    if sep and is_secret_header(name):
        return f"{name}: {REDACTED}"
    return line


def redact_url(url: str) -> str:
    """Hide a password in the userinfo and secret-looking query parameters."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{hostport}" if ":" in userinfo else f"{REDACTED}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(k) for k, _ in pairs):
            query = urlencode(
                [(k, REDACTED if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="[]"
            )
    # Path parameters such as ``;jsessionid=…`` are session tokens too.
    path = _PATH_PARAM.sub(
        lambda m: f";{m.group(1)}={REDACTED}" if _SECRET_PARAM.search(m.group(1)) else m.group(0),
        parts.path,
    )
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Redact URLs and ``Header: value`` lines inside free text (error messages, argv items)."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    text = _SECRET_HEADER_IN_TEXT.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return redact_header_line(text) if ":" in text and "://" not in text else text


def redact_argv(argv: Iterable[str]) -> list[str]:
    """Redact a command line: header values, secret flags, URLs with credentials."""
    out: list[str] = []
    hide_next = False
    header_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        if header_next:
            out.append(redact_header_line(arg))
            header_next = False
            continue
        flag, eq, value = arg.partition("=")
        if flag in _SECRET_FLAGS:
            out.append(f"{flag}={REDACTED}" if eq else flag)
            hide_next = not eq
            continue
        if flag in ("--header", "-H"):
            if eq:
                out.append(f"{flag}={redact_header_line(value)}")
            else:
                out.append(arg)
                header_next = True
            continue
        out.append(redact_text(arg))
    return out


def redact_config(value: Any, key: str = "") -> Any:
    """Walk a JSON-able config and redact headers, tokens and URLs."""
    if isinstance(value, Mapping):
        return {k: redact_config(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if key == "header" or key == "headers":
            return [
                redact_header_line(v) if isinstance(v, str) else redact_config(v) for v in value
            ]
        return [redact_config(v, key) for v in value]
    if isinstance(value, str):
        if key in ("agent_token",) or "token" in key.lower() or "password" in key.lower():
            return REDACTED
        return redact_text(value)
    return value
