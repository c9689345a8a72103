"""The verdict's vocabulary (design.md §2), defined once: name, order, title, fix, advice, colour.

Order is the order of the request path, outside in, then the two outcomes. Ranking ties break by
this order; the report's legend lists stages in it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One verdict stage. ``ranked`` is false for the outcomes ``none`` and ``inconclusive``."""

    name: str
    title: str  # plain words, for the report's headline
    fix: str  # the typical fix, one line (report)
    advice: str  # what to do, a sentence or two (verdict.advice)
    colour: str  # the same in every chart and the HTML legend
    ranked: bool = True


STAGES: tuple[Stage, ...] = (
    Stage(
        "client",
        "the load generator (client)",
        "The client could not keep its schedule; add client processes or machines.",
        "The load generator could not keep its schedule: run it on more cores or machines "
        "(--workers), or lower the rate; numbers beyond the client are not trustworthy.",
        "#6b7280",
    ),
    Stage(
        "network",
        "the network between client and service",
        "Placement, bandwidth, or smaller payloads.",
        "Time goes on the wire: move the client closer to the service, check loss and "
        "bandwidth on the path, or send smaller payloads.",
        "#0ea5e9",
    ),
    Stage(
        "load_balancer",
        "the load balancer hop",
        "Tune the load balancer: connection limits, queueing, replica count, balance.",
        "The load balancer queues or fails requests: raise its per-server connection "
        "limits (maxconn) and queue timeout, add replicas, or check the balance between them.",
        "#8b5cf6",
    ),
    Stage(
        "proxy",
        "the proxy hop",
        "Tune the proxy: queueing, buffering, rate and connection limits.",
        "The proxy hop adds the time or turns requests away: check its rate limits, queue "
        "and buffering settings (e.g. nginx limit_req, proxy_buffering, upstream keepalive).",
        "#f59e0b",
    ),
    Stage(
        "server_concurrency",
        "server concurrency — requests queue for too few workers",
        "More workers or threads, async handlers, or more processes per pod.",
        "Requests wait for a free worker while CPU is left over: add workers or "
        "threads, make the handler async, or run more processes.",
        "#ef4444",
    ),
    Stage(
        "preprocessing",
        "server-side preprocessing of inputs",
        "Cheaper decoding/resizing, or limits on input size.",
        "Input preprocessing dominates the server's time: make it cheaper (decode at "
        "reduced size, resize earlier), cap input sizes, or move it off the request path.",
        "#10b981",
    ),
    Stage(
        "inference",
        "model inference on the server",
        "A smaller or faster model, batching, or an accelerator.",
        "The model dominates the server's time: a smaller or quantised model, batching, "
        "or an accelerator.",
        "#2563eb",
    ),
    Stage(
        "oom",
        "server memory exhaustion on large inputs (OOM)",
        "Limit input size, stream preprocessing, or give workers more memory.",
        "Large inputs exhaust the server's memory and kill workers: cap input sizes, stream or "
        "downscale while decoding, or raise the memory limit.",
        "#be123c",
    ),
    Stage("none", "no bottleneck — no stage stands out", "", "", "#9ca3af", ranked=False),
    Stage(
        "inconclusive",
        "inconclusive — targets missed, but no stage clears its evidence bar",
        "Rerun longer, or with server access (--server-pid / --agent).",
        "Rerun longer with server access.",
        "#9ca3af",
        ranked=False,
    ),
)

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
#: Every name the verdict may use, in order.
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
#: The stages a ranking holds (the outcomes are not ranked), in order.
RANKED_STAGES: tuple[str, ...] = tuple(s.name for s in STAGES if s.ranked)
#: Profile categories: where server samples go that belong to no stage (design.md §2), with the
#: colours charts give them.
CATEGORY_COLOURS: dict[str, str] = {"framework": "#a3a3a3", "idle": "#d4d4d4", "other": "#cbd5e1"}
