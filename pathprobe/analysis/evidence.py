"""Evidence per stage from the probes' window summaries (pure: JSON dicts in, numbers out).

Each reader takes the probe sections of report.json (``run.probes``) and answers for one
(path, step) window; every reader tolerates a probe that was unavailable (returns ``None``/empty
and says why in ``missing``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pathprobe.analysis.model_split import ModelPhases
from pathprobe.model.records import ErrorKind, Records, completed, error_kinds
from pathprobe.model.results import Tally

#: Retransmission evidence: at least this share of data segments and this many segments. On
#: loopback and healthy LANs the rate is 0; 1 % of segments lost means ~1 in 20 requests of ~5
#: segments meets a loss, i.e. the p95 and beyond feel it.
RETRANS_RATE_MIN = 0.01
RETRANS_COUNT_MIN = 5
#: RTT under load against the idle baseline: congestion (a queue in the network) when the RTT at
#: least doubled *and* grew by 5 ms (below 5 ms the rise changes no target on its own).
RTT_RISE_FACTOR = 2.0
RTT_RISE_MIN_MS = 5.0
#: Transient failures that OOM kills produce at the client: the connection dies mid-request (reset,
#: truncated response) or the proxy in front answers 502/503/504. Over gRPC both arrive as
#: UNAVAILABLE ("Socket closed"; a proxy's 502/503/504 maps to it, gRPC's HTTP-status mapping).
OOM_ERROR_KINDS = frozenset(
    {ErrorKind.RESET, ErrorKind.PROTOCOL, ErrorKind.HTTP_5XX, ErrorKind.REFUSED,
     ErrorKind.GRPC_UNAVAILABLE}
)  # fmt: skip
#: Usage at or above this share of the cgroup limit is "at the limit": the kernel reclaims, then
#: kills, within the last few percent (page cache is squeezed out first).
MEMORY_NEAR_LIMIT = 0.95
#: Without any memory evidence, failures that strongly prefer large inputs are still suspicious:
#: failure rate among the largest quarter of payloads at least this many times the smallest's.
SIZE_FAILURE_RATIO = 3.0


def window(probes: Mapping[str, Any], name: str, path: str, step: int) -> dict[str, Any] | None:
    """The window summary of probe ``name`` for (path, step), or None."""
    section = probes.get(name) or {}
    for w in section.get("windows") or []:
        if w.get("path") == path and w.get("step") == step:
            return dict(w)
    return None


@dataclass
class NetworkEvidence:
    rtt_ms: float = 0.0  # one round trip, the best estimate available
    rtt_source: str = "none"  # capture | idle-connect | client-connect | none
    rtt_load_p50_ms: float | None = None
    idle_rtt_p50_ms: float | None = None
    handshakes: int = 0
    retrans_rate: float | None = None
    retransmissions: int = 0
    capture_drops: int | None = None
    capture_available: bool = False
    wire_ttfb_ms: dict[str, Any] | None = None
    retrans_stalls: dict[str, Any] | None = None  # tcpflows' per-exchange loss stalls
    uploads: dict[str, Any] | None = None  # tcpflows' request sizes and wire upload times
    missing: str | None = None

    def without_exchanges(self) -> None:
        """Forget what the capture framed per request/response exchange (wire TTFB, uploads).

        On HTTP/2 (gRPC) the streams in flight on a connection interleave their frames, so an
        "exchange" the wire sees is a burst of several requests, not one: its upload and first-
        byte times would charge waiting in the server to the network. What holds per connection
        stays: the round trip, retransmissions and the stalls they caused."""
        self.wire_ttfb_ms = None
        self.uploads = None

    @property
    def congested(self) -> bool:
        if self.rtt_load_p50_ms is None or self.idle_rtt_p50_ms is None:
            return False
        return (
            self.rtt_load_p50_ms >= RTT_RISE_FACTOR * self.idle_rtt_p50_ms
            and self.rtt_load_p50_ms - self.idle_rtt_p50_ms >= RTT_RISE_MIN_MS
        )

    @property
    def lossy(self) -> bool:
        return (
            self.retrans_rate is not None
            and self.retrans_rate >= RETRANS_RATE_MIN
            and self.retransmissions >= RETRANS_COUNT_MIN
        )


def network_evidence(
    probes: Mapping[str, Any], path: str, step: int, records: Records
) -> NetworkEvidence:
    """RTT (capture handshakes under load, else idle connects, else the client's own connects)."""
    ev = NetworkEvidence()
    section = probes.get("network") or {}
    idle = (section.get("idle_rtt_ms") or {}).get(path) or {}
    if idle.get("p50") is not None:
        ev.idle_rtt_p50_ms = float(idle["p50"])
    w = window(probes, "network", path, step)
    if w is not None and w.get("available"):
        ev.capture_available = True
        rtt = w.get("rtt_ms") or {}
        ev.handshakes = int(rtt.get("count") or 0)
        if rtt.get("p50") is not None:
            ev.rtt_load_p50_ms = float(rtt["p50"])
        ev.retrans_rate = float(w.get("retransmission_rate") or 0.0)
        ev.retransmissions = int(w.get("retransmissions") or 0)
        drops = w.get("capture_drops")
        ev.capture_drops = None if drops is None else int(drops)
        if not ev.capture_drops:  # a capture that dropped packets misses some requests' bytes
            ev.wire_ttfb_ms = w.get("wire_ttfb_ms")
            # (... and would show holes that are only its own drops.)
            ev.retrans_stalls = w.get("retrans_stalls")
            ev.uploads = w.get("uploads")
    else:
        ev.missing = (w or {}).get("reason") or section.get("reason") or "no packet capture"
    # Three handshakes make a median that one slow SYN/ACK cannot move.
    if ev.rtt_load_p50_ms is not None and ev.handshakes >= 3:
        ev.rtt_ms, ev.rtt_source = ev.rtt_load_p50_ms, "capture"
    elif ev.idle_rtt_p50_ms is not None:
        ev.rtt_ms, ev.rtt_source = ev.idle_rtt_p50_ms, "idle-connect"
    else:
        connects = records["connect_ns"][records["connect_ns"] >= 0] / 1e6
        if connects.size:
            # The client's own connect includes its event loop's delay: take a low quantile.
            ev.rtt_ms, ev.rtt_source = float(np.percentile(connects, 10)), "client-connect"
    return ev


@dataclass
class ServerEvidence:
    available: bool = False
    missing: str | None = None
    cores_available: float | None = None
    cores_used: float | None = None
    busiest_worker_percent: float | None = None
    workers: int = 0
    busy_workers_mean: float | None = None  # processes above the sampler's busy CPU, on average
    stage_share: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    deaths: int = 0
    oom_killed: int = 0
    oom_events: int = 0
    kernel_oom_lines: int = 0
    memory_max_bytes: int | None = None
    memory_limit_bytes: int | None = None
    window_s: float | None = None
    cpu_ms_per_request: float | None = None
    requests: int = 0  # requests the window sent
    busy_samples: int = 0  # profile samples not idle (what stage_share divides)
    cpu_share_of_work: float | None = None  # without Server-Timing: see set_work
    # Wall time of the server's CPU work over its CPU time: 1 + run-queue wait / CPU (schedstat).
    cpu_stretch: float = 1.0
    # The model's own statistics for this window (Triton's extension, probes.model_stats), and
    # what they split (see analysis/model_split.py): the window's mean unsplit server time per
    # request, and whether its waiting was already cut out of it (the work model).
    model_phases: ModelPhases | None = None
    unsplit_mean_ms: float = 0.0
    queue_cut_out: bool = False

    def set_work(self, work_ms: npt.NDArray[np.float64] | None) -> None:
        """The share of the server's uncontended work (ms per request, an array) its CPU did:
        the wall time of its CPU per request (CPU × stretch: waiting for a core is part of
        computing) over the mean work, at most 1 (a multi-threaded kernel may use more CPU than
        wall time). Unknown without the server's CPU."""
        if self.cpu_ms_per_request is None or work_ms is None or not work_ms.size:
            return
        mean = float(np.mean(work_ms))
        if mean > 0:
            on_cpu = self.cpu_ms_per_request * self.cpu_stretch
            self.cpu_share_of_work = min(on_cpu / mean, 1.0)

    def set_unsplit(self, server_ms: npt.NDArray[np.float64] | None, queue_cut_out: bool) -> None:
        """What the model's statistics split: the mean unsplit server time per request, and
        whether a work model already cut the waiting out of it."""
        if server_ms is not None and server_ms.size:
            self.unsplit_mean_ms = float(np.mean(server_ms))
        self.queue_cut_out = queue_cut_out

    def set_requests(self, n: int) -> None:
        """CPU per request from the window's CPU seconds and its ``n`` requests."""
        self.requests = n
        if self.cores_used is not None and self.window_s and n > 0:
            self.cpu_ms_per_request = self.cores_used * self.window_s * 1000.0 / n

    @property
    def utilisation(self) -> float | None:
        """CPU used ÷ cores available, in [0, 1]; None when unknown."""
        if self.cores_used is None or not self.cores_available:
            return None
        return float(min(max(self.cores_used / self.cores_available, 0.0), 1.0))

    @property
    def memory_evidence(self) -> bool:
        """The kernel or the cgroup says memory ran out, or usage reached its limit.

        Worker deaths alone are not memory evidence (a crash, a deploy); they count with
        failures that prefer large inputs (see
        :func:`pathprobe.analysis.findings.oom.oom_evidence`).
        """
        near_limit = bool(
            self.memory_max_bytes
            and self.memory_limit_bytes
            and self.memory_max_bytes >= MEMORY_NEAR_LIMIT * self.memory_limit_bytes
        )
        return self.oom_killed > 0 or self.oom_events > 0 or self.kernel_oom_lines > 0 or near_limit


def server_evidence(probes: Mapping[str, Any], path: str, step: int) -> ServerEvidence:
    ev = ServerEvidence()
    w = window(probes, "server", path, step)
    if w is None or not w.get("available"):
        section = probes.get("server") or {}
        ev.missing = (w or {}).get("reason") or section.get("reason") or "no server probe"
        return ev
    ev.available = True
    window_s = float(w.get("window_ms") or 0.0) / 1000.0
    cpu_s = w.get("cpu_seconds_total")
    if cpu_s is not None and window_s > 0:
        ev.cores_used = float(cpu_s) / window_s
        ev.window_s = window_s
        wait_s = w.get("runqueue_wait_seconds_total")
        if wait_s is not None and float(cpu_s) > 0:
            ev.cpu_stretch = 1.0 + float(wait_s) / float(cpu_s)
    cores = w.get("cpu_cores_available")
    ev.cores_available = None if cores is None else float(cores)
    workers = w.get("workers") or []
    ev.workers = len(workers)
    busiest = [
        float(x["cpu_percent_mean"]) for x in workers if x.get("cpu_percent_mean") is not None
    ]
    ev.busiest_worker_percent = max(busiest) if busiest else None
    busy_mean = w.get("busy_workers_mean")
    ev.busy_workers_mean = None if busy_mean is None else float(busy_mean)
    ev.samples = int(w.get("samples") or 0)
    counts = w.get("stage_samples") or {}
    busy = [int(v) for k, v in counts.items() if k != "idle"]
    ev.busy_samples = sum(busy) if counts else ev.samples
    ev.stage_share = {k: float(v) for k, v in (w.get("stage_share") or {}).items()}
    deaths = w.get("worker_deaths") or []
    ev.deaths = len(deaths)
    ev.oom_killed = sum(1 for d in deaths if d.get("oom_killed"))
    cg = w.get("cgroup") or {}
    if cg.get("available", True):
        ev.oom_events = int(cg.get("oom_kill_events") or 0) + int(cg.get("oom_events") or 0)
        ev.memory_max_bytes = cg.get("memory_usage_max_bytes")
        ev.memory_limit_bytes = cg.get("memory_limit_bytes")
    ev.kernel_oom_lines = len(w.get("kernel_oom_lines") or [])
    return ev


@dataclass
class FailureEvidence:
    requests: int = 0
    failures: int = 0
    oom_like: int = 0  # failures of the kinds an OOM kill produces
    small_rate: float | None = None  # failure rate, smallest quarter of payloads
    large_rate: float | None = None  # ... largest quarter
    failed_bytes_median: float | None = None
    all_bytes_median: float | None = None

    @property
    def size_correlated(self) -> bool:
        if self.large_rate is None or self.small_rate is None or self.oom_like < 5:
            return False
        return self.large_rate >= SIZE_FAILURE_RATIO * max(self.small_rate, 1e-3)


def failure_evidence(records: Records, tally: Tally | None = None) -> FailureEvidence:
    """Failures of one window and how they depend on payload size.

    With the window's ``tally`` the counts are exact even when the records are a thinned sample
    (the size correlation then comes from the sample).
    """
    ev = FailureEvidence()
    kinds = error_kinds(records)
    keep = kinds != ErrorKind.CANCELLED
    recs, kinds = records[keep], kinds[keep]
    ev.requests = int(len(recs))
    if not len(recs):
        return ev
    failed = ~completed(recs) | (recs["status"] >= 500)
    ev.failures = int(failed.sum())
    oom_like = np.isin(kinds, [int(k) for k in OOM_ERROR_KINDS])
    ev.oom_like = int(oom_like.sum())
    if tally is not None:
        by_kind = tally.errors_by_kind
        ev.requests = tally.requests
        ev.failures = sum(n for kind, n in by_kind.items() if kind != ErrorKind.HTTP_4XX)
        ev.oom_like = sum(by_kind.get(int(kind), 0) for kind in OOM_ERROR_KINDS)
    size = recs["bytes_out"].astype(np.float64)
    if size.max() > size.min():
        lo, hi = np.quantile(size, [0.25, 0.75])
        small, large = size <= lo, size >= hi
        if small.any() and large.any():
            ev.small_rate = float(oom_like[small].mean())
            ev.large_rate = float(oom_like[large].mean())
    if ev.oom_like:
        ev.failed_bytes_median = float(np.median(size[oom_like]))
        ev.all_bytes_median = float(np.median(size))
    return ev


def share_text(share: Mapping[str, float], keys: Sequence[str]) -> str:
    return ", ".join(f"{k} {share.get(k, 0.0):.0%}" for k in keys if k in share)
