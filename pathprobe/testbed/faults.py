"""Fault names, stacks and their default magnitudes: the testbed's vocabulary (pure, no I/O).

A fault name is API: tests, the demo and the fault-matrix suite pass them to
``Testbed(faults=[...])``. Magnitudes are parameters with per-stack defaults, so that attribution
is never fitted to one set of numbers. :func:`resolve_magnitudes` validates and merges overrides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pathprobe.errors import UsageError

STACKS = ("fastapi", "aiohttp", "wsgi")

#: Every fault knob, with the stage it is meant to produce (design.md §2).
FAULTS: dict[str, str] = {
    "heavy_preprocessing": "preprocessing",
    "slow_inference": "inference",
    "oom": "oom",
    "single_concurrency": "server_concurrency",
    "proxy_queue": "proxy",
    "lb_queue": "load_balancer",
    "net_delay": "network",
    "net_loss": "network",
    "net_bandwidth": "network",
    "starved_client": "client",
}

NETWORK_FAULTS = frozenset({"net_delay", "net_loss", "net_bandwidth"})

# Magnitudes, per stack. The two stacks differ on purpose (ISSUE 3: "different function names and
# magnitudes"). Keys carry their unit.
_COMMON: dict[str, float] = {
    # nginx limit_req: requests/s each nginx lets through; the rest waits in a queue this long
    # (0: no queue, requests beyond the rate are turned away with 503).
    "proxy_rate_rps": 15.0,
    "proxy_burst": 2000.0,
    # haproxy maxconn per server: requests beyond it wait in haproxy's queue (%Tw).
    "lb_maxconn": 1.0,
    # Network faults, applied between the client (root namespace) and the service namespace.
    "net_delay_ms": 30.0,  # each direction, so RTT grows by twice this
    "net_loss_pct": 3.0,  # packets dropped on the service side's INPUT
    "net_bandwidth_mbit": 2.0,  # tbf on both veth ends
    # A CPU hog on the client's core: busy this fraction of every period.
    "starved_client_duty": 0.9,
    "starved_client_period_ms": 100.0,
    # OOM: bytes the fault allocates (and touches) per input pixel; the memory limit is the
    # servers' steady usage plus this headroom.
    "oom_headroom_mb": 160.0,
}

DEFAULT_MAGNITUDES: dict[str, dict[str, float]] = {
    "fastapi": {
        **_COMMON,
        "workers": 4.0,
        # Time the image model waits on its (simulated) accelerator per request. Real GPU-backed
        # servers wait like this; it is what gives a multi-worker server concurrency headroom
        # that a one-at-a-time server or haproxy's maxconn takes away.
        "accelerator_ms": 40.0,
        "heavy_preprocessing_ms": 30.0,  # extra CPU per image request in preprocessing functions
        "slow_inference_ms": 40.0,  # extra CPU per request in the model's forward pass
        "oom_bytes_per_pixel": 1024.0,
    },
    "aiohttp": {
        **_COMMON,
        "workers": 3.0,
        "accelerator_ms": 30.0,
        "heavy_preprocessing_ms": 45.0,
        "slow_inference_ms": 25.0,
        "oom_bytes_per_pixel": 1536.0,
        "oom_headroom_mb": 200.0,
    },
    # Flask under gunicorn's threaded workers: a request holds a thread from start to end, and a
    # worker's threads share one GIL, so its capacity is workers × threads only while they wait.
    "wsgi": {
        **_COMMON,
        "workers": 2.0,
        "threads": 4.0,
        # Here the wait is a blocking read on a socket (the model's remote device or a
        # downstream call), not an event-loop sleep: the thread is parked, the worker serves
        # others on its other threads.
        "accelerator_ms": 35.0,
        "heavy_preprocessing_ms": 40.0,
        "slow_inference_ms": 30.0,
        "oom_bytes_per_pixel": 1280.0,
        "oom_headroom_mb": 180.0,
    },
}


def validate_faults(faults: Sequence[str]) -> tuple[str, ...]:
    """Known, de-duplicated fault names in the given order; :class:`UsageError` otherwise."""
    seen: list[str] = []
    for name in faults:
        if name not in FAULTS:
            raise UsageError(f"unknown fault {name!r}: use one of {', '.join(FAULTS)}")
        if name not in seen:
            seen.append(name)
    return tuple(seen)


def validate_stack(stack: str) -> str:
    if stack not in STACKS:
        raise UsageError(f"unknown stack {stack!r}: use one of {', '.join(STACKS)}")
    return stack


def resolve_magnitudes(stack: str, overrides: Mapping[str, Any] | None) -> dict[str, float]:
    """The stack's defaults with ``overrides`` applied; unknown keys and bad values are errors."""
    merged = dict(DEFAULT_MAGNITUDES[validate_stack(stack)])
    for key, value in (overrides or {}).items():
        if key not in merged:
            raise UsageError(f"unknown testbed magnitude {key!r}: use one of {', '.join(merged)}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"testbed magnitude {key} must be a number, got {value!r}")
        if value < 0:
            raise UsageError(f"testbed magnitude {key} must be zero or more, got {value!r}")
        merged[key] = float(value)
    if merged["workers"] < 1 or merged.get("threads", 1.0) < 1:
        raise UsageError("testbed magnitudes workers and threads must be at least 1")
    if merged["lb_maxconn"] < 1:
        raise UsageError("testbed magnitude lb_maxconn must be at least 1")
    if not 0 < merged["starved_client_duty"] < 1:
        raise UsageError("testbed magnitude starved_client_duty must lie between 0 and 1")
    if merged["net_loss_pct"] >= 100:
        raise UsageError("testbed magnitude net_loss_pct must be below 100")
    if merged["proxy_burst"] < 0:
        raise UsageError("testbed magnitude proxy_burst must be at least 0 (0: reject, not queue)")
    if merged["net_bandwidth_mbit"] <= 0 or merged["proxy_rate_rps"] <= 0:
        raise UsageError("testbed magnitudes net_bandwidth_mbit and proxy_rate_rps must be > 0")
    return merged


def relevant_magnitudes(faults: Sequence[str], magnitudes: Mapping[str, float]) -> dict[str, float]:
    """The magnitudes that matter for ``faults`` (plus the always-on ones), for the report."""
    prefixes = {
        "heavy_preprocessing": ("heavy_preprocessing_",),
        "slow_inference": ("slow_inference_",),
        "oom": ("oom_",),
        "proxy_queue": ("proxy_",),
        "lb_queue": ("lb_",),
        "net_delay": ("net_delay_",),
        "net_loss": ("net_loss_",),
        "net_bandwidth": ("net_bandwidth_",),
        "starved_client": ("starved_client_",),
        "single_concurrency": (),
    }
    keep = {"accelerator_ms": magnitudes["accelerator_ms"]}
    keep["workers"] = 1.0 if "single_concurrency" in faults else magnitudes["workers"]
    if "threads" in magnitudes:
        keep["threads"] = 1.0 if "single_concurrency" in faults else magnitudes["threads"]
    for fault in faults:
        if prefixes[fault]:
            keep.update({k: v for k, v in magnitudes.items() if k.startswith(prefixes[fault])})
    return keep
