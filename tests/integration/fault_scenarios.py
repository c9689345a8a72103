"""The fault matrix: one scenario per stage, whose true bottleneck is known, on the real testbed.

Shared by ``tests/integration/test_fault_matrix.py`` (CI, both stacks) and
``benchmarks/bench_repeatability.py`` (10 seeds per scenario, also near the thresholds).

Sizing (why each scenario has margin, from first principles rather than from one run):

* **load shapes** — queueing faults run *closed loop* (N users): the queue length is then N − 1 by
  construction, whatever the machine's speed, so the expected queue time is (N − 1) × service
  time, not a fragile function of an offered rate near capacity. Work faults run open loop at a
  rate whose CPU utilisation stays ≤ ~60 % of the server's one core.
* **magnitudes** — the faulted stage must dominate the healthy parts by ≥ 1.5× (the testbed's
  simulated accelerator makes healthy inference 30–40 ms), and the targets sit between the healthy
  tail and the faulted one.
* the client is pinned to the testbed's client core, the servers to the other one (design.md §6).

Variants (:data:`VARIANTS`): each stack *instrumented* (Server-Timing from the servers, timing
headers from nginx and haproxy; diagnosed with the aiohttp engine, as before) and *bare* (no
timing header anywhere, the default engine) — the case most production services are. The ``wsgi``
stack (Flask under gunicorn threads, names no rule knows) exists only bare. Bare cases check
magnitudes against what the test measures on the testbed itself (:class:`Facts`): the injected
budgets stretched by the kernel's run-queue wait, lone-request service times, configured rates —
never against another number of the same report.
"""

from __future__ import annotations

import io
import math
import os
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
from PIL import Image

from pathprobe.config import build_config
from pathprobe.session import run_diagnosis
from pathprobe.testbed import Testbed

Report = dict[str, Any]


@dataclass(frozen=True)
class Variant:
    """A server stack, with or without timing headers on every hop, over HTTP or gRPC."""

    stack: str
    instrumented: bool
    # ModelInfer (Open Inference Protocol) through nginx grpc_pass and haproxy in HTTP/2: the
    # aiohttp stack serves both protocols from one code path, so its faults hold for both.
    grpc: bool = False

    @property
    def id(self) -> str:
        name = f"{self.stack}-grpc" if self.grpc else self.stack
        return name if self.instrumented else f"{name}-bare"


VARIANTS = (
    Variant("fastapi", True),
    Variant("aiohttp", True),
    Variant("fastapi", False),
    Variant("aiohttp", False),
    Variant("wsgi", False),  # never sends Server-Timing: only bare makes sense
    # gRPC bare (issue 16): no Server-Timing in the metadata, no timing header from nginx or
    # haproxy; the diagnosis stands on the profile, the capture and the client's records.
    Variant("aiohttp", False, grpc=True),
)


@dataclass(frozen=True)
class Facts:
    """What the test measured on the running testbed itself, apart from the report."""

    magnitudes: Mapping[str, float]
    # How much the server's CPU work stretched in wall time during the diagnosis (CpuStretch).
    stretch: float = 1.0
    # Median time of a lone request on the direct path (sequential, nothing queued), before the
    # diagnosis: the service time S that queueing predictions multiply.
    service_ms: float = 0.0


#: (report, facts) → (measured ms, expected ms) for the ±25 % check.
Check = Callable[[Report, Facts], tuple[float, float]]


@dataclass(frozen=True)
class Scenario:
    name: str
    faults: tuple[str, ...]
    expect: str  # the verdict's bottleneck
    paths: tuple[str, ...] = ("direct",)
    load: Mapping[str, Any] = field(default_factory=lambda: {"rate": 20})
    targets: Mapping[str, Any] = field(default_factory=lambda: {"target_p99": 150})
    payload: str = "image:32-96"
    magnitudes: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # per stack
    # (report, magnitudes, cpu stretch) → (measured ms, expected ms) for the ±25 % check.
    magnitude: Check | None = None
    ranking_order: tuple[str, ...] = ()  # for two-fault scenarios: expected order in the ranking
    options: Mapping[str, Any] = field(default_factory=dict)  # more diagnose keys
    duration_s: float = 3.0
    on_instrumented: bool = True  # runs on the instrumented variants
    on_bare: bool = False  # runs on the bare HTTP variants
    on_grpc: bool = False  # runs on the gRPC variant
    # The check on bare variants (``magnitude`` serves the instrumented ones): no header there,
    # so it predicts from Facts alone.
    bare_magnitude: Check | None = None

    def runs_on(self, variant: Variant) -> bool:
        if variant.grpc:
            return self.on_grpc
        return self.on_instrumented if variant.instrumented else self.on_bare

    def magnitudes_for(self, variant: Variant) -> dict[str, float]:
        """Overrides for ``variant``: its own entry ("fastapi-bare") or else its stack's."""
        return dict(self.magnitudes.get(variant.id, self.magnitudes.get(variant.stack, {})))

    def check(self, variant: Variant) -> Check | None:
        return self.magnitude if variant.instrumented else self.bare_magnitude


def explains(report: Report, stage: str) -> float:
    for entry in report["verdict"]["ranking"]:
        if entry["stage"] == stage:
            return float(entry["explains_ms"])
    return 0.0


def p50_part(report: Report, stage: str) -> float:
    v = report["verdict"]
    path = v["focus"]["path"]
    return float(v["attribution"][path]["p50"].get(stage, 0.0))


def hop_p50(report: Report, hop: str) -> float:
    for d in report["verdict"]["hop_deltas"]:
        if d["hop"] == hop:
            return float(d["p50_ms"])
    raise AssertionError(f"no hop delta for {hop}")


def _network(r: Report, f: Facts) -> tuple[float, float]:
    # One request/response exchange crosses the delay twice (each direction).
    return explains(r, "network"), 2.0 * f.magnitudes["net_delay_ms"]


#: Linux's minimum retransmission timeout (TCP_RTO_MIN): on a short path every timeout-recovered
#: loss costs this, and the tail of a lossy path is made of such requests.
TCP_RTO_MIN_MS = 200.0


def _loss(r: Report, f: Facts) -> tuple[float, float]:
    # A request above the p99 is an ordinary request plus the time a lost segment held it up
    # (a retransmission timeout, ≥ 200 ms): all its latency beyond a median request's is the
    # network's. Both numbers are the engine's own latencies; the capture's stalls only say
    # which requests they were.
    focus = r["verdict"]["focus"]
    assert focus["tail_mean_ms"] - focus["p50_ms"] >= TCP_RTO_MIN_MS * 0.9, focus
    return explains(r, "network"), focus["tail_mean_ms"] - focus["p50_ms"]


def _bandwidth(r: Report, f: Facts) -> tuple[float, float]:
    # What the body transfer times imply against what the token bucket allows.
    bandwidth = float(r["verdict"]["effective_bandwidth_mbit_s"] or 0.0)
    return bandwidth, f.magnitudes["net_bandwidth_mbit"]


def _rejections(offered_rps: float) -> Check:
    # nginx limit_req with burst 0 lets a request through only once 1/rate has passed since the
    # last one it let through; with requests every 1/offered, that is every k-th request,
    # k = ceil(offered / rate), and the others get 503. Inside (direct) nothing fails.
    def check(r: Report, f: Facts) -> tuple[float, float]:
        k = math.ceil(offered_rps / f.magnitudes["proxy_rate_rps"])
        sent = int(r["paths"]["proxy"]["steps"][0]["requests"])
        found = next(e for e in r["verdict"]["ranking"] if e["stage"] == "proxy")
        return float(found.get("failures_explained", 0.0)), sent * (1.0 - 1.0 / k)

    return check


def _hop(stage: str, hop: str) -> Check:
    # The hop's own time from its timing header (HAProxy's Tw+Tc, nginx's time before upstream)
    # against the paired end-to-end delta of the two paths, both at p50. At the tail the inner
    # path has tails of its own (it runs closed loop at full speed), so p50 is the clean compare.
    return lambda r, f: (p50_part(r, stage), hop_p50(r, hop))


def _queue(users: int) -> Check:
    # Closed loop, one request at a time: each request waits for the users - 1 ahead of it.
    def check(r: Report, f: Facts) -> tuple[float, float]:
        work = p50_part(r, "preprocessing") + p50_part(r, "inference")
        return explains(r, "server_concurrency"), (users - 1) * work

    return check


# CPU faults are budgets of CPU time (testbed.cpu_work): their wall time is the budget stretched
# by however long the workers waited for their core, which the kernel measures (schedstat).
# Bare, the same truth holds for preprocessing: the device wait no profile sees (a suspended
# coroutine, a thread parked in a socket read) is left to no stage, never given to preprocessing.
def _preprocessing(r: Report, f: Facts) -> tuple[float, float]:
    return p50_part(r, "preprocessing"), f.magnitudes["heavy_preprocessing_ms"] * f.stretch


def _inference(r: Report, f: Facts) -> tuple[float, float]:
    # The accelerator is a sleep (or a socket read): it does not stretch.
    m = f.magnitudes
    return p50_part(r, "inference"), m["slow_inference_ms"] * f.stretch + m["accelerator_ms"]


def _bare_inference(r: Report, f: Facts) -> tuple[float, float]:
    # Bare, no profile sees the device wait (a suspended coroutine, a thread parked in a socket
    # read): the analysis gives the model the wall time of the CPU it measured (psutil ×
    # schedstat) and leaves the rest of the work to no stage (verdict.server_wait_ms). So
    # inference explains the model's CPU budget, stretched. (At 1 request/s the server's idle
    # background CPU, spread over 8 requests, may cover the device wait: the 25 % allows it.)
    return p50_part(r, "inference"), f.magnitudes["slow_inference_ms"] * f.stretch


# Queueing faults predicted from first principles (closed loop of N users, Little's law: the
# N requests in flight take N / X each, X the throughput) with S, a lone request's time on the
# direct path, measured before the run.
def _bare_queue(users: int) -> Check:
    # One request at a time: X = 1 / S, so each request waits (N − 1) × S before its own S.
    return lambda r, f: (explains(r, "server_concurrency"), (users - 1) * f.service_ms)


def _bare_proxy(users: int) -> Check:
    # nginx passes proxy_rate_rps (≪ N / S, the server's own rate) and delays the rest: X is the
    # limit, so a request takes N / rate, of which all but S is nginx's.
    def check(r: Report, f: Facts) -> tuple[float, float]:
        return p50_part(r, "proxy"), users / f.magnitudes["proxy_rate_rps"] * 1e3 - f.service_ms

    return check


def _bare_lb(users: int, replicas: int = 2) -> Check:
    # haproxy lets maxconn requests per replica through: X = replicas × maxconn / S, so a
    # request takes N × S / (replicas × maxconn), of which all but S waits in haproxy's queue.
    def check(r: Report, f: Facts) -> tuple[float, float]:
        slots = replicas * f.magnitudes["lb_maxconn"]
        return p50_part(r, "load_balancer"), (users / slots - 1.0) * f.service_ms

    return check


QUEUE_USERS = 6

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("healthy", (), "none", paths=("direct", "proxy", "lb"),
                 targets={"target_p99": 250}, on_bare=True, on_grpc=True),
        # A starved client also parses its captures slowly: capture off keeps the run short.
        Scenario("client", ("starved_client",), "client", load={"rate": 40},
                 targets={"target_p99": 250}, options={"no_capture": True}),
        Scenario("network", ("net_delay",), "network", targets={"target_p99": 80},
                 magnitude=_network),
        # 3 % of the client's packets dropped: 9-21 of 500 requests (15-40 kB bodies) met a
        # retransmission timeout (≥ 200 ms) in 10 runs, more than the 6 above the p99 of 500.
        # Target between the healthy tail (~50 ms) and the RTO tail (~250 ms).
        Scenario("network_loss", ("net_loss",), "network", load={"rate": 50}, duration_s=10.0,
                 payload="image:160-320", targets={"target_p99": 120}, magnitude=_loss),
        # 10 Mbit/s (1.25 MB/s) past a 64 kB burst: 110-260 kB bodies take 40-150 ms to upload, at
        # 3 requests/s ≈ 40 % of the link. Healthy p99 ≈ 50 ms; the transfers dominate the tail.
        Scenario("network_bandwidth", ("net_bandwidth",), "network", load={"rate": 3},
                 duration_s=8.0, payload="image:600-1000", targets={"target_p99": 100},
                 magnitudes={"fastapi": {"net_bandwidth_mbit": 10.0},
                             "aiohttp": {"net_bandwidth_mbit": 10.0}},
                 magnitude=_bandwidth),
        # 6 users through nginx's 15 r/s: each request takes 6 / 15 s = 400 ms, ~350 ms of it in
        # nginx, against a lone request's ~40 ms. Target between.
        Scenario("proxy", ("proxy_queue",), "proxy", paths=("direct", "proxy"),
                 load={"concurrency": QUEUE_USERS}, targets={"target_p99": 100},
                 magnitude=_hop("proxy", "proxy"),
                 on_bare=True, on_grpc=True, bare_magnitude=_bare_proxy(QUEUE_USERS)),
        # Two replicas at maxconn 1: each request waits for (users - 2) / 2 services ahead of it,
        # so the lb tail is ~3 services (~100 ms aiohttp, ~130 ms fastapi) against a healthy
        # tail of ~1 service (37 / 46 ms on the proxy path): the target sits between, 1.4× off each.
        # The proxy turns requests away (503) instead of queueing them: at 40/s against nginx's
        # 15 r/s with no burst, 2 of every 3. It adds no latency to the requests it passes, so
        # only the missed error-rate target, explained by the proxy path failing where the
        # direct path does not, can name it.
        Scenario("proxy_rejects", ("proxy_queue",), "proxy", paths=("direct", "proxy"),
                 load={"rate": 40}, targets={"target_p99": 1000, "target_error_rate": 0.05},
                 magnitudes={"fastapi": {"proxy_burst": 0.0}, "aiohttp": {"proxy_burst": 0.0}},
                 magnitude=_rejections(40.0)),
        Scenario("load_balancer", ("lb_queue",), "load_balancer", paths=("proxy", "lb"),
                 load={"concurrency": QUEUE_USERS}, targets={"target_p99": 70},
                 magnitude=_hop("load_balancer", "load_balancer"),
                 on_bare=True, on_grpc=True, bare_magnitude=_bare_lb(QUEUE_USERS)),
        # 6 users on a one-at-a-time server: each waits 5 services (~200 ms) before its own.
        # On wsgi the one at a time is gunicorn's sync worker and its wait a socket read.
        Scenario("server_concurrency", ("single_concurrency",), "server_concurrency",
                 load={"concurrency": QUEUE_USERS}, magnitude=_queue(QUEUE_USERS),
                 on_bare=True, on_grpc=True, bare_magnitude=_bare_queue(QUEUE_USERS)),
        # wsgi: 60 ms of Pillow filters against ~40 ms of healthy request (35 ms device wait).
        Scenario("preprocessing", ("heavy_preprocessing",), "preprocessing",
                 load={"rate": 4}, targets={"target_p99": 80}, duration_s=6.0,
                 magnitudes={"fastapi": {"heavy_preprocessing_ms": 70.0},
                             "aiohttp": {"heavy_preprocessing_ms": 55.0},
                             "wsgi": {"heavy_preprocessing_ms": 60.0}},
                 magnitude=_preprocessing, on_bare=True, on_grpc=True,
                 bare_magnitude=_preprocessing),
        # Bare, a profile sees only the model's CPU; the device wait is idle time that nothing
        # ties to the model (see _bare_inference). The CPU must dominate that wait by ≥ 1.5×:
        # 60 / 50 / 60 ms (fastapi / aiohttp / wsgi) against 40 / 30 / 35 ms.
        Scenario("inference", ("slow_inference",), "inference", load={"rate": 5},
                 duration_s=5.0,
                 targets={"target_p99": 60},
                 magnitudes={"fastapi": {"slow_inference_ms": 40.0},
                             "aiohttp": {"slow_inference_ms": 35.0},
                             "fastapi-bare": {"slow_inference_ms": 60.0},
                             "aiohttp-bare": {"slow_inference_ms": 50.0},
                             "wsgi-bare": {"slow_inference_ms": 60.0}},
                 magnitude=_inference, on_bare=True, bare_magnitude=_bare_inference),
        # Low rate (issue 14): 1 request/s with ~150 ms of model CPU, one 8 s window: 8 requests,
        # 1.2 s of inference in all; a mostly idle server. Requests take ~190 ms against a
        # healthy ~45 ms; the target sits between.
        Scenario("inference_low_rate", ("slow_inference",), "inference", load={"rate": 1},
                 duration_s=8.0, targets={"target_p99": 100},
                 magnitudes={v: {"slow_inference_ms": 150.0}
                             for v in ("fastapi-bare", "aiohttp-bare", "wsgi-bare")},
                 on_instrumented=False, on_bare=True, bare_magnitude=_bare_inference),
        # OOM is decided from worker deaths, cgroup events and failures, never from timing
        # headers: CI runs it bare on all three stacks (the instrumented runs would repeat them;
        # bench_repeatability.py still runs it instrumented).
        Scenario("oom", ("oom",), "oom", load={"rate": 6}, payload="image:64-480",
                 targets={"target_p99": 1000, "target_error_rate": 0.01}, on_bare=True,
                 on_instrumented=False, on_grpc=True),
        Scenario("two_faults", ("slow_inference", "net_delay"), "inference",
                 load={"rate": 3}, targets={"target_p99": 120}, duration_s=5.0,
                 magnitudes={"fastapi": {"slow_inference_ms": 80.0, "net_delay_ms": 25.0},
                             "aiohttp": {"slow_inference_ms": 70.0, "net_delay_ms": 30.0}},
                 ranking_order=("inference", "network")),
    )
}  # fmt: skip


class CpuStretch:
    """How much the server's CPU work stretched in wall time: 1 + run-queue wait ÷ run time,
    summed over every thread of the server processes (``/proc/PID/task/TID/schedstat``)."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self.start = self._read()

    def _read(self) -> dict[tuple[int, int], tuple[int, int]]:
        out: dict[tuple[int, int], tuple[int, int]] = {}
        pids: set[int] = set()
        for root in self.roots:
            try:
                proc = psutil.Process(root)
                pids |= {root, *(c.pid for c in proc.children(recursive=True))}
            except psutil.Error:
                continue
        for pid in pids:
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                        run, wait, _ = (int(x) for x in fh.read().split())
                except (OSError, ValueError):
                    continue
                out[(pid, int(tid))] = (run, wait)
        return out

    def stretch(self) -> float:
        end = self._read()
        run = wait = 0
        for key, (r1, w1) in end.items():
            r0, w0 = self.start.get(key, (0, 0))
            run += r1 - r0
            wait += w1 - w0
        return 1.0 + wait / run if run > 0 else 1.0


def diagnose(tb: Testbed, scenario: Scenario, seed: int = 1, **overrides: Any) -> Report:
    """One diagnosis of ``scenario`` against a running testbed (client pinned to its core).

    Instrumented testbeds are diagnosed with the aiohttp engine (as the matrix always was), bare
    ones with the default engine, as ``pathprobe diagnose`` runs without ``--engine``.
    """
    if tb.client_cpu is not None:
        os.sched_setaffinity(0, {tb.client_cpu})
    # gRPC: the engine follows the grpc:// URLs; the image goes in as the model's BYTES input.
    urls = tb.grpc_urls if tb.grpc else {p: u + "/predict/image" for p, u in tb.urls.items()}
    engine = {"engine": "aiohttp"} if tb.instrumented and not tb.grpc else {}
    # The reports are written (rendering them is part of the run) and then removed with the dir.
    with tempfile.TemporaryDirectory(prefix=f"pp-matrix-{scenario.name}-") as out:
        raw: dict[str, Any] = {
            "path": {p: urls[p] for p in scenario.paths},
            "payload": scenario.payload,
            "duration": scenario.duration_s,
            "warmup": 0.5,
            "server_pid": list(tb.server_pids),
            "seed": seed,
            # The latency-floor calibration feeds no verdict (it is a report section, tested in
            # test_calibration_run.py): 0.7 s per case saved.
            "no_calibrate": True,
            **engine,
            "out": out,
            **scenario.load,
            **scenario.targets,
            **scenario.options,
            **overrides,
        }
        report, _code = run_diagnosis(build_config(raw), ["fault-matrix", scenario.name])
        return report


def make_testbed(
    scenario: Scenario,
    stack: str,
    scale: float = 1.0,
    instrumented: bool = True,
    grpc: bool = False,
) -> Testbed:
    """The testbed of ``scenario`` on ``stack``; ``scale`` multiplies the fault magnitudes."""
    mags = scenario.magnitudes_for(Variant(stack, instrumented, grpc))
    if scale != 1.0:
        mags = {k: v * scale for k, v in mags.items()}
    return Testbed(faults=list(scenario.faults), stack=stack, magnitudes=mags,
                   instrumented=instrumented, grpc=grpc)  # fmt: skip


def lone_request_ms(tb: Testbed, side_px: int = 64, requests: int = 7) -> float:
    """Median wall time of ``requests`` sequential image requests on the direct path, after one
    to warm up: the service time S of a request that waits for nothing. Plain urllib, a new
    connection each (or a bare grpcio channel on a gRPC testbed), so nothing of pathprobe's
    client is in it."""
    pixels = np.random.default_rng(5).integers(0, 256, (side_px, side_px, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    if tb.grpc:
        return _lone_grpc_ms(tb.grpc_urls["direct"], buf.getvalue(), requests)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    times: list[float] = []
    for _ in range(requests + 1):
        request = urllib.request.Request(tb.urls["direct"] + "/predict/image", data=buf.getvalue(),
                                         headers={"Content-Type": "image/jpeg"})  # fmt: skip
        started = time.perf_counter()
        with opener.open(request, timeout=30) as resp:
            resp.read()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times[1:])


def _lone_grpc_ms(url: str, jpeg: bytes, requests: int) -> float:
    """As :func:`lone_request_ms` over gRPC: ModelInfer with the JPEG as its BYTES input."""
    import grpc

    from pathprobe.grpc_url import parse_grpc_url
    from pathprobe.load.oip import InferBody, file_tensor, model_prefix, serialize

    target = parse_grpc_url(url)
    # As the engine builds it (the model's fields prepended); only the timing is grpcio's own.
    body = model_prefix(target.model, target.version) + serialize(
        InferBody(inputs=(file_tensor(jpeg, "image", "BYTES"),))
    )
    times: list[float] = []
    with grpc.insecure_channel(target.address) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for _ in range(requests + 1):
            started = time.perf_counter()
            infer(body, timeout=30)
            times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times[1:])


def describe(report: Report) -> str:
    v = report["verdict"]
    rank = ", ".join(f"{r['stage']} {r['explains_ms']:.0f}" for r in v["ranking"][:4])
    return f"{v['bottleneck']} [{rank}] — {v['summary']}"
