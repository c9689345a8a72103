"""Timings the hops write into response headers, parsed and summarized per (path, step).

Free evidence when present (design.md §3). Formats accepted:

* **W3C Server-Timing** (``server-timing``), following the spec's processing model
  (https://w3c.github.io/server-timing/#the-server-timing-header-field): several header lines are
  joined with commas; the value is split on commas outside quoted strings; each entry is
  ``name *( ";" param-name [ "=" param-value ] )``; the name must be a non-empty token (entries
  with anything else are ignored); parameter values are tokens or quoted strings (backslash
  escapes undone, junk after the closing quote up to the next ``;`` dropped); the *first*
  occurrence of a parameter wins; ``dur`` is read with HTML's rules for floating-point numbers
  (leading number, trailing junk ignored; unreadable → no duration), ``desc`` is kept as text.
  A metric without a readable ``dur`` is kept but enters no distribution.
* **nginx** ``$upstream_header_time`` / ``$upstream_response_time`` (``x-upstream-header-time``):
  seconds with millisecond resolution; ``", "`` separates the upstream servers tried for one
  request, ``" : "`` separates internal redirects; ``-`` means that server gave no answer.
  The request's value is the sum of the numbers present.
* **HAProxy** timers (``x-haproxy-timers``), in milliseconds, as rendered by the testbed:
  ``%Tw/%Tc/%Tr`` → ``"Tw/Tc/Tr"`` (e.g. ``"3/0/12"``), or the five-field
  ``%TR/%Tw/%Tc/%Tr/%Ta``, or ``key=value`` pairs (``"Tw=3 Tc=0 Tr=12"``, separated by spaces,
  commas or semicolons, keys TR Tw Tc Tr Ta Tt Tq). ``-1`` (phase never reached) is absent.
* **Envoy** ``x-envoy-upstream-service-time``: an integer number of milliseconds.

Header values arrive from the load engine as ``{lowercase header name: [value or None per
request]}``, aligned with the (path, step) records array; a response that carried the header
several times has its lines joined with ``", "``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pathprobe.config import ProbeOptions

FloatArray = npt.NDArray[np.float64]

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# HTML "rules for parsing floating-point number values": the longest valid prefix is the number.
_HTML_FLOAT = re.compile(r"[ \t\n\f\r]*([-+]?)(\d+(?:\.\d+)?|\.\d+)(?:[eE]([-+]?\d+))?")
# Values larger than this many characters are not parsed (hostile servers; issue 8).
MAX_HEADER_CHARS = 8192


@dataclass(frozen=True)
class ServerTimingMetric:
    """One Server-Timing entry. ``dur_ms`` is None when ``dur`` was absent or unreadable."""

    name: str
    dur_ms: float | None = None
    desc: str = ""

    @property
    def duration_ms(self) -> float:
        """The spec's duration: ``dur``, or 0 when absent."""
        return 0.0 if self.dur_ms is None else self.dur_ms


@dataclass(frozen=True)
class HaproxyTimers:
    """HAProxy's per-request timers in ms; None when absent or -1 (phase not reached)."""

    TR: float | None = None  # request headers received
    Tw: float | None = None  # waiting in queues (backend/server maxconn)
    Tc: float | None = None  # TCP connect to the server
    Tr: float | None = None  # server response time (until headers)
    Ta: float | None = None  # total active time


def split_header_list(value: str) -> list[str]:
    """Split a comma-separated header value, leaving commas inside quoted strings alone."""
    parts: list[str] = []
    current: list[str] = []
    in_quotes = False
    escaped = False
    for ch in value:
        if in_quotes:
            current.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
            current.append(ch)
        elif ch == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip(" \t") for p in parts]


def parse_html_float(text: str) -> float | None:
    """HTML's floating-point parsing: the leading number of ``text``; None when there is none."""
    match = _HTML_FLOAT.match(text)
    if not match:
        return None
    sign, number, exponent = match.groups()
    try:
        value = float(number) * (10.0 ** int(exponent) if exponent else 1.0)
    except OverflowError:
        return None
    value = -value if sign == "-" else value
    return value if math.isfinite(value) else None


def _quoted_string(text: str, pos: int) -> tuple[str, int]:
    """Collect an HTTP quoted string starting at ``text[pos] == '"'``; returns (value, end)."""
    out: list[str] = []
    pos += 1
    while pos < len(text):
        ch = text[pos]
        if ch == "\\":
            pos += 1
            if pos < len(text):
                out.append(text[pos])
        elif ch == '"':
            return "".join(out), pos + 1
        else:
            out.append(ch)
        pos += 1
    return "".join(out), pos


def _parse_entry(entry: str) -> ServerTimingMetric | None:
    pos = entry.find(";")
    name = (entry if pos < 0 else entry[:pos]).strip(" \t")
    if not name or not _TOKEN.match(name):
        return None
    params: dict[str, str] = {}
    pos = len(entry) if pos < 0 else pos
    while pos < len(entry):
        pos += 1  # past ";"
        eq = pos
        while eq < len(entry) and entry[eq] not in "=;":
            eq += 1
        param_name = entry[pos:eq].strip(" \t").lower()
        pos = eq
        value = ""
        if pos < len(entry) and entry[pos] == "=":
            pos += 1
            while pos < len(entry) and entry[pos] in " \t":
                pos += 1
            if pos < len(entry) and entry[pos] == '"':
                value, pos = _quoted_string(entry, pos)
                while pos < len(entry) and entry[pos] != ";":
                    pos += 1  # junk after the closing quote is dropped
            else:
                end = entry.find(";", pos)
                end = len(entry) if end < 0 else end
                value = entry[pos:end].strip(" \t")
                pos = end
        if not param_name or param_name in params:
            continue
        params[param_name] = value
    dur = parse_html_float(params["dur"]) if "dur" in params else None
    return ServerTimingMetric(name=name, dur_ms=dur, desc=params.get("desc", ""))


def parse_server_timing(value: str) -> list[ServerTimingMetric]:
    """All metrics of one (possibly comma-joined) Server-Timing value; invalid entries dropped."""
    if not value or len(value) > MAX_HEADER_CHARS:
        return []
    metrics = []
    for entry in split_header_list(value):
        metric = _parse_entry(entry)
        if metric is not None:
            metrics.append(metric)
    return metrics


def parse_nginx_upstream_times(value: str) -> list[float | None]:
    """Seconds per upstream attempt, in order (``-`` → None); [] when nothing parses."""
    if not value or len(value) > MAX_HEADER_CHARS:
        return []
    attempts: list[float | None] = []
    for group in value.split(":"):
        for item in group.split(","):
            item = item.strip()
            if not item:
                continue
            if item == "-":
                attempts.append(None)
                continue
            try:
                seconds = float(item)
            except ValueError:
                return []
            if not math.isfinite(seconds) or seconds < 0:
                return []
            attempts.append(seconds)
    return attempts


def nginx_upstream_ms(value: str | None) -> float | None:
    """A request's total upstream time in ms (sum over attempts); None when absent."""
    if value is None:
        return None
    numbers = [a for a in parse_nginx_upstream_times(value) if a is not None]
    return sum(numbers) * 1000.0 if numbers else None


_HAPROXY_KEYS = ("TR", "Tw", "Tc", "Tr", "Ta", "Tt", "Tq")
_HAPROXY_PAIR = re.compile(r"(T[RwcraTtq])\s*=\s*(-?\d+(?:\.\d+)?)")


def parse_haproxy_timers(value: str | None) -> HaproxyTimers | None:
    """Parse ``"Tw/Tc/Tr"``, ``"TR/Tw/Tc/Tr/Ta"`` or ``"Tw=3 Tc=0 Tr=12"``; None if unreadable."""
    if not value or len(value) > MAX_HEADER_CHARS:
        return None
    text = value.strip()
    found: dict[str, float | None] = {}
    if "=" in text:
        for key, number in _HAPROXY_PAIR.findall(text):
            if key in ("Tt", "Tq"):
                key = {"Tt": "Ta", "Tq": "TR"}[key]  # older names of the same timers
            if key not in found:
                found[key] = _haproxy_ms(number)
        if not found:
            return None
    else:
        fields = [f.strip() for f in text.split("/")]
        names = {3: ("Tw", "Tc", "Tr"), 5: ("TR", "Tw", "Tc", "Tr", "Ta")}.get(len(fields))
        if names is None:
            return None
        for key, number in zip(names, fields, strict=True):
            if not re.fullmatch(r"[+-]?\d+(?:\.\d+)?", number):
                return None
            found[key] = _haproxy_ms(number)
    return HaproxyTimers(**found)


def _haproxy_ms(number: str) -> float | None:
    ms = float(number)
    return None if ms < 0 else ms


def parse_envoy_upstream_ms(value: str | None) -> float | None:
    """Envoy's ``x-envoy-upstream-service-time``: integer milliseconds; None if unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or len(text) > 12:
        return None
    return float(text)


def distribution(values_ms: Sequence[float] | FloatArray) -> dict[str, float | int | None]:
    """``{"count", "mean", "p50", "p90", "p99", "max"}`` in ms over the finite values."""
    arr = np.asarray(values_ms, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "count": int(arr.size),
        "mean": float(arr.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(arr.max()),
    }


def per_request_server_timing(
    values: Mapping[str, Sequence[str | None]], header: str = "server-timing"
) -> dict[str, FloatArray]:
    """Per metric name, its ``dur`` in ms per request (NaN where absent), aligned with records.

    A response that names the same metric twice (two database calls) counts the sum of both.
    """
    column = values.get(header.lower())
    if column is None:
        return {}
    n = len(column)
    out: dict[str, FloatArray] = {}
    for i, raw in enumerate(column):
        if raw is None:
            continue
        for metric in parse_server_timing(raw):
            if metric.dur_ms is None:
                continue
            arr = out.get(metric.name)
            if arr is None:
                arr = out[metric.name] = np.full(n, np.nan)
            arr[i] = metric.dur_ms if math.isnan(arr[i]) else arr[i] + metric.dur_ms
    return out


def per_request_hop_times(
    values: Mapping[str, Sequence[str | None]], options: ProbeOptions
) -> dict[str, FloatArray]:
    """Every hop timing per request in ms (NaN where absent), for attribution.

    Keys: ``server_timing.<metric>``, ``upstream_ms`` (nginx), ``lb_queue_ms`` / ``lb_connect_ms``
    / ``lb_response_ms`` / ``lb_total_ms`` (HAProxy Tw/Tc/Tr/Ta), ``envoy_upstream_ms``. Only keys
    with at least one value are present.
    """
    out: dict[str, FloatArray] = {
        f"server_timing.{name}": arr
        for name, arr in per_request_server_timing(values, options.server_timing_header).items()
    }
    upstream = values.get(options.upstream_time_header.lower())
    if upstream is not None:
        _put(out, "upstream_ms", [nginx_upstream_ms(v) for v in upstream])
    timers = values.get(options.lb_timers_header.lower())
    if timers is not None:
        parsed = [parse_haproxy_timers(v) for v in timers]
        for key, attr in (("lb_queue_ms", "Tw"), ("lb_connect_ms", "Tc"),
                          ("lb_response_ms", "Tr"), ("lb_total_ms", "Ta")):  # fmt: skip
            _put(out, key, [None if t is None else getattr(t, attr) for t in parsed])
    envoy = values.get(options.envoy_time_header.lower())
    if envoy is not None:
        _put(out, "envoy_upstream_ms", [parse_envoy_upstream_ms(v) for v in envoy])
    return out


def _put(out: dict[str, FloatArray], key: str, values: list[float | None]) -> None:
    arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if np.isfinite(arr).any():
        out[key] = arr


def summarize_hop_headers(
    values: Mapping[str, Sequence[str | None]], options: ProbeOptions
) -> dict[str, Any]:
    """The hop headers of one (path, step): distributions in ms and what was present.

    Returns ``{"requests": n, "present": {header: responses carrying it},
    "server_timing": {metric: dist}, "upstream_ms": dist, "lb_queue_ms": dist, ...,
    "envoy_upstream_ms": dist, "replicas": {name: responses}}`` where ``dist`` is
    :func:`distribution`'s dict; sections whose header never appeared are left out.
    """
    n = max((len(v) for v in values.values()), default=0)
    names = {
        "server_timing": options.server_timing_header,
        "upstream_time": options.upstream_time_header,
        "lb_timers": options.lb_timers_header,
        "envoy_time": options.envoy_time_header,
        "replica": options.replica_header,
    }
    present = {
        header: sum(1 for v in values.get(header.lower(), ()) if v is not None)
        for header in names.values()
    }
    summary: dict[str, Any] = {
        "requests": n,
        "present": {h: c for h, c in present.items() if c},
    }
    per_request = per_request_hop_times(values, options)
    timing = {
        key.removeprefix("server_timing."): distribution(arr)
        for key, arr in sorted(per_request.items())
        if key.startswith("server_timing.")
    }
    if timing:
        summary["server_timing"] = timing
    for key, arr in per_request.items():
        if not key.startswith("server_timing."):
            summary[key] = distribution(arr)
    replica_column = values.get(options.replica_header.lower())
    if replica_column is not None:
        counts: dict[str, int] = {}
        for v in replica_column:
            if v is not None:
                label = v.strip()[:64]
                counts[label] = counts.get(label, 0) + 1
        if counts:
            summary["replicas"] = dict(sorted(counts.items()))
    return summary
