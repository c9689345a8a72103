"""Every option of ``pathprobe diagnose``, declared once (design.md §5).

One :class:`Option` per key gives its kind, default, ``--help`` text and, when a value can be
judged on its own, the parser that checks it. From this table derive :data:`KNOWN_KEYS` (what a
``--config`` file may hold), the command's Typer parameters and its flags
(:mod:`pathprobe.cli.diagnose`), and each key's own check in
:func:`pathprobe.config.build_config` (through :func:`read`). Rules that join several keys — one
of ``--rate/--rates/--concurrency``, the ceilings ``--allow-high-load`` lifts, gRPC's limits, the
method's default — stay in ``build_config``.

The flag is the key with ``-`` for ``_`` and a leading ``--``. Imports stay light: the CLI builds
its parameters from this module at start-up.
"""

from __future__ import annotations

import importlib.util
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pathprobe.errors import UsageError
from pathprobe.model.stages import CATEGORY_COLOURS, STAGE_NAMES

#: Rows kept whole per (path, step) before thinning (pathprobe.load.store): 65,536 × 81 B ≈ 5.3 MB.
#: Past it, the sample never holds fewer than half of this, so a p99 read from it still has ≥ 327
#: requests above it, and the bootstrap intervals of the hop deltas are as tight as they will get;
#: counts and the latency and service percentiles come from the exact tally anyway.
DEFAULT_MAX_RECORDS = 1 << 16
# --max-records below this would leave a thinned window's sample p99 on ~5 requests.
MIN_MAX_RECORDS = 1024
MAX_WORKERS = 64

#: What a value is: the Typer type of its flag and the shape a TOML value must have.
#: ``strs``/``ints`` are repeatable flags (TOML arrays); ``table`` is a TOML table (no flag).
Kind = Literal["float", "int", "str", "path", "flag", "strs", "ints", "table"]
#: Checks one given (not ``None``) value of an option; returns it parsed or raises UsageError.
Parser = Callable[[Any, "Option"], Any]

# --help panels.
LOAD = "Load profile"
REQ = "Requests"
TARGETS = "Targets"
PROBES = "Probes"
SAFETY = "Safety"


@dataclass(frozen=True)
class Option:
    """One option: a flag of ``pathprobe diagnose`` and/or a key of its TOML file."""

    key: str
    kind: Kind
    help: str = ""
    panel: str | None = None  # the --help panel; None: the first one
    #: The value when not given; ``None`` when there is none or build_config decides it.
    default: Any = None
    #: ``--help`` shows "[default: …]": this text, or the default itself when ``True``.
    show: str | bool = False
    parse: Parser | None = None  # None: build_config checks it, with the keys it depends on
    cli: bool = True  # a flag of the command
    toml: bool = True  # a key of the --config file
    short: str | None = None
    envvar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def help_text(self) -> str:
        """The ``--help`` line, with the default where it is shown."""
        if self.show is False:
            return self.help
        if isinstance(self.show, str):
            shown = self.show
        elif isinstance(self.default, str):
            shown = self.default
        else:
            shown = f"{self.default:g}"
        return f"{self.help.removesuffix('.')} \\[default: {shown}]."


# --- parsers of one value --------------------------------------------------------------------


def as_float(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise UsageError(f"{what} must be a number, got {value!r}")
    try:
        return float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{what} must be a number, got {value!r}") from None


def as_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise UsageError(f"{what} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be an integer, got {value!r}") from None


def short_path(path: Path, limit: int = 120) -> str:
    """A path for a one-line message: absurdly long ones are cut."""
    text = str(path)
    return text if len(text) <= limit else text[:limit] + "…"


def _positive(value: Any, opt: Option) -> float:
    number = as_float(value, opt.flag)
    if not math.isfinite(number) or number <= 0:
        raise UsageError(f"{opt.flag} must be a positive number, got {value!r}")
    return number


def _non_negative(value: Any, opt: Option) -> float:
    number = as_float(value, opt.flag)
    if not math.isfinite(number) or number < 0:
        raise UsageError(f"{opt.flag} must be zero or more, got {value!r}")
    return number


def _fraction(value: Any, opt: Option) -> float:
    number = as_float(value, opt.flag)
    if not math.isfinite(number) or not 0 <= number <= 1:
        raise UsageError(f"{opt.flag} must be a fraction between 0 and 1, got {value!r}")
    return number


def _at_least(minimum: int, maximum: int | None = None) -> Parser:
    def parse(value: Any, opt: Option) -> int:
        number = as_int(value, opt.flag)
        if number < minimum:
            raise UsageError(f"{opt.flag} must be at least {minimum}, got {value!r}")
        if maximum is not None and number > maximum:
            raise UsageError(f"{opt.flag} {number} is above {maximum}")
        return number

    return parse


def _one_of(*allowed: str) -> Parser:
    words = f"{', '.join(allowed[:-1])} or {allowed[-1]}"

    def parse(value: Any, opt: Option) -> str:
        text = str(value)
        if text not in allowed:
            name = opt.flag if opt.cli else opt.key
            raise UsageError(f"{name} must be {words}, got {text!r}"[:200])
        return text

    return parse


def _switch(value: Any, opt: Option) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{opt.key} must be true or false, got {value!r}")
    return value


def _text(value: Any, opt: Option) -> str:
    return str(value)


def existing_file(value: Any, opt: Option) -> Path:
    path = Path(str(value))
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError as exc:  # a name too long, a loop of links: pathlib only hides ENOENT & co.
        raise UsageError(f"{opt.flag} {short_path(path)}: {exc.strerror or exc}") from None
    if is_dir:
        raise UsageError(f"{opt.flag} {path}: is a directory, not a file")
    if not is_file:
        raise UsageError(f"{opt.flag} {short_path(path)}: no such file")
    # Read a byte rather than trust os.access: root passes every permission check, yet a file
    # can still fail to read (a FUSE or /proc file, an I/O error).
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"{opt.flag} {path}: cannot be read ({reason})") from None
    return path


def _directory_of_files(value: Any, opt: Option) -> Path:
    directory = Path(str(value))
    try:
        is_dir = directory.is_dir()
    except OSError as exc:
        raise UsageError(f"{opt.flag} {short_path(directory)}: {exc.strerror or exc}") from None
    if not is_dir:
        raise UsageError(f"{opt.flag} {short_path(directory)} is not a directory")
    try:
        has_file = any(p.is_file() for p in directory.iterdir())
    except OSError as exc:
        raise UsageError(
            f"{opt.flag} {directory} is not readable ({exc.strerror or exc})"
        ) from None
    if not has_file:
        raise UsageError(f"{opt.flag} {directory} holds no files")
    return directory


# Bounded digit counts: int() of a 5000-digit string raises, and no image side needs more.
_IMAGE_SPEC = re.compile(r"^image:(\d{1,9})-(\d{1,9})$")
HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _image_sides(value: Any, opt: Option) -> tuple[int, int]:
    """``image:MIN-MAX`` → (MIN, MAX) pixels."""
    spec = str(value).strip()
    match = _IMAGE_SPEC.match(spec)
    if not match:
        raise UsageError(f"{opt.flag} must look like image:MIN-MAX (pixels), got {spec!r}")
    low, high = int(match.group(1)), int(match.group(2))
    if low < 8 or high > 8192 or low > high:
        raise UsageError(f"{opt.flag} {spec}: need 8 <= MIN <= MAX <= 8192 pixels")
    return low, high


def _headers(value: Any, opt: Option) -> tuple[tuple[str, str], ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise UsageError("header must be a list of 'Name: value' strings")
    headers: list[tuple[str, str]] = []
    for number, item in enumerate(value, start=1):
        name, sep, val = str(item).partition(":")
        name = name.strip()
        if not sep or not HEADER_NAME.match(name):
            # The text is not echoed: a mistyped 'Authorization Bearer …' is still a secret.
            raise UsageError(
                f"--header #{number} is not 'Name: value' (a token name, a colon, a value)"
            )
        if "\r" in val or "\n" in val:
            raise UsageError(f"--header {name}: value contains a line break")
        headers.append((name, val.strip()))
    return tuple(headers)


def _header_name(value: Any, opt: Option) -> str:
    name = str(value).strip()
    if not HEADER_NAME.match(name):
        raise UsageError(f"{opt.flag}: {name!r} is not a header name")
    return name.lower()


def _tensor_name(value: Any, opt: Option) -> str:
    name = str(value)
    if not name or len(name) > 256 or any(ord(ch) < 0x20 for ch in name):
        raise UsageError(f"{opt.key} must be a tensor name, got {name!r}"[:200])
    return name


def _stage_rules(value: Any, opt: Option) -> tuple[tuple[str, str], ...]:
    """``{regex = stage}`` → ((regex, stage), ...), each regex compiled once to check it."""
    if not value:  # an empty table (or array) adds no rule
        return ()
    if not isinstance(value, Mapping):
        raise UsageError("stage_rules must be a table of {regex = stage}")
    rules: list[tuple[str, str]] = []
    for pattern, stage in value.items():
        if stage not in STAGE_NAMES and stage not in CATEGORY_COLOURS:
            raise UsageError(f"stage_rules: {stage!r} is not a stage")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise UsageError(f"stage_rules: bad regex {pattern!r}: {exc}") from None
        rules.append((str(pattern), str(stage)))
    return tuple(rules)


def _ray_address(value: Any, opt: Option) -> str:
    """A Ray address, checked for shape and for Ray being installed (before any load)."""
    address = str(value).strip()
    if not address or any(c.isspace() for c in address) or len(address) > 300:
        raise UsageError("--ray needs a Ray address: auto, host:port or ray://host:10001")
    # find_spec, not import: the core install stays light and `import ray` costs seconds.
    if importlib.util.find_spec("ray") is None:
        raise UsageError("--ray needs Ray, which is not installed: install pathprobe[ray]")
    return address


# --- the declaration ---------------------------------------------------------------------------

OPTIONS: tuple[Option, ...] = (
    Option("path", "strs", "NAME=URL of a hop: direct (one pod), proxy (sidecar), lb (load "
           "balancer). Repeat for each; at least one."),
    Option("out", "path", "Directory for report.html and report.json (required)."),
    # Load profile
    Option("rate", "float", "Open-loop rate, requests/s. Default 10, or a ramp around "
           "--target-rps.", LOAD),
    Option("rates", "str", "Stepped ramp, e.g. 10,20,40 (requests/s per step).", LOAD),
    Option("concurrency", "int", "Closed loop with N users instead of a rate.", LOAD,
           parse=_at_least(1)),
    Option("duration", "float", "Measured seconds per step and path.", LOAD,
           default=10.0, show=True, parse=_positive),
    Option("warmup", "float", "Warm-up seconds per step and path, excluded from the numbers.",
           LOAD, default=1.0, show=True, parse=_non_negative),
    Option("arrival", "str", "uniform or poisson.", LOAD,
           default="uniform", show=True, parse=_one_of("uniform", "poisson")),
    Option("seed", "int", "Seed of the request sequence (same on every path).", LOAD,
           default=1, show=True, parse=_at_least(0)),
    Option("connections", "int", "Connection pool size per path.", LOAD,
           default=100, show=True, parse=_at_least(1)),
    Option("no_keepalive", "flag", "A new connection per request.", LOAD,
           default=False, parse=_switch),
    Option("workers", "int", "Client processes.", LOAD,
           default=1, show=True, parse=_at_least(1, MAX_WORKERS)),
    Option("max_records", "int", "Per-request records kept per step and path; beyond, a sample "
           "(counts and latency percentiles stay exact).", LOAD,
           default=DEFAULT_MAX_RECORDS, show=True, parse=_at_least(MIN_MAX_RECORDS)),
    Option("engine", "str", "auto, aiohttp or fast.", LOAD,
           default="auto", show=True, parse=_one_of("auto", "aiohttp", "fast")),
    Option("ray", "str", "Run the --workers as Ray actors spread over this cluster's nodes: "
           "auto, host:port or ray://host:10001 (needs pathprobe\\[ray]).", LOAD,
           parse=_ray_address),
    # Requests
    Option("method", "str", "HTTP method.", REQ, show="GET, or POST with a body"),
    Option("header", "strs", "'Name: value', repeatable.", REQ,
           default=(), parse=_headers, short="-H"),
    Option("body_file", "path", "Send this file as every request's body.", REQ,
           parse=existing_file),
    Option("payload", "str", "Generated payloads: image:MIN-MAX (random JPEGs, sides in "
           "pixels).", REQ, parse=_image_sides),
    Option("payload_dir", "path", "Cycle through the files of this directory as bodies.", REQ,
           parse=_directory_of_files),
    Option("encoding", "str", "raw, multipart or base64-json.", REQ,
           default="raw", show=True, parse=_one_of("raw", "multipart", "base64-json")),
    Option("timeout", "float", "Request timeout, seconds.", REQ,
           default=30.0, show=True, parse=_positive),
    Option("connect_timeout", "float", "Connect timeout, seconds.", REQ,
           default=5.0, show=True, parse=_positive),
    Option("cacert", "path", "CA bundle for HTTPS.", REQ, parse=existing_file),
    Option("cert", "path", "Client certificate (mTLS).", REQ, parse=existing_file),
    Option("key", "path", "Client key (mTLS).", REQ, parse=existing_file),
    Option("insecure", "flag", "Do not verify TLS certificates.", REQ,
           default=False, parse=_switch),
    # Targets
    Option("target_p99", "float", "Target p99 latency, ms.", TARGETS, parse=_positive),
    Option("target_rps", "float", "Target throughput, requests/s.", TARGETS, parse=_positive),
    Option("target_error_rate", "float", "Highest acceptable error rate, 0-1.", TARGETS,
           parse=_fraction),
    # Probes
    Option("server_pid", "ints", "PID of a local Python model server (its workers are "
           "followed); refused unless it runs a Python interpreter. Repeatable.", PROBES),
    Option("agent", "str", "URL of a `pathprobe agent` beside a remote server.", PROBES),
    Option("agent_token", "str", "Bearer token of the agent (or PATHPROBE_AGENT_TOKEN).",
           PROBES, parse=_text, envvar="PATHPROBE_AGENT_TOKEN"),
    Option("capture_iface", "str", "Capture on this interface.", PROBES,
           show="the route's", parse=_text),
    Option("no_capture", "flag", "Skip packet capture.", PROBES, default=False, parse=_switch),
    Option("no_profile", "flag", "Skip py-spy profiling.", PROBES, default=False, parse=_switch),
    Option("no_calibrate", "flag", "Skip measuring pathprobe's own latency floor (about 1 s "
           "against a local null server, before the first step).", PROBES,
           default=False, parse=_switch),
    Option("replica_header", "str", "Response header naming the serving replica.", PROBES,
           default="x-replica", show=True, parse=_header_name),
    # Safety
    Option("abort_on_error_rate", "float", "Stop a step when this share of recent requests "
           "fails.", SAFETY, default=0.9, show=True, parse=_fraction),
    Option("allow_high_load", "flag", "Allow rates above 20000/s, concurrency above 2000, "
           "steps, warm-ups or timeouts above 600 s, runs above 4 h or 50 million requests.",
           SAFETY, default=False, parse=_switch),
    Option("dry_run", "flag", "Print the plan and send nothing.", SAFETY,
           default=False, parse=_switch),
    # The command line only.
    Option("config", "path", "TOML file; keys are flag names with _ for -. Flags win.",
           toml=False),
    # The TOML file only.
    Option("stage_rules", "table", "{regex = stage}: frames matching the regex count as that "
           "stage, tried before the built-in rules.", default=(), parse=_stage_rules, cli=False),
    Option("server_timing_header", "str", "Response header with Server-Timing entries.",
           default="server-timing", parse=_header_name, cli=False),
    Option("upstream_time_header", "str", "Proxy's header with the upstream's time to headers.",
           default="x-upstream-header-time", parse=_header_name, cli=False),
    Option("lb_timers_header", "str", "Load balancer's header with its timers.",
           default="x-haproxy-timers", parse=_header_name, cli=False),
    Option("envoy_time_header", "str", "Envoy's header with the upstream service time.",
           default="x-envoy-upstream-service-time", parse=_header_name, cli=False),
    Option("grpc_input", "str", "gRPC paths: the input tensor a file or image goes into.",
           default="image", parse=_tensor_name, cli=False),
    Option("grpc_datatype", "str", "gRPC paths: BYTES or UINT8.",
           default="BYTES", parse=_one_of("BYTES", "UINT8"), cli=False),
)  # fmt: skip

OPTION: dict[str, Option] = {option.key: option for option in OPTIONS}
#: Every key a flag or the TOML file may set. Unknown keys are errors.
KNOWN_KEYS = frozenset(option.key for option in OPTIONS if option.toml)
CLI_OPTIONS: tuple[Option, ...] = tuple(option for option in OPTIONS if option.cli)


def default(key: str) -> Any:
    """The declared default of ``key`` (dataclass fields take theirs from here)."""
    return OPTION[key].default


def read(raw: Mapping[str, Any], key: str) -> Any:
    """The value of ``key`` in a raw mapping: checked by its parser when given, else its default.

    ``None`` means "not given" (a flag left unset).
    """
    option = OPTION[key]
    value = raw.get(key)
    if value is None:
        return option.default
    return value if option.parse is None else option.parse(value, option)


def flag_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The command's parameters as a raw mapping for :func:`merge`: a flag left unset, an
    unrepeated list flag and an unset switch are ``None``; paths are strings."""
    flags: dict[str, Any] = {}
    for option in CLI_OPTIONS:
        if not option.toml:
            continue
        value = values.get(option.key)
        if value is False or value == []:
            value = None
        flags[option.key] = str(value) if value is not None and option.kind == "path" else value
    return flags


# --- the TOML file -----------------------------------------------------------------------------


def load_toml(path: Path) -> dict[str, Any]:
    """Read a config file; every key must be a known flag name."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except PermissionError:
        raise UsageError(f"config file not readable: {path}") from None
    except OSError as exc:  # a directory, an I/O error: still bad input, not a crash
        raise UsageError(f"config file not readable: {path} ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - KNOWN_KEYS)
    if unknown:
        raise UsageError(f"unknown key in {path}: {unknown[0]!r}")
    return data


def merge(file_values: Mapping[str, Any], flag_values: Mapping[str, Any]) -> dict[str, Any]:
    """Flags override the file; a flag left at ``None`` means "not given"."""
    merged = dict(file_values)
    merged.update({k: v for k, v in flag_values.items() if v is not None})
    return merged
