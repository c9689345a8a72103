"""The network between client and server: RTT, retransmissions and the exchanges they stalled,
resets, zero windows, bytes, capture drops and wire time to first byte, plus the idle RTT."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pathprobe.reports.fields import (
    as_list,
    as_map,
    clip,
    fmt_bytes,
    fmt_ms,
    fmt_num,
    fmt_pct,
    get,
    not_observed,
    num,
)
from pathprobe.reports.sections.common import window_label

_PCT_KEYS = ("p50", "p90", "p99", "p99.9", "max")


def network_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """probes.network: one row per window (or why the window saw nothing) and the idle RTT."""
    net = as_map(get(report, "probes", "network"))
    rows: list[dict[str, Any]] = []
    for w in (as_map(x) for x in as_list(net.get("windows"))):
        path, step = window_label(report, w)
        if w.get("available") is False:
            rows.append({"path": path, "step": step, "unavailable": clip(w.get("reason"), 300)})
            continue
        rows.append(
            {
                "path": path,
                "step": step,
                "unavailable": None,
                "rtt_p50": fmt_ms(get(w, "rtt_ms", "p50")),
                "rtt_p99": fmt_ms(get(w, "rtt_ms", "p99")),
                "retrans": fmt_num(w.get("retransmissions")),
                "retrans_rate": fmt_pct(w.get("retransmission_rate")),
                "stalls": _stalls_text(as_map(w.get("retrans_stalls"))),
                "bad_stalls": (num(as_map(w.get("retrans_stalls")).get("stalled")) or 0) > 0,
                "resets": fmt_num(w.get("resets")),
                "zero_windows": fmt_num(w.get("zero_windows")),
                "to_server": fmt_bytes(w.get("bytes_to_server")),
                "from_server": fmt_bytes(w.get("bytes_from_server")),
                "drops": fmt_num(w.get("capture_drops")),
                "ttfb_p50": fmt_ms(get(w, "wire_ttfb_ms", "p50")),
                "ttfb_p99": fmt_ms(get(w, "wire_ttfb_ms", "p99")),
                "bad_retrans": (num(w.get("retransmissions")) or 0) > 0,
                "bad_resets": (num(w.get("resets")) or 0) > 0,
                "bad_drops": (num(w.get("capture_drops")) or 0) > 0,
            }
        )
    # Idle RTT baseline: one distribution, or one per path ({path: {p50: …}}).
    idle_raw = as_map(net.get("idle_rtt_ms"))
    per_path = (
        idle_raw if all(isinstance(v, Mapping) for v in idle_raw.values()) else {"": idle_raw}
    )
    idle = []
    for name, dist in per_path.items():
        parts = [
            f"{k} {fmt_ms(v)}"
            for k, v in as_map(dist).items()
            if k in _PCT_KEYS and num(v) is not None
        ]
        if parts:
            idle.append({"path": clip(name, 60), "text": " · ".join(parts)})
    return {"missing": not_observed(net, "network"), "rows": rows, "idle": idle}


def _stalls_text(stalls: Mapping[str, Any]) -> str:
    """ "3 of 500, up to 412 ms": exchanges a lost segment held up (tcpflows), or "—"."""
    stalled, total = num(stalls.get("stalled")), num(stalls.get("exchanges"))
    if stalled is None or total is None:
        return "—"
    if not stalled:
        return f"0 of {fmt_num(total)}"
    longest = [num(v) for v in stalls.get("stalls_ms") or []]
    peak = max((v for v in longest if v is not None), default=None)
    tail = f", up to {fmt_ms(peak)}" if peak is not None else ""
    return f"{fmt_num(stalled)} of {fmt_num(total)}{tail}"
