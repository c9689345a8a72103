"""Per (path, step) summaries of the load's own records: the ``paths.*.steps[]`` of report.json."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from hdrh.histogram import HdrHistogram

from pathprobe.analysis.stats import (
    LATENCY_PERCENTILES,
    log_histogram,
    percentile_summary,
    quick_summary,
)
from pathprobe.model.histograms import percentile_ns
from pathprobe.model.records import ErrorKind, Records, completed, error_kinds, is_error
from pathprobe.model.results import StepResult, Tally, measured, tally_of

NS_PER_MS = 1e6
TIMELINE_MAX_POINTS = 300
PAYLOAD_SIZE_BUCKETS = 6


def latency_ms(records: Records) -> npt.NDArray[np.float64]:
    """Intended send → last byte (coordinated-omission safe), ms."""
    return np.asarray((records["end_ns"] - records["intended_ns"]) / NS_PER_MS, dtype=np.float64)


def service_ms(records: Records) -> npt.NDArray[np.float64]:
    """Actual send (a connection was free) → last byte, ms; see :mod:`pathprobe.model.records`."""
    wait = np.maximum(records["conn_wait_ns"], 0)
    return np.asarray(
        (records["end_ns"] - records["actual_ns"] - wait) / NS_PER_MS, dtype=np.float64
    )


def achieved_rps(result: StepResult) -> float:
    """Responses of any status completed per second of the measured window (design.md §5).

    Responses to warm-up requests that complete inside the window count: they are throughput the
    service delivered in that window. Counted over every request, sampled or not.
    """
    window_s = (result.measured_end_ns - result.measured_start_ns) / 1e9
    if window_s <= 0:
        return 0.0
    tally = tally_of(result)
    if result.interrupted and tally.all_requests:
        # The window was cut short: divide by the part that really ran.
        last = tally.last_end_ns
        window_s = max((min(last, result.measured_end_ns) - result.measured_start_ns) / 1e9, 1e-3)
    return tally.in_window / window_s


def histogram_summary(hist_ns: HdrHistogram) -> dict[str, float | None]:
    """:func:`percentile_summary`'s keys read from a histogram of ns (0.1 % precision), ms."""
    keys = [k for k, _ in LATENCY_PERCENTILES] + ["max"]
    if hist_ns.get_total_count() == 0:
        return dict.fromkeys(keys)
    out: dict[str, float | None] = {
        k: round(percentile_ns(hist_ns, q) / NS_PER_MS, 4) for k, q in LATENCY_PERCENTILES
    }
    out["max"] = round(hist_ns.get_max_value() / NS_PER_MS, 4)
    return out


def step_summary(result: StepResult, payload_sizes: npt.NDArray[np.int64] | None) -> dict[str, Any]:
    """The JSON summary of one step of one path.

    Counts (requests, errors, statuses, bytes, connections) and, on a thinned window, the latency
    and service-time percentiles come from the exact tally of every request; the distributions of
    the other phases, the timeline and the breakdowns come from the kept records (all of them,
    unless ``sample_stride`` > 1).
    """
    tally = tally_of(result)
    stride = result.sample_stride
    recs = measured(result)
    kinds = error_kinds(recs)
    cancelled = kinds == ErrorKind.CANCELLED
    counted = recs[~cancelled]
    done = completed(counted)
    ok = counted[done]
    lat = latency_ms(ok)
    if stride == 1:
        latency, service = percentile_summary(lat), percentile_summary(service_ms(ok))
    else:
        latency, service = histogram_summary(tally.latency_ns), histogram_summary(tally.service_ns)
    slip = (counted["actual_ns"] - counted["intended_ns"]) / NS_PER_MS
    conn_wait = counted["conn_wait_ns"][counted["conn_wait_ns"] >= 0] / NS_PER_MS
    connects = counted["connect_ns"][counted["connect_ns"] >= 0] / NS_PER_MS
    tls = counted["tls_ns"][counted["tls_ns"] >= 0] / NS_PER_MS
    ttfb = ok["ttfb_ns"][ok["ttfb_ns"] >= 0] / NS_PER_MS
    summary: dict[str, Any] = {
        "offered_rps": result.offered_rps,
        "concurrency": result.concurrency,
        "achieved_rps": round(achieved_rps(result), 3),
        "requests": tally.requests,
        "responses": tally.responses,
        "duration_s": round((result.measured_end_ns - result.measured_start_ns) / 1e9, 3),
        "latency_ms": latency,
        "service_ms": service,
        **error_counts(tally),
        "cancelled": tally.cancelled,
        "slip_ms": quick_summary(slip),
        "pool_wait_ms": quick_summary(conn_wait),
        "connect_ms": quick_summary(connects),
        "tls_ms": quick_summary(tls),
        "ttfb_ms": quick_summary(ttfb),
        "connections_opened": tally.connections_opened,
        "bytes_out": tally.bytes_out,
        "bytes_in": tally.bytes_in,
        "histogram": log_histogram(lat),
        "timeline": timeline(result.measured_start_ns, counted, done, stride),
        "by_replica": by_replica(ok, result.replicas, stride),
        "engine": result.engine,
        "aborted": result.aborted,
        "in_flight_cap_hits": result.in_flight_cap_hits,
        # 1: every request is in the records; k: about one in k is (see pathprobe.load.store).
        "sample_stride": stride,
        "records_kept": int(len(result.records)),
    }
    if payload_sizes is not None and len(payload_sizes) > 1:
        summary["by_payload_size"] = by_payload_size(ok, payload_sizes, stride)
    return summary


def error_counts(tally: Tally) -> dict[str, Any]:
    """``errors``, ``error_rate``, ``errors_by_kind`` and ``status_codes`` of a window."""
    return {
        "errors": tally.errors,
        "error_rate": round(tally.errors / tally.requests, 6) if tally.requests else 0.0,
        "errors_by_kind": {
            ErrorKind(kind).label: count for kind, count in sorted(tally.errors_by_kind.items())
        },
        "status_codes": {str(code): count for code, count in sorted(tally.status_codes.items())},
    }


def timeline(
    start_ns: int, recs: Records, done: npt.NDArray[np.bool_], stride: int = 1
) -> list[dict[str, Any]]:
    """Latency and errors over time, binned by intended send time (≤ TIMELINE_MAX_POINTS bins).

    On thinned records (``stride`` > 1) rates and error counts are scaled up by ``stride``.
    """
    if len(recs) == 0:
        return []
    t_s = (recs["intended_ns"] - start_ns) / 1e9
    span = max(float(t_s.max()), 1e-3)
    bin_s = max(span / TIMELINE_MAX_POINTS, 0.1)
    bins = np.floor(t_s / bin_s).astype(np.int64)
    lat = latency_ms(recs)
    errs = is_error(error_kinds(recs))
    out: list[dict[str, Any]] = []
    for b in np.unique(bins):
        sel = bins == b
        ok_sel = sel & done
        ok_lat = lat[ok_sel]
        out.append(
            {
                "t_s": round(float(b * bin_s), 3),
                "p50_ms": round(float(np.percentile(ok_lat, 50)), 3) if ok_lat.size else None,
                "p99_ms": round(float(np.percentile(ok_lat, 99)), 3) if ok_lat.size else None,
                "rps": round(float(sel.sum()) * stride / bin_s, 2),
                "errors": int(errs[sel].sum()) * stride,
            }
        )
    return out


def by_replica(ok: Records, replicas: list[str], stride: int = 1) -> dict[str, dict[str, Any]]:
    """Latency per serving replica (from the replica header or the peer address); counts are
    scaled by ``stride`` on thinned records."""
    out: dict[str, dict[str, Any]] = {}
    if not replicas:
        return out
    lat = latency_ms(ok)
    for index, name in enumerate(replicas):
        sel = ok["replica"] == index
        if not sel.any():
            continue
        summary = percentile_summary(lat[sel])
        out[name] = {
            "count": int(sel.sum()) * stride,
            "p50_ms": summary["p50"],
            "p99_ms": summary["p99"],
        }
    return out


def by_payload_size(
    ok: Records, payload_sizes: npt.NDArray[np.int64], stride: int = 1
) -> list[dict[str, Any]]:
    """Latency by input size, in quantile buckets of the payload sizes actually sent (counts
    scaled by ``stride`` on thinned records)."""
    idx = ok["payload_idx"]
    valid = idx >= 0
    if not valid.any():
        return []
    sizes = payload_sizes[idx[valid]]
    lat = latency_ms(ok)[valid]
    edges = np.unique(np.quantile(sizes, np.linspace(0, 1, PAYLOAD_SIZE_BUCKETS + 1)))
    out: list[dict[str, Any]] = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        sel = (sizes >= low) & ((sizes < high) | (high == edges[-1]))
        if not sel.any():
            continue
        summary = percentile_summary(lat[sel])
        out.append(
            {
                "bytes_min": int(sizes[sel].min()),
                "bytes_max": int(sizes[sel].max()),
                "count": int(sel.sum()) * stride,
                "p50_ms": summary["p50"],
                "p99_ms": summary["p99"],
            }
        )
    return out
