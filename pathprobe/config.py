"""The resolved configuration of one diagnosis, and the one place that validates it.

Flags and the TOML file both arrive as a *raw mapping* keyed by the flag's name with ``_`` for
``-`` (design.md §5; every key is declared in :mod:`pathprobe.options`, with its default and the
check of a value on its own). :func:`build_config` turns the merged mapping into frozen
dataclasses or raises :class:`UsageError` with one line naming the problem, before any load is
sent; the rules that join several keys live here.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pathprobe.errors import UsageError
from pathprobe.grpc_url import is_grpc_url, parse_grpc_url
from pathprobe.model.stages import STAGE_NAMES
from pathprobe.options import KNOWN_KEYS, as_float, as_int, default, read

#: The verdict's vocabulary (design.md §2), from its one definition.
STAGES = STAGE_NAMES
#: Hop names the command line knows, innermost first. Code elsewhere stays general over any list.
KNOWN_PATHS = ("direct", "proxy", "lb")

Arrival = Literal["uniform", "poisson"]
Encoding = Literal["raw", "multipart", "base64-json"]
Engine = Literal["auto", "aiohttp", "fast"]
GrpcDatatype = Literal["BYTES", "UINT8"]

# Ceilings above which a run needs --allow-high-load: pathprobe runs against services already in
# trouble, so a typo (rate 50000 instead of 500) must not become an outage.
MAX_RATE_RPS = 20_000.0
MAX_DURATION_S = 600.0
MAX_CONCURRENCY = 2_000
# Whole-run ceilings: 50 steps of 600 s on three paths is 25 hours, and 20 000/s over it would
# plan (and hold in memory, 8 bytes per due time) billions of requests.
MAX_RUN_S = 4 * 3600.0
MAX_PLANNED_REQUESTS = 50_000_000
DEFAULT_RATE_RPS = 10.0
DEFAULT_DURATION_S: float = default("duration")
DEFAULT_TIMEOUT_S: float = default("timeout")
# A ramp around --target-rps when no load shape is given: below, at and above the target, so the
# knee is visible on both sides of it.
TARGET_RAMP_FACTORS = (0.5, 1.0, 1.5)


@dataclass(frozen=True)
class PathSpec:
    """One hop of the request path: ``direct``, ``proxy``, ``lb`` (or any other name, in order)."""

    name: str
    url: str


@dataclass(frozen=True)
class PayloadSpec:
    """What each request carries. ``kind`` ``none`` means no body."""

    kind: Literal["none", "body_file", "dir", "image"] = "none"
    body_file: Path | None = None
    payload_dir: Path | None = None
    image_min_px: int = 0
    image_max_px: int = 0
    encoding: Encoding = default("encoding")
    pool_size: int = 32
    # gRPC paths: the input tensor a file or generated image goes into (config keys grpc_input,
    # grpc_datatype); a JSON request names its own inputs.
    grpc_input: str = default("grpc_input")
    grpc_datatype: GrpcDatatype = default("grpc_datatype")


@dataclass(frozen=True)
class TLSOptions:
    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False


@dataclass(frozen=True)
class LoadProfile:
    """The load shape, replayed identically on every path.

    Exactly one of ``rates`` (open loop, requests/s per step) and ``concurrency`` (closed
    loop) is set.
    """

    rates: tuple[float, ...] | None
    concurrency: int | None
    duration_s: float = DEFAULT_DURATION_S
    warmup_s: float = default("warmup")
    arrival: Arrival = default("arrival")
    seed: int = default("seed")
    connections: int = default("connections")
    keepalive: bool = True
    timeout_s: float = DEFAULT_TIMEOUT_S
    connect_timeout_s: float = default("connect_timeout")
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    payload: PayloadSpec = field(default_factory=PayloadSpec)
    tls: TLSOptions = field(default_factory=TLSOptions)
    engine: Engine = default("engine")
    workers: int = default("workers")
    # A Ray cluster's address (``auto``, ``host:port``, ``ray://host:10001``): the workers run
    # there as actors (pathprobe.load.ray_pool) instead of as local processes.
    ray: str | None = None

    @property
    def steps(self) -> tuple[float | None, ...]:
        """One entry per step: the offered rate, or ``None`` for the closed-loop step."""
        if self.rates is not None:
            return self.rates
        return (None,)


@dataclass(frozen=True)
class Targets:
    p99_ms: float | None = None
    rps: float | None = None
    error_rate: float | None = None

    @property
    def any(self) -> bool:
        return self.p99_ms is not None or self.rps is not None or self.error_rate is not None


@dataclass(frozen=True)
class ProbeOptions:
    """What to observe beside the load, and how to name what is seen."""

    server_pids: tuple[int, ...] = ()
    agent_url: str | None = None
    agent_token: str | None = None
    capture: bool = True
    capture_iface: str | None = None
    profile: bool = True
    replica_header: str = default("replica_header")
    # (regex on a frame's "function (file)" text, stage); user rules are tried before the defaults.
    stage_rules: tuple[tuple[str, str], ...] = ()
    server_timing_header: str = default("server_timing_header")
    upstream_time_header: str = default("upstream_time_header")
    lb_timers_header: str = default("lb_timers_header")
    envoy_time_header: str = default("envoy_time_header")


@dataclass(frozen=True)
class DiagnoseConfig:
    paths: tuple[PathSpec, ...]
    load: LoadProfile
    targets: Targets
    probes: ProbeOptions
    out_dir: Path
    abort_on_error_rate: float = default("abort_on_error_rate")
    max_records: int = default("max_records")
    dry_run: bool = False
    allow_high_load: bool = False
    #: Measure pathprobe's own latency floor against a local null server before the first step.
    calibrate: bool = True

    @property
    def outermost(self) -> PathSpec:
        """The path users hit; targets are judged on it."""
        return self.paths[-1]


_PATH_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def build_config(raw: Mapping[str, Any]) -> DiagnoseConfig:
    """Validate the merged raw mapping. Raises :class:`UsageError` naming the first problem."""
    unknown = sorted(set(raw) - KNOWN_KEYS)
    if unknown:
        raise UsageError(f"unknown option: {unknown[0]!r}")
    allow_high: bool = read(raw, "allow_high_load")
    paths = _paths(raw.get("path"))
    targets = Targets(
        p99_ms=read(raw, "target_p99"),
        rps=read(raw, "target_rps"),
        error_rate=read(raw, "target_error_rate"),
    )
    load = _load_profile(raw, targets, allow_high)
    probes = _probe_options(raw)
    out = raw.get("out")
    if out is None or str(out).strip() == "":
        raise UsageError("--out DIR is required")
    abort: float = read(raw, "abort_on_error_rate")
    max_records: int = read(raw, "max_records")
    _check_credentials(paths, load.headers)
    _check_grpc(paths, load)
    if not allow_high:
        _check_run_size(load, len(paths))
    return DiagnoseConfig(
        paths=paths,
        load=load,
        targets=targets,
        probes=probes,
        out_dir=Path(str(out)),
        abort_on_error_rate=abort,
        max_records=max_records,
        dry_run=read(raw, "dry_run"),
        allow_high_load=allow_high,
        calibrate=not read(raw, "no_calibrate"),
    )


def _check_credentials(paths: tuple[PathSpec, ...], headers: tuple[tuple[str, str], ...]) -> None:
    """user:password@ in a URL and an Authorization header cannot both apply (aiohttp refuses
    every such request): say so now rather than fail every request as an error of kind other."""
    with_userinfo = [p.name for p in paths if urlsplit(p.url).username is not None]
    if with_userinfo and any(name.lower() == "authorization" for name, _ in headers):
        raise UsageError(
            f"--path {with_userinfo[0]} has credentials in its URL (user:password@) and "
            "--header Authorization is given too; give only one of them"
        )


def _check_grpc(paths: tuple[PathSpec, ...], load: LoadProfile) -> None:
    """gRPC paths go through one engine of their own: every path gRPC, or none (hop deltas never
    mix two clients), and only the options that engine has."""
    grpc_paths = [p.name for p in paths if is_grpc_url(p.url)]
    if not grpc_paths:
        return
    if len(grpc_paths) != len(paths):
        http = next(p.name for p in paths if not is_grpc_url(p.url))
        raise UsageError(
            f"--path {grpc_paths[0]} is gRPC and --path {http} is not: give every path the same "
            "protocol (the hops are compared request for request)"
        )
    if load.engine != "auto":
        raise UsageError(
            f"--engine {load.engine} speaks HTTP/1.1; grpc:// paths use the gRPC engine"
        )
    if load.workers > 1:
        raise UsageError("--workers above 1 is not supported for grpc:// paths yet")
    if load.payload.encoding != "raw":
        raise UsageError("--encoding does not apply to grpc:// paths (tensors are sent raw)")
    if load.tls.insecure:
        raise UsageError(
            "--insecure is not available for grpcs:// (grpcio always verifies); "
            "give the server's CA with --cacert"
        )
    for name, value in load.headers:
        # gRPC metadata: printable ASCII values (binary ones need a -bin key and base64).
        if name.lower().startswith("grpc-") or not all(" " <= ch <= "~" for ch in value):
            raise UsageError(
                f"--header {name}: gRPC metadata needs a name not starting with grpc- and a "
                "printable ASCII value"
            )


def _check_run_size(load: LoadProfile, n_paths: int) -> None:
    """The whole run, not only each step, stays within sane bounds unless --allow-high-load."""
    window_s = load.warmup_s + load.duration_s
    total_s = window_s * len(load.steps) * n_paths
    if total_s > MAX_RUN_S:
        raise UsageError(
            f"the run would take {total_s / 3600:.1f} h ({len(load.steps)} steps x {n_paths} "
            f"paths x {window_s:g} s), above {MAX_RUN_S / 3600:g} h; "
            "add --allow-high-load if you mean it"
        )
    requests = sum(rate * window_s for rate in load.rates or ()) * n_paths
    if requests > MAX_PLANNED_REQUESTS:
        raise UsageError(
            f"the run would send {requests:.3g} requests, above {MAX_PLANNED_REQUESTS:.3g}; "
            "add --allow-high-load if you mean it"
        )


def check_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` if needed and prove it writable, before any load is sent."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out_dir} cannot be created: {exc.strerror or exc}") from None
    if not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is not a directory")
    probe = out_dir / f".pathprobe-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"--out {out_dir} is not writable: {exc.strerror or exc}") from None


def parse_path_flags(values: list[str]) -> dict[str, str]:
    """``["direct=http://…", …]`` → ``{"direct": "http://…"}``, keeping the given order."""
    parsed: dict[str, str] = {}
    for value in values:
        name, sep, url = value.partition("=")
        if not sep:
            raise UsageError(f"--path expects NAME=URL, got {value!r}")
        name = name.strip()
        if name in parsed:
            raise UsageError(f"--path {name} given twice")
        parsed[name] = url.strip()
    return parsed


def validate_url(url: str, what: str, grpc: bool = False) -> str:
    """Accept only absolute http(s) URLs with a host — and with ``grpc``, also
    ``grpc(s)://HOST:PORT/models/MODEL[/versions/V]`` — and return the URL unchanged."""
    if not isinstance(url, str):
        raise UsageError(f"{what}: URL must be a string, got {url!r}"[:200])
    if not url:
        raise UsageError(f"{what}: URL is empty")
    if grpc and is_grpc_url(url):
        if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
            raise UsageError(f"{what}: URL contains whitespace or control characters: {url!r}")
        parse_grpc_url(url, what)
        return url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"{what}: malformed URL {url!r} ({exc})") from None
    if parts.scheme not in ("http", "https"):
        also = " (or grpc://, grpcs://)" if grpc else ""
        raise UsageError(f"{what}: URL must start with http:// or https://{also}, got {url!r}")
    if not parts.hostname:
        raise UsageError(f"{what}: URL has no host: {url!r}")
    if port == 0:
        raise UsageError(f"{what}: URL has port 0: {url!r}")
    if any(ch.isspace() for ch in url):
        raise UsageError(f"{what}: URL contains whitespace: {url!r}")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise UsageError(f"{what}: URL contains control characters: {url!r}")
    return url


def _paths(value: Any) -> tuple[PathSpec, ...]:
    if value is None:
        raise UsageError("at least one --path NAME=URL is required (direct, proxy or lb)")
    if isinstance(value, list):
        value = parse_path_flags([str(v) for v in value])
    if not isinstance(value, Mapping) or not value:
        raise UsageError('path must be a table such as {direct = "http://…"}')
    specs: list[PathSpec] = []
    for name, url in value.items():
        if not isinstance(name, str) or not _PATH_NAME.match(name):
            raise UsageError(f"unknown path name {name!r}: use direct, proxy or lb")
        if name not in KNOWN_PATHS:
            raise UsageError(f"unknown path name {name!r}: use direct, proxy or lb")
        specs.append(PathSpec(name, validate_url(url, f"--path {name}", grpc=True)))
    # Innermost first, whatever order they were given in: hop deltas compare neighbours.
    specs.sort(key=lambda p: KNOWN_PATHS.index(p.name))
    return tuple(specs)


def _load_profile(raw: Mapping[str, Any], targets: Targets, allow_high: bool) -> LoadProfile:
    given = [k for k in ("rate", "rates", "concurrency") if raw.get(k) is not None]
    if len(given) > 1:
        raise UsageError(
            f"give only one of --rate, --rates, --concurrency (got {', '.join(given)})"
        )
    rates: tuple[float, ...] | None = None
    concurrency: int | None = None
    if raw.get("rate") is not None:
        rates = (_rate(raw["rate"], "--rate", allow_high),)
    elif raw.get("rates") is not None:
        rates = _rates(raw["rates"], allow_high)
    elif raw.get("concurrency") is not None:
        concurrency = read(raw, "concurrency")
        assert concurrency is not None
        if concurrency > MAX_CONCURRENCY and not allow_high:
            raise UsageError(
                f"--concurrency {concurrency} is above {MAX_CONCURRENCY}; "
                "add --allow-high-load if you mean it"
            )
    elif targets.rps is not None:
        rates = tuple(round(targets.rps * f, 3) for f in TARGET_RAMP_FACTORS)
        rates = tuple(_rate(r, "--target-rps ramp", allow_high) for r in rates)
    else:
        rates = (DEFAULT_RATE_RPS,)

    duration: float = read(raw, "duration")
    if duration > MAX_DURATION_S and not allow_high:
        raise UsageError(
            f"--duration {duration:g} s is above {MAX_DURATION_S:g} s per step; "
            "add --allow-high-load if you mean it"
        )
    # Every run is bounded in time: a warm-up or a request timeout may not stretch it without
    # the same explicit flag a long step needs.
    bounded = {key: read(raw, key) for key in ("warmup", "timeout", "connect_timeout")}
    for key, value in bounded.items():
        if value > MAX_DURATION_S and not allow_high:
            raise UsageError(
                f"--{key.replace('_', '-')} {value:g} s is above {MAX_DURATION_S:g} s; "
                "add --allow-high-load if you mean it"
            )
    arrival = read(raw, "arrival")
    engine = read(raw, "engine")
    seed, connections, workers = (read(raw, key) for key in ("seed", "connections", "workers"))
    ray = read(raw, "ray")
    headers = read(raw, "header")
    payload = _payload(raw)
    method = raw.get("method")
    if method is None:
        method = "GET" if payload.kind == "none" else "POST"
    method = str(method).upper()
    if not re.fullmatch(r"[A-Z]{1,16}", method):
        raise UsageError(f"--method {method!r} is not an HTTP method")
    tls = TLSOptions(
        cacert=read(raw, "cacert"),
        cert=read(raw, "cert"),
        key=read(raw, "key"),
        insecure=read(raw, "insecure"),
    )
    if tls.key is not None and tls.cert is None:
        raise UsageError("--key needs --cert")
    _check_tls_files(tls)
    return LoadProfile(
        rates=rates,
        concurrency=concurrency,
        duration_s=duration,
        warmup_s=bounded["warmup"],
        arrival=arrival,
        seed=seed,
        connections=connections,
        keepalive=not read(raw, "no_keepalive"),
        timeout_s=bounded["timeout"],
        connect_timeout_s=bounded["connect_timeout"],
        method=method,
        headers=headers,
        payload=payload,
        tls=tls,
        engine=engine,
        workers=workers,
        ray=ray,
    )


def _check_tls_files(tls: TLSOptions) -> None:
    """Load the CA bundle and client certificate once now, so a wrong file fails before any load
    (not as a TLS error on every request)."""
    if tls.cacert is None and tls.cert is None:
        return
    try:
        ctx = ssl.create_default_context(cafile=str(tls.cacert) if tls.cacert else None)
        if tls.cert is not None:
            ctx.load_cert_chain(str(tls.cert), str(tls.key) if tls.key else None)
    except (ssl.SSLError, OSError, ValueError) as exc:
        which = "--cert/--key" if tls.cert is not None else "--cacert"
        if tls.cacert is not None:
            try:
                ssl.create_default_context(cafile=str(tls.cacert))
            except (ssl.SSLError, OSError, ValueError):
                which = "--cacert"
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"{which}: cannot load the TLS file(s): {reason}") from None


def _payload(raw: Mapping[str, Any]) -> PayloadSpec:
    given = [k for k in ("body_file", "payload", "payload_dir") if raw.get(k) is not None]
    if len(given) > 1:
        raise UsageError(
            f"give only one of --body-file, --payload, --payload-dir ({', '.join(given)})"
        )
    enc_kw: dict[str, Any] = {
        key: read(raw, key) for key in ("encoding", "grpc_input", "grpc_datatype")
    }
    if raw.get("body_file") is not None:
        return PayloadSpec(kind="body_file", body_file=read(raw, "body_file"), **enc_kw)
    if raw.get("payload_dir") is not None:
        return PayloadSpec(kind="dir", payload_dir=read(raw, "payload_dir"), **enc_kw)
    if raw.get("payload") is not None:
        low, high = read(raw, "payload")
        return PayloadSpec(kind="image", image_min_px=low, image_max_px=high, **enc_kw)
    return PayloadSpec(**enc_kw)


def _probe_options(raw: Mapping[str, Any]) -> ProbeOptions:
    pids_raw = raw.get("server_pid")
    if pids_raw is None:
        pids_raw = []
    if not isinstance(pids_raw, list):
        pids_raw = [pids_raw]
    pids: list[int] = []
    for value in pids_raw:
        pid = as_int(value, "--server-pid")
        if pid <= 0:
            raise UsageError(f"--server-pid {value} is not a process id")
        if not Path(f"/proc/{pid}").exists():
            raise UsageError(f"--server-pid {pid}: no such process")
        if not looks_like_python(pid):
            raise UsageError(
                f"--server-pid {pid} is not a Python process ({_process_name(pid)}); "
                "give the PID of the model server"
            )
        pids.append(pid)
    agent = raw.get("agent")
    if agent is not None:
        agent = validate_url(str(agent), "--agent")
    rules = read(raw, "stage_rules")
    names = {key: read(raw, key) for key in ("replica_header", "server_timing_header",
             "upstream_time_header", "lb_timers_header", "envoy_time_header")}  # fmt: skip
    return ProbeOptions(
        server_pids=tuple(pids),
        agent_url=agent,
        agent_token=read(raw, "agent_token"),
        capture=not read(raw, "no_capture"),
        capture_iface=read(raw, "capture_iface"),
        profile=not read(raw, "no_profile"),
        stage_rules=rules,
        **names,
    )


# An interpreter's file name: python, python3, python3.11, python3.13t, pypy3, pypy3.10 ...
_PYTHON_EXE = re.compile(r"^(python|pypy)[0-9.]*[a-z]?$")


def looks_like_python(pid: int) -> bool:
    """Whether ``pid`` runs a Python interpreter (the only kind py-spy can profile).

    Yes when the executable (``/proc/PID/exe``) or ``argv[0]`` is named like an interpreter
    (``python3.11``, ``pypy3`` — gunicorn and uvicorn run under one even after renaming their
    process title), or when a ``libpython`` is mapped (embedded: uWSGI, mod_wsgi). A process
    that vanished or hides all three is answered "no".
    """
    names: list[str] = []
    with contextlib.suppress(OSError):
        names.append(os.path.basename(os.readlink(f"/proc/{pid}/exe")).split(" ")[0])
    with contextlib.suppress(OSError):
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        names.append(os.path.basename(argv0.decode(errors="replace")).split(" ")[0])
    if any(_PYTHON_EXE.match(name) for name in names):
        return True
    with contextlib.suppress(OSError), open(f"/proc/{pid}/maps", "rb") as maps:
        return any(b"libpython" in line for line in maps)
    return False


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _rates(value: Any, allow_high: bool) -> tuple[float, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise UsageError("--rates expects a comma-separated list such as 10,20,40")
    rates = tuple(_rate(item, "--rates", allow_high) for item in items)
    if len(rates) > 50:
        raise UsageError("--rates: at most 50 steps")
    return rates


def _rate(value: Any, what: str, allow_high: bool) -> float:
    rate = as_float(value, what)
    if not math.isfinite(rate) or rate <= 0:
        raise UsageError(f"{what} must be a positive number of requests/s, got {value!r}")
    if rate > MAX_RATE_RPS and not allow_high:
        raise UsageError(
            f"{what} {rate:g} requests/s is above {MAX_RATE_RPS:g}; "
            "add --allow-high-load if you mean it"
        )
    return rate
