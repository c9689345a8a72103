"""Per (path, step) summaries of the load's own records: the ``paths.*.steps[]`` of report.json."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from pathprobe.analysis.stats import log_histogram, percentile_summary, quick_summary
from pathprobe.load.engine import StepResult, measured
from pathprobe.load.records import ErrorKind, Records, completed, error_kinds, is_error

NS_PER_MS = 1e6
TIMELINE_MAX_POINTS = 300
PAYLOAD_SIZE_BUCKETS = 6


def latency_ms(records: Records) -> npt.NDArray[np.float64]:
    """Intended send → last byte (coordinated-omission safe), ms."""
    return np.asarray((records["end_ns"] - records["intended_ns"]) / NS_PER_MS, dtype=np.float64)


def service_ms(records: Records) -> npt.NDArray[np.float64]:
    """Actual send (a connection was free) → last byte, ms; see :mod:`pathprobe.load.records`."""
    wait = np.maximum(records["conn_wait_ns"], 0)
    return np.asarray(
        (records["end_ns"] - records["actual_ns"] - wait) / NS_PER_MS, dtype=np.float64
    )


def achieved_rps(result: StepResult) -> float:
    """Responses of any status completed per second of the measured window (design.md §5).

    Responses to warm-up requests that complete inside the window count: they are throughput the
    service delivered in that window.
    """
    window_s = (result.measured_end_ns - result.measured_start_ns) / 1e9
    if window_s <= 0:
        return 0.0
    recs = result.records
    done = completed(recs)
    ends = recs["end_ns"]
    inside = done & (ends >= result.measured_start_ns) & (ends <= result.measured_end_ns)
    if result.interrupted and len(recs):
        # The window was cut short: divide by the part that really ran.
        last = int(ends.max())
        window_s = max((min(last, result.measured_end_ns) - result.measured_start_ns) / 1e9, 1e-3)
    return float(inside.sum()) / window_s


def step_summary(result: StepResult, payload_sizes: npt.NDArray[np.int64] | None) -> dict[str, Any]:
    """The JSON summary of one step of one path."""
    recs = measured(result)
    kinds = error_kinds(recs)
    cancelled = kinds == ErrorKind.CANCELLED
    counted = recs[~cancelled]
    kinds = kinds[~cancelled]
    done = completed(counted)
    ok = counted[done]
    lat = latency_ms(ok)
    svc = service_ms(ok)
    errors_mask = is_error(kinds)
    errors_by_kind: dict[str, int] = {}
    for kind in np.unique(kinds[errors_mask]):
        errors_by_kind[ErrorKind(int(kind)).label] = int((kinds == kind).sum())
    statuses, counts = np.unique(ok["status"], return_counts=True)
    slip = (counted["actual_ns"] - counted["intended_ns"]) / NS_PER_MS
    conn_wait = counted["conn_wait_ns"][counted["conn_wait_ns"] >= 0] / NS_PER_MS
    connects = counted["connect_ns"][counted["connect_ns"] >= 0] / NS_PER_MS
    tls = counted["tls_ns"][counted["tls_ns"] >= 0] / NS_PER_MS
    ttfb = ok["ttfb_ns"][ok["ttfb_ns"] >= 0] / NS_PER_MS
    summary: dict[str, Any] = {
        "offered_rps": result.offered_rps,
        "concurrency": result.concurrency,
        "achieved_rps": round(achieved_rps(result), 3),
        "requests": int(len(counted)),
        "responses": int(done.sum()),
        "duration_s": round((result.measured_end_ns - result.measured_start_ns) / 1e9, 3),
        "latency_ms": percentile_summary(lat),
        "service_ms": percentile_summary(svc),
        "errors": int(errors_mask.sum()),
        "error_rate": round(float(errors_mask.mean()), 6) if len(kinds) else 0.0,
        "errors_by_kind": errors_by_kind,
        "status_codes": {str(int(s)): int(c) for s, c in zip(statuses, counts, strict=True)},
        "cancelled": int(cancelled.sum()),
        "slip_ms": quick_summary(slip),
        "pool_wait_ms": quick_summary(conn_wait),
        "connect_ms": quick_summary(connects),
        "tls_ms": quick_summary(tls),
        "ttfb_ms": quick_summary(ttfb),
        "connections_opened": int(len(connects)),
        "bytes_out": int(counted["bytes_out"].sum()),
        "bytes_in": int(counted["bytes_in"].sum()),
        "histogram": log_histogram(lat),
        "timeline": timeline(result.measured_start_ns, counted, done),
        "by_replica": by_replica(ok, result.replicas),
        "engine": result.engine,
        "aborted": result.aborted,
        "in_flight_cap_hits": result.in_flight_cap_hits,
    }
    if payload_sizes is not None and len(payload_sizes) > 1:
        summary["by_payload_size"] = by_payload_size(ok, payload_sizes)
    return summary


def timeline(start_ns: int, recs: Records, done: npt.NDArray[np.bool_]) -> list[dict[str, Any]]:
    """Latency and errors over time, binned by intended send time (≤ TIMELINE_MAX_POINTS bins)."""
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
                "rps": round(float(sel.sum()) / bin_s, 2),
                "errors": int(errs[sel].sum()),
            }
        )
    return out


def by_replica(ok: Records, replicas: list[str]) -> dict[str, dict[str, Any]]:
    """Latency per serving replica (from the replica header or the peer address)."""
    out: dict[str, dict[str, Any]] = {}
    if not replicas:
        return out
    lat = latency_ms(ok)
    for index, name in enumerate(replicas):
        sel = ok["replica"] == index
        if not sel.any():
            continue
        summary = percentile_summary(lat[sel])
        out[name] = {"count": int(sel.sum()), "p50_ms": summary["p50"], "p99_ms": summary["p99"]}
    return out


def by_payload_size(ok: Records, payload_sizes: npt.NDArray[np.int64]) -> list[dict[str, Any]]:
    """Latency by input size, in quantile buckets of the payload sizes actually sent."""
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
                "count": int(sel.sum()),
                "p50_ms": summary["p50"],
                "p99_ms": summary["p99"],
            }
        )
    return out
