"""Per-request decomposition of latency into where the time went (pure, arrays in, arrays out).

For one (path, step), every completed request's latency (intended send → last byte) is cut into
components that add up to it (design.md §4 — attribution works on these, request by request,
because percentiles do not add):

* ``client`` — schedule slip: actual − intended send;
* ``pool_wait`` — waiting for a pooled connection (charged later to whoever held the connections);
* ``network`` — the TCP connect of a new connection, one round trip for the exchange, the upload
  time of the request body where bandwidth shows (see :func:`transfer_slope_ms_per_byte`), the
  response body's transfer after its first byte, and the time lost segments held the exchange up
  (see :func:`loss_stalls_ms`);
* one component per **hop** on the path (``proxy``, ``lb``…): the hop's own time. From the hop's
  timing header when present (nginx ``$upstream_header_time``, HAProxy ``Tr``: the time *behind*
  the hop, so the hop's own share is what it saw minus what was behind it), else from the
  quantile-matched difference against the next inner path (the k-th slowest request here minus
  the k-th slowest there — the coupling under which "Δp99 = p99(outer) − p99(inner)");
* the **server**: Server-Timing metrics mapped to ``preprocessing`` / ``inference`` /
  ``server_other`` by name, and ``server_queue`` — server time outside every metric (waiting for a
  worker, framework). Without Server-Timing the server's time stays ``server`` (unsplit).

Clipping keeps every component ≥ 0 and their sum equal to the latency: a header that claims more
than the time left is capped at the time left.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pathprobe.analysis.server_work import WorkModel
from pathprobe.model.records import ErrorKind, Records, completed

FloatArray = npt.NDArray[np.float64]
NS_PER_MS = 1e6

#: Server-Timing metric names → stage. Names are the server's own, so the rules are by meaning:
#: input handling words → preprocessing; model words → inference. Anything else is server_other.
_PRE_METRIC = re.compile(
    r"pre_?proc|^prep|decod|resiz|transform|featur|tokeni|normali|pars|load_?im|augment|input|crop",
    re.IGNORECASE,
)
_INF_METRIC = re.compile(
    r"infer|model|predict|forward|scor|classif|generat|embed|gpu|device|onnx|torch|session_?run",
    re.IGNORECASE,
)
#: Envelope metrics that span the others (adding them would count time twice).
_ENVELOPE_METRIC = re.compile(r"^(total|app|server|handler|request|all|response|e2e)$", re.I)

#: Per hop name, the per-request header keys (from hopheaders.per_request_hop_times) that give the
#: time *behind* the hop, in order of preference.
BEHIND_KEYS: dict[str, tuple[str, ...]] = {
    "proxy": ("upstream_ms", "envoy_upstream_ms"),
    "lb": ("lb_response_ms",),
}


def metric_stage(name: str) -> str | None:
    """The stage a Server-Timing metric belongs to; None for envelope metrics."""
    if _ENVELOPE_METRIC.match(name):
        return None
    if _PRE_METRIC.search(name):
        return "preprocessing"
    if _INF_METRIC.search(name):
        return "inference"
    return "server_other"


@dataclass
class Decomposition:
    """Component arrays (ms) of the completed requests of one (path, step), aligned with ``seq``."""

    path: str
    seq: npt.NDArray[np.int64]
    total_ms: FloatArray
    components: dict[str, FloatArray] = field(default_factory=dict)
    # Requests that failed: their seq, elapsed ms (intended → failure) and payload bytes.
    failed_seq: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    failed_ms: FloatArray = field(default_factory=lambda: np.zeros(0))
    hop_source: dict[str, str] = field(default_factory=dict)  # hop → "header" | "delta" | "none"
    has_server_timing: bool = False
    # Without Server-Timing: the uncontended work that split server time into work and waiting.
    work_model: WorkModel | None = None

    def check(self) -> float:
        """Largest |sum of components − total| (ms); 0 up to rounding."""
        if self.total_ms.size == 0:
            return 0.0
        s = np.sum(np.stack(list(self.components.values())), axis=0)
        return float(np.max(np.abs(s - self.total_ms)))


def transfer_slope_ms_per_byte(bytes_moved: FloatArray, residual_ms: FloatArray) -> float:
    """Robust slope of residual time against bytes moved (Theil–Sen), ≥ 0; 0 when undetermined.

    ``residual_ms`` is latency with the server's own measured time taken out; what still grows with
    body size is transfer time (bandwidth). Theil–Sen (the median of pairwise slopes) ignores the
    queueing outliers that would drag a least-squares fit. Needs a spread of sizes: the largest
    body at least twice the smallest, else the slope is not identifiable.
    """
    x = np.asarray(bytes_moved, np.float64)
    y = np.asarray(residual_ms, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 10 or x.min() <= 0 or x.max() < 2 * x.min():
        return 0.0
    if x.size > 200:  # pairwise slopes grow as n²: a deterministic thinning keeps it ~20k pairs
        keep = np.linspace(0, x.size - 1, 200).astype(np.int64)
        x, y = x[keep], y[keep]
    i, j = np.triu_indices(x.size, k=1)
    dx = x[j] - x[i]
    good = np.abs(dx) > 0.25 * np.median(x)  # only pairs whose sizes differ enough to tell
    if good.sum() < 10:
        return 0.0
    slope = float(np.median((y[j] - y[i])[good] / dx[good]))
    return max(slope, 0.0)


def quantile_matched(outer_total: FloatArray, inner_total: FloatArray) -> FloatArray:
    """Per outer request: Q_inner at that request's rank quantile in the outer distribution."""
    n = outer_total.size
    if n == 0 or inner_total.size == 0:
        return np.full(n, np.nan)
    ranks = np.argsort(np.argsort(outer_total, kind="stable"), kind="stable")
    q = (ranks + 0.5) / n * 100.0
    return np.asarray(np.percentile(inner_total, q), np.float64)


def decompose(
    path: str,
    records: Records,
    hop_times: Mapping[str, FloatArray],
    hops_outer_first: Sequence[str],
    *,
    rtt_ms: float,
    slope_ms_per_byte: float = 0.0,
    inner_totals: Mapping[str, FloatArray] | None = None,
    wire_ttfb_ms: Mapping[str, Any] | None = None,
    retrans_stalls: Mapping[str, Any] | None = None,
    uploads: Mapping[str, Any] | None = None,
) -> Decomposition:
    """Cut the latency of each completed request of ``records`` into components (module doc).

    ``records`` are the measured records of the window; ``hop_times`` the per-request header
    arrays aligned with them (``server_timing.<metric>``, ``upstream_ms``, ``lb_response_ms``…);
    ``hops_outer_first`` the hops on this path (``["lb", "proxy"]`` for the lb path);
    ``inner_totals[hop]`` the latencies of the path just inside ``hop``, for the header-less
    fallback.
    """
    done = completed(records)
    ok = records[done]
    failed = records[~done & (records["error"] != ErrorKind.CANCELLED)]  # cancelled: no verdict
    total = (ok["end_ns"] - ok["intended_ns"]) / NS_PER_MS
    comps, rest = _client_and_network(
        ok, rtt_ms, slope_ms_per_byte, wire_ttfb_ms, retrans_stalls, uploads
    )
    hop_comps, hop_source, server = _hop_components(
        total, rest, hop_times, hops_outer_first, inner_totals, done
    )
    comps.update(hop_comps)
    server_comps, has_st = _server_components(server, hop_times, done)
    comps.update(server_comps)
    return Decomposition(
        path=path,
        seq=ok["seq"].astype(np.int64),
        total_ms=np.asarray(total, np.float64),
        components={k: np.asarray(v, np.float64) for k, v in comps.items()},
        failed_seq=failed["seq"].astype(np.int64),
        failed_ms=np.asarray((failed["end_ns"] - failed["intended_ns"]) / NS_PER_MS, np.float64),
        hop_source=hop_source,
        has_server_timing=has_st,
    )


def _client_and_network(
    ok: Records,
    rtt_ms: float,
    slope_ms_per_byte: float,
    wire_ttfb_ms: Mapping[str, Any] | None,
    retrans_stalls: Mapping[str, Any] | None,
    uploads: Mapping[str, Any] | None,
) -> tuple[dict[str, FloatArray], FloatArray]:
    """The ``client``, ``pool_wait`` and ``network`` components of the completed requests ``ok``,
    and the time left from the request going on the wire to its first byte (hops and server)."""
    slip = np.maximum((ok["actual_ns"] - ok["intended_ns"]) / NS_PER_MS, 0.0)
    wait = np.maximum(ok["conn_wait_ns"], 0) / NS_PER_MS
    connect = np.maximum(ok["connect_ns"], 0) / NS_PER_MS
    tls = np.maximum(ok["tls_ns"], 0) / NS_PER_MS
    # Records count TTFB from when a pooled connection was free (model/records.py); here it is
    # needed from the dispatch, like end − actual, so the pool wait is added back.
    ttfb = (
        np.where(
            ok["ttfb_ns"] >= 0,
            ok["ttfb_ns"] + np.maximum(ok["conn_wait_ns"], 0),
            ok["end_ns"] - ok["actual_ns"],
        )
        / NS_PER_MS
    )
    body = np.maximum((ok["end_ns"] - ok["actual_ns"]) / NS_PER_MS - ttfb, 0.0)
    # Time from the request going on the wire to its first response byte.
    rest = np.maximum(ttfb - wait - connect - tls, 0.0)
    moved = (ok["bytes_out"] + ok["bytes_in"]).astype(np.float64)
    upload = slope_ms_per_byte * moved
    on_wire = wire_upload_ms(ok["bytes_out"].astype(np.float64), uploads)
    if on_wire is not None:  # measured, not modelled: the capture's uploads of the same size
        upload = on_wire
    # Lost segments first: the wire TTFB below never contains their stalls, the application's
    # time does.
    stalled = loss_stalls_ms(rest, retrans_stalls)
    rest = rest - stalled
    # The client's own overhead: what the application saw beyond what the wire saw at the same
    # rank (the capture's request-sent → response-started distribution). It would otherwise land
    # in the outermost hop (or the server's queue on the direct path).
    overhead = np.zeros_like(rest)
    wire_at = wire_at_ranks(rest, wire_ttfb_ms)
    if wire_at is not None:
        overhead = np.clip(rest - upload - wire_at, 0.0, rest)
    rest = rest - overhead
    exchange = np.minimum(rest, rtt_ms + upload)
    rest = rest - exchange
    comps: dict[str, FloatArray] = {
        "client": slip + overhead,
        "pool_wait": wait,
        "network": connect + tls + exchange + body + stalled,
    }
    return comps, rest


def _hop_components(
    total: FloatArray,
    rest: FloatArray,
    hop_times: Mapping[str, FloatArray],
    hops_outer_first: Sequence[str],
    inner_totals: Mapping[str, FloatArray] | None,
    done: npt.NDArray[np.bool_],
) -> tuple[dict[str, FloatArray], dict[str, str], FloatArray]:
    """Each hop's own time, outermost first, cut from ``rest``: (components, their sources, the
    time left behind the last hop — the server's)."""
    comps: dict[str, FloatArray] = {}
    hop_source: dict[str, str] = {}
    current = rest.copy()
    for hop in hops_outer_first:
        behind = _first_present(hop_times, BEHIND_KEYS.get(hop, ()), done)
        own = np.zeros_like(current)
        if behind is not None and np.isfinite(behind).mean() >= 0.5:
            have = np.isfinite(behind)
            inner_t = np.where(have, np.minimum(current, np.maximum(behind, 0.0)), current)
            own = np.where(have, current - inner_t, 0.0)
            current = inner_t
            hop_source[hop] = "header"
        elif inner_totals is not None and hop in inner_totals and inner_totals[hop].size:
            matched = quantile_matched(total, inner_totals[hop])
            own = np.clip(total - matched, 0.0, current)
            current = current - own
            hop_source[hop] = "delta"
        else:
            hop_source[hop] = "none"
        comps[hop] = own
    return comps, hop_source, current


def _server_components(
    server: FloatArray, hop_times: Mapping[str, FloatArray], done: npt.NDArray[np.bool_]
) -> tuple[dict[str, FloatArray], bool]:
    """The server's time split by its Server-Timing metrics (and ``server_queue``, the rest), or
    unsplit as ``server``; and whether Server-Timing was there."""
    server_timing = {
        k.removeprefix("server_timing."): v
        for k, v in hop_times.items()
        if k.startswith("server_timing.")
    }
    st_stage: dict[str, FloatArray] = {}
    for name, arr in server_timing.items():
        stage = metric_stage(name)
        if stage is None:
            continue
        vals = np.nan_to_num(np.asarray(arr, np.float64)[done], nan=0.0)
        st_stage[stage] = st_stage.get(stage, np.zeros_like(server)) + np.maximum(vals, 0.0)
    has_st = bool(st_stage) and any(float(v.sum()) > 0 for v in st_stage.values())
    if not has_st:
        return {"server": server}, False
    comps: dict[str, FloatArray] = {}
    st_sum = np.sum(np.stack(list(st_stage.values())), axis=0)
    # A server's own timers cannot exceed the time we saw behind the last hop; scale down.
    scale = np.where(
        st_sum > server,
        np.divide(server, st_sum, where=st_sum > 0, out=np.ones_like(st_sum)),
        1.0,
    )
    for stage, arr in st_stage.items():
        comps[stage] = arr * scale
    comps["server_queue"] = server - st_sum * scale
    return comps, True


#: The capture's wire TTFB distribution is used for the client-overhead correction only with at
#: least this many samples (its p99 then rests on more than a single request).
MIN_WIRE_SAMPLES = 20


#: Uploads the capture timed are direct measurements, each one good on its own (unlike a rank
#: distribution, whose tail needs many): a few suffice to interpolate by size. At 2 requests/s
#: over 8 s there are 16, and leaving them unused gave a slow upload's time to the proxy whose
#: timing header started the clock when the request's first byte arrived.
MIN_UPLOAD_SAMPLES = 3


def wire_upload_ms(bytes_out: FloatArray, uploads: Mapping[str, Any] | None) -> FloatArray | None:
    """Per request, the upload time the capture saw for requests of its size (None without
    enough uploads). Under a bandwidth limit upload time grows with size, so requests are matched
    to exchanges by size (interpolated between the sizes seen)."""
    if not uploads or int(uploads.get("count") or 0) < MIN_UPLOAD_SAMPLES:
        return None
    sizes = np.asarray(uploads.get("bytes") or [], np.float64)
    times = np.asarray(uploads.get("ms") or [], np.float64)
    if sizes.size == 0 or sizes.size != times.size:
        return None
    return np.asarray(np.interp(bytes_out, sizes, times), np.float64)


def loss_stalls_ms(rest: FloatArray, stalls: Mapping[str, Any] | None) -> FloatArray:
    """Per request, the time lost segments held it up, taken out of ``rest`` (ms).

    The capture measures stalls per exchange but cannot name the request of each (it sees
    connections, not sequence numbers). The share of exchanges that stalled is applied to these
    requests, and the stalls go to the requests with the most unexplained time, longest to
    longest: a retransmission timeout (≥ 200 ms on Linux) dwarfs the rest of a request's
    variation, so the stalled requests are the slowest ones. Never more than a request's ``rest``.
    """
    out = np.zeros_like(rest)
    if not stalls or rest.size == 0:
        return out
    exchanges, stalled = int(stalls.get("exchanges") or 0), int(stalls.get("stalled") or 0)
    values = np.asarray(stalls.get("stalls_ms") or [], np.float64)
    if exchanges < MIN_WIRE_SAMPLES or stalled <= 0 or values.size == 0:
        return out
    m = min(int(round(stalled / exchanges * rest.size)), rest.size)
    if m == 0:
        return out
    values = np.sort(values)[::-1]
    picked = values[(np.arange(m) * values.size) // m]  # the stalls spread over m requests
    slowest = np.argsort(-rest, kind="stable")[:m]
    out[slowest] = np.minimum(picked, rest[slowest])
    return out


def wire_at_ranks(rest: FloatArray, dist: Mapping[str, Any] | None) -> FloatArray | None:
    """Per request, the wire TTFB of the same rank in the capture's distribution (None without a
    usable one). With the capture's sorted values (``ranked_ms``) the k-th slowest request meets
    the k-th slowest exchange; from ``{p50, p90, p99}`` knots only an interpolation, too low where
    the tail jumps between knots (as retransmission timeouts make it)."""
    if rest.size == 0:
        return None
    ranks = np.argsort(np.argsort(rest, kind="stable"), kind="stable")
    ranked = np.asarray((dist or {}).get("ranked_ms") or [], np.float64)
    if int((dist or {}).get("count") or 0) >= MIN_WIRE_SAMPLES and ranked.size:
        index = ((ranks + 0.5) / rest.size * ranked.size).astype(np.int64)
        return np.asarray(ranked[np.minimum(index, ranked.size - 1)], np.float64)
    knots = wire_quantiles(dist)
    if knots is None:
        return None
    return np.asarray(np.interp((ranks + 0.5) / rest.size * 100.0, knots[0], knots[1]))


def wire_quantiles(dist: Mapping[str, Any] | None) -> tuple[list[float], list[float]] | None:
    """(percentiles, ms) knots of a ``{p50, p90, p99, count}`` distribution for interpolation."""
    if not dist or int(dist.get("count") or 0) < MIN_WIRE_SAMPLES:
        return None
    knots = [(q, dist.get(k)) for q, k in ((50.0, "p50"), (90.0, "p90"), (99.0, "p99"))]
    if any(v is None for _, v in knots):
        return None
    qs = [0.0] + [q for q, _ in knots] + [100.0]
    vs = [float(knots[0][1])] + [float(v) for _, v in knots] + [float(knots[-1][1])]  # type: ignore[arg-type]
    return qs, vs


def _first_present(
    hop_times: Mapping[str, FloatArray], keys: Sequence[str], done: npt.NDArray[np.bool_]
) -> FloatArray | None:
    for key in keys:
        arr = hop_times.get(key)
        if arr is not None:
            return np.asarray(arr, np.float64)[done]
    return None
