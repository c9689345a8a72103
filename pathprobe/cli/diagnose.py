"""``pathprobe diagnose``: drive one load profile through each hop and name the bottleneck."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

# The heavy modules (the load engine, numpy, the report renderer) are imported inside the
# command, not here: `pathprobe --help` and every other command import this module too.

LOAD = "Load profile"
REQ = "Requests"
TARGETS = "Targets"
PROBES = "Probes"
SAFETY = "Safety"


def diagnose(
    path: Annotated[
        list[str] | None,
        typer.Option(
            "--path",
            help="NAME=URL of a hop: direct (one pod), proxy (sidecar), lb (load balancer). "
            "Repeat for each; at least one.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Directory for report.html and report.json (required).")
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            help="Open-loop rate, requests/s. Default 10, or a ramp around --target-rps.",
            rich_help_panel=LOAD,
        ),
    ] = None,
    rates: Annotated[
        str | None,
        typer.Option(
            help="Stepped ramp, e.g. 10,20,40 (requests/s per step).", rich_help_panel=LOAD
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(help="Closed loop with N users instead of a rate.", rich_help_panel=LOAD),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(
            help="Measured seconds per step and path \\[default: 10].", rich_help_panel=LOAD
        ),
    ] = None,
    warmup: Annotated[
        float | None,
        typer.Option(
            help="Warm-up seconds per step and path, excluded from the numbers \\[default: 1].",
            rich_help_panel=LOAD,
        ),
    ] = None,
    arrival: Annotated[
        str | None,
        typer.Option(help="uniform or poisson \\[default: uniform].", rich_help_panel=LOAD),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed of the request sequence (same on every path) \\[default: 1].",
            rich_help_panel=LOAD,
        ),
    ] = None,
    connections: Annotated[
        int | None,
        typer.Option(help="Connection pool size per path \\[default: 100].", rich_help_panel=LOAD),
    ] = None,
    no_keepalive: Annotated[
        bool,
        typer.Option("--no-keepalive", help="A new connection per request.", rich_help_panel=LOAD),
    ] = False,
    workers: Annotated[
        int | None, typer.Option(help="Client processes \\[default: 1].", rich_help_panel=LOAD)
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(help="auto, aiohttp or fast \\[default: auto].", rich_help_panel=LOAD),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            help="Run the --workers as Ray actors spread over this cluster's nodes: auto, "
            "host:port or ray://host:10001 (needs pathprobe\\[ray]).",
            rich_help_panel=LOAD,
        ),
    ] = None,
    max_records: Annotated[
        int | None,
        typer.Option(
            help="Per-request records kept per step and path; beyond, a sample (counts and "
            "latency percentiles stay exact) \\[default: 65536].",
            rich_help_panel=LOAD,
        ),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            help="HTTP method \\[default: GET, or POST with a body].", rich_help_panel=REQ
        ),
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header",
            "-H",
            help="'Name: value', repeatable.",
            rich_help_panel=REQ,
            show_default=False,
        ),
    ] = None,
    body_file: Annotated[
        Path | None,
        typer.Option(help="Send this file as every request's body.", rich_help_panel=REQ),
    ] = None,
    payload: Annotated[
        str | None,
        typer.Option(
            help="Generated payloads: image:MIN-MAX (random JPEGs, sides in pixels).",
            rich_help_panel=REQ,
        ),
    ] = None,
    payload_dir: Annotated[
        Path | None,
        typer.Option(
            help="Cycle through the files of this directory as bodies.", rich_help_panel=REQ
        ),
    ] = None,
    encoding: Annotated[
        str | None,
        typer.Option(help="raw, multipart or base64-json \\[default: raw].", rich_help_panel=REQ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="Request timeout, seconds \\[default: 30].", rich_help_panel=REQ),
    ] = None,
    connect_timeout: Annotated[
        float | None,
        typer.Option(help="Connect timeout, seconds \\[default: 5].", rich_help_panel=REQ),
    ] = None,
    cacert: Annotated[
        Path | None, typer.Option(help="CA bundle for HTTPS.", rich_help_panel=REQ)
    ] = None,
    cert: Annotated[
        Path | None, typer.Option(help="Client certificate (mTLS).", rich_help_panel=REQ)
    ] = None,
    key: Annotated[
        Path | None, typer.Option(help="Client key (mTLS).", rich_help_panel=REQ)
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="Do not verify TLS certificates.", rich_help_panel=REQ),
    ] = False,
    target_p99: Annotated[
        float | None, typer.Option(help="Target p99 latency, ms.", rich_help_panel=TARGETS)
    ] = None,
    target_rps: Annotated[
        float | None, typer.Option(help="Target throughput, requests/s.", rich_help_panel=TARGETS)
    ] = None,
    target_error_rate: Annotated[
        float | None,
        typer.Option(help="Highest acceptable error rate, 0-1.", rich_help_panel=TARGETS),
    ] = None,
    server_pid: Annotated[
        list[int] | None,
        typer.Option(
            help="PID of a local Python model server (its workers are followed); "
            "refused unless it runs a Python interpreter. Repeatable.",
            rich_help_panel=PROBES,
            show_default=False,
        ),
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option(
            help="URL of a `pathprobe agent` beside a remote server.", rich_help_panel=PROBES
        ),
    ] = None,
    agent_token: Annotated[
        str | None,
        typer.Option(
            help="Bearer token of the agent (or PATHPROBE_AGENT_TOKEN).",
            envvar="PATHPROBE_AGENT_TOKEN",
            rich_help_panel=PROBES,
        ),
    ] = None,
    capture_iface: Annotated[
        str | None,
        typer.Option(
            help="Capture on this interface \\[default: the route's].", rich_help_panel=PROBES
        ),
    ] = None,
    no_capture: Annotated[
        bool, typer.Option("--no-capture", help="Skip packet capture.", rich_help_panel=PROBES)
    ] = False,
    no_profile: Annotated[
        bool, typer.Option("--no-profile", help="Skip py-spy profiling.", rich_help_panel=PROBES)
    ] = False,
    no_calibrate: Annotated[
        bool,
        typer.Option(
            "--no-calibrate",
            help="Skip measuring pathprobe's own latency floor (about 1 s against a local null "
            "server, before the first step).",
            rich_help_panel=PROBES,
        ),
    ] = False,
    replica_header: Annotated[
        str | None,
        typer.Option(
            help="Response header naming the serving replica \\[default: x-replica].",
            rich_help_panel=PROBES,
        ),
    ] = None,
    abort_on_error_rate: Annotated[
        float | None,
        typer.Option(
            help="Stop a step when this share of recent requests fails \\[default: 0.9].",
            rich_help_panel=SAFETY,
        ),
    ] = None,
    allow_high_load: Annotated[
        bool,
        typer.Option(
            "--allow-high-load",
            help="Allow rates above 20000/s, concurrency above 2000, steps, warm-ups or "
            "timeouts above 600 s, runs above 4 h or 50 million requests.",
            rich_help_panel=SAFETY,
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the plan and send nothing.", rich_help_panel=SAFETY),
    ] = False,
    config: Annotated[
        Path | None, typer.Option(help="TOML file; keys are flag names with _ for -. Flags win.")
    ] = None,
) -> None:
    """Drive one load profile through each hop, watch client, wire and server, name the
    bottleneck. Exit 0 targets met (or none), 1 missed, 2 bad usage, 3 could not run,
    130 interrupted."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from pathprobe.config import build_config, load_toml, merge
    from pathprobe.session import prepare, run_diagnosis

    flags: dict[str, Any] = {
        "path": path or None,
        "out": str(out) if out is not None else None,
        "rate": rate,
        "rates": rates,
        "concurrency": concurrency,
        "duration": duration,
        "warmup": warmup,
        "arrival": arrival,
        "seed": seed,
        "connections": connections,
        "no_keepalive": no_keepalive or None,
        "workers": workers,
        "max_records": max_records,
        "engine": engine,
        "ray": ray,
        "method": method,
        "header": header or None,
        "body_file": str(body_file) if body_file is not None else None,
        "payload": payload,
        "payload_dir": str(payload_dir) if payload_dir is not None else None,
        "encoding": encoding,
        "timeout": timeout,
        "connect_timeout": connect_timeout,
        "cacert": str(cacert) if cacert is not None else None,
        "cert": str(cert) if cert is not None else None,
        "key": str(key) if key is not None else None,
        "insecure": insecure or None,
        "target_p99": target_p99,
        "target_rps": target_rps,
        "target_error_rate": target_error_rate,
        "server_pid": server_pid or None,
        "agent": agent,
        "agent_token": agent_token,
        "capture_iface": capture_iface,
        "no_capture": no_capture or None,
        "no_profile": no_profile or None,
        "no_calibrate": no_calibrate or None,
        "replica_header": replica_header,
        "abort_on_error_rate": abort_on_error_rate,
        "allow_high_load": allow_high_load or None,
        "dry_run": dry_run or None,
    }
    file_values = load_toml(config) if config is not None else {}
    cfg = build_config(merge(file_values, flags))
    argv = _argv(flags)
    if cfg.dry_run:
        _pool, plan = prepare(cfg)
        for line in plan.describe(cfg):
            typer.echo(line)
        typer.echo("dry run: nothing sent")
        raise typer.Exit(0)
    console = Console(stderr=True)
    pool, plan = prepare(cfg)
    _print_probe_hints(cfg)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        # A bar is for people: into a pipe or a log it only adds a blank line before the result
        # or before the one-line error.
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task("starting", total=max(plan.total_s, 1e-3))

        def update(label: str, done_s: float) -> None:
            progress.update(task, description=label, completed=done_s)

        report, code = run_diagnosis(cfg, argv, update, prepared=(pool, plan))
    _print_summary(report, console)
    typer.echo(f"report: {cfg.out_dir / 'report.html'}")
    typer.echo(f"json:   {cfg.out_dir / 'report.json'}")
    raise typer.Exit(code)


def _argv(flags: dict[str, Any]) -> list[str]:
    """The command line as typed when run as ``pathprobe``; else rebuilt from the flags given."""
    if sys.argv and Path(sys.argv[0]).name == "pathprobe":
        return sys.argv[1:]
    argv = ["diagnose"]
    for name, value in flags.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        values = value if isinstance(value, list) else [value]
        for item in values:
            argv.extend([flag] if item is True else [flag, str(item)])
    return argv


def _print_probe_hints(cfg: Any) -> None:
    """Before the run, on stderr: the doctor's line for each probe that will not observe, so the
    fix is known now rather than from the report's "not observed" sections afterwards."""
    from pathprobe.doctor import diagnose_checks, format_line

    for check in diagnose_checks(cfg):
        if not check.ok:
            typer.echo(format_line(check), err=True)


def _print_summary(report: dict[str, Any], console: Console) -> None:
    from pathprobe.reports.terminal import print_summary

    print_summary(report, console)
