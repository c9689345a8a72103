"""``pathprobe demo``: bring up the built-in testbed, diagnose all three paths, tear down.

By default one fault is injected (:data:`DEFAULT_FAULT`: random-size images whose preprocessing
dominates the server's time), so a first run shows a diagnosis; ``--fault none`` gives the
healthy testbed. The terminal ends with what was injected and what pathprobe found. Everything
that would stop the demo half-way — an unknown fault, an unwritable ``--out``, not root, a
missing nginx/haproxy or module — is checked before anything starts (exit 2, one line).

The testbed (servers, nginx, haproxy) runs pinned to one core and this process — the client and its
probes — to another, so a server fault does not starve the client (design.md §6). Tear-down runs
on success, failure, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pathprobe.cli.testbed import (
    BARE_OPTION,
    check_faults,
    check_testbed_ready,
    parse_magnitudes,
    sigterm_as_interrupt,
)
from pathprobe.errors import EXIT_INTERRUPTED, UsageError
from pathprobe.testbed import FAULTS, STACKS

if TYPE_CHECKING:
    from pathprobe.testbed import Testbed

#: The fault a plain `pathprobe demo` injects: the seed's story (random-size images, 64-512 px,
#: whose decoding and resizing dominate the server's time) — a verdict a newcomer can check.
DEFAULT_FAULT = "heavy_preprocessing"
#: ``--fault none``: the healthy testbed.
NO_FAULT = "none"

#: A short profile that shows every path's knee on this testbed in well under three minutes.
DEMO_RATES = (10.0, 50.0)
DEMO_DURATION_S = 4.0
DEMO_PAYLOAD = "image:64-512"
DEMO_TARGET_P99_MS = 250.0
DEMO_TARGET_ERROR_RATE = 0.01


def demo_raw_config(bed: Testbed, out: Path, rates: tuple[float, ...] = DEMO_RATES,
                    duration_s: float = DEMO_DURATION_S) -> dict[str, Any]:  # fmt: skip
    """The raw mapping (flag names) that ``build_config`` turns into the demo's diagnosis."""
    return {
        "path": {name: bed.urls[name] + "/predict/image" for name in ("direct", "proxy", "lb")},
        "rates": list(rates),
        "duration": duration_s,
        "payload": DEMO_PAYLOAD,
        "server_pid": list(bed.server_pids),
        "replica_header": bed.replica_header,
        # A bare testbed's haproxy adds no timers header: nothing to read.
        **({"lb_timers_header": bed.lb_timers_header} if bed.instrumented else {}),
        "target_p99": DEMO_TARGET_P99_MS,
        "target_error_rate": DEMO_TARGET_ERROR_RATE,
        "seed": 1,
        "out": str(out),
    }


def demo(
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            help=f"Fault to inject; repeatable. One of: {', '.join(FAULTS)}; "
            f"or {NO_FAULT} for a healthy testbed \\[default: {DEFAULT_FAULT}].",
            show_default=False,
        ),
    ] = None,
    stack: Annotated[
        str, typer.Option(help=f"Model server stack: {', '.join(STACKS)}.")
    ] = "fastapi",
    out: Annotated[Path, typer.Option(help="Directory for report.html and report.json.")] = Path(
        "pathprobe-demo"
    ),
    magnitude: Annotated[
        list[str] | None,
        typer.Option("--magnitude", help="Override a fault magnitude, KEY=NUMBER; repeatable."),
    ] = None,
    duration: Annotated[
        float, typer.Option(help="Seconds per step and path.", min=1.0, max=60.0)
    ] = DEMO_DURATION_S,
    bare: Annotated[bool, BARE_OPTION] = False,
) -> None:
    """Start the testbed with a fault (heavy_preprocessing unless --fault), run `diagnose` on
    direct, proxy and lb, say what was injected and what was found, tear down. Needs root."""
    # Imported here, not at the top: `pathprobe --help` and the other commands import this module.
    from pathprobe.config import build_config, check_out_dir
    from pathprobe.session import run_diagnosis
    from pathprobe.testbed import Testbed

    faults, stack = check_faults(demo_faults(fault), stack)
    magnitudes = parse_magnitudes(magnitude)
    if os.geteuid() != 0:
        raise UsageError(
            "pathprobe demo needs root (network namespaces, iptables and cgroups for the faults, "
            "packet capture, py-spy): run it as root, e.g. sudo pathprobe demo"
        )
    check_testbed_ready(faults, stack)
    check_out_dir(out)  # before anything starts: an unwritable --out is a usage error
    sigterm_as_interrupt()
    bed = Testbed(faults=faults, stack=stack, magnitudes=magnitudes, instrumented=not bare)
    label = ", ".join(faults) or "no fault"
    typer.echo(f"starting the testbed ({stack}{', bare' if bare else ''}, {label}) …", err=True)
    code = 0
    try:
        bed.start()
        typer.echo(f"testbed up in {bed.started_in_s:.1f} s: {bed.urls}", err=True)
        if bed.client_cpu is not None:
            os.sched_setaffinity(0, {bed.client_cpu})
        cfg = build_config(demo_raw_config(bed, out, duration_s=duration))
        (out / "testbed.json").write_text(json.dumps(bed.describe(), indent=2))
        argv = ["demo", *sys.argv[2:]] if len(sys.argv) > 1 else ["demo"]
        # A watchdog: the diagnosis bounds itself, but a demo must end even if it does not.
        steps = len(cfg.paths) * len(cfg.load.steps)
        budget_s = steps * (cfg.load.warmup_s + cfg.load.duration_s + cfg.load.timeout_s) + 60
        signal.signal(signal.SIGALRM, lambda *_: signal.raise_signal(signal.SIGINT))
        signal.alarm(int(budget_s))
        try:
            report, code = run_diagnosis(cfg, argv)
        finally:
            signal.alarm(0)
        verdict = report.get("verdict", {})
        typer.echo(f"verdict: {verdict.get('bottleneck')} — {verdict.get('summary', '')}")
        typer.echo(injected_found_line(faults, verdict.get("bottleneck")))
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    finally:
        typer.echo("tearing the testbed down …", err=True)
        problems = bed.stop()
        for problem in problems:
            typer.echo(f"warning: {problem}", err=True)
    if (out / "report.html").exists():
        typer.echo(f"report: {(out / 'report.html').resolve()}")
        typer.echo(f"json:   {(out / 'report.json').resolve()}")
    # A demo that wrote its report succeeded, whatever the verdict; interrupted stays 130.
    raise typer.Exit(EXIT_INTERRUPTED if code == EXIT_INTERRUPTED else 0)


def demo_faults(given: list[str] | None) -> list[str]:
    """The faults to inject: :data:`DEFAULT_FAULT` when none is given, nothing for ``none``."""
    if not given:
        return [DEFAULT_FAULT]
    for name in given:
        if name not in FAULTS and name != NO_FAULT:
            raise UsageError(
                f"unknown fault {name!r}: use one of {', '.join(FAULTS)}, or {NO_FAULT}"
            )
    if NO_FAULT in given:
        if len(given) > 1:
            raise UsageError(f"--fault {NO_FAULT} cannot be combined with other faults")
        return []
    return list(given)


def injected_found_line(faults: list[str], bottleneck: object) -> str:
    """``injected: heavy_preprocessing (expect preprocessing) — found: preprocessing``."""
    if not faults:
        injected = f"{NO_FAULT} (expect none)"
    else:
        expected = ", ".join(dict.fromkeys(FAULTS[f] for f in faults))
        injected = f"{', '.join(faults)} (expect {expected})"
    return f"injected: {injected} — found: {bottleneck if bottleneck is not None else 'nothing'}"
