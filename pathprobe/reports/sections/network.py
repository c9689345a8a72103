"""The network between client and server: RTT, retransmissions and the exchanges they stalled,
resets, zero windows, bytes, capture drops and wire time to first byte, plus the idle RTT."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pathprobe.reports.fields import (
    clip,
    fmt_bytes,
    fmt_ms,
    fmt_num,
    fmt_pct,
    get,
)
from pathprobe.reports.model import NetworkProbe, RetransStalls
from pathprobe.reports.sections.common import window_label


def network_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """probes.network: one row per window (or why the window saw nothing) and the idle RTT."""
    net = NetworkProbe.from_json(get(report, "probes", "network"))
    rows: list[dict[str, Any]] = []
    for w in net.windows:
        path, step = window_label(report, w.raw)
        if w.unavailable:
            rows.append({"path": path, "step": step, "unavailable": clip(w.reason, 300)})
            continue
        rows.append(
            {
                "path": path,
                "step": step,
                "unavailable": None,
                "rtt_p50": fmt_ms(w.rtt.p50),
                "rtt_p99": fmt_ms(w.rtt.p99),
                "retrans": fmt_num(w.retransmissions),
                "retrans_rate": fmt_pct(w.retransmission_rate),
                "stalls": _stalls_text(w.retrans_stalls),
                "bad_stalls": (w.retrans_stalls.stalled or 0) > 0,
                "resets": fmt_num(w.resets),
                "zero_windows": fmt_num(w.zero_windows),
                "to_server": fmt_bytes(w.bytes_to_server),
                "from_server": fmt_bytes(w.bytes_from_server),
                "drops": fmt_num(w.capture_drops),
                "ttfb_p50": fmt_ms(w.wire_ttfb.p50),
                "ttfb_p99": fmt_ms(w.wire_ttfb.p99),
                "bad_retrans": (w.retransmissions or 0) > 0,
                "bad_resets": (w.resets or 0) > 0,
                "bad_drops": (w.capture_drops or 0) > 0,
            }
        )
    # Idle RTT baseline: one distribution, or one per path.
    idle = [
        {"path": clip(name, 60), "text": " · ".join(f"{k} {fmt_ms(v)}" for k, v in parts)}
        for name, parts in net.idle_rtt_ms
        if parts
    ]
    return {"missing": net.status.not_observed("network"), "rows": rows, "idle": idle}


def _stalls_text(stalls: RetransStalls) -> str:
    """ "3 of 500, up to 412 ms": exchanges a lost segment held up (tcpflows), or "—"."""
    stalled, total = stalls.stalled, stalls.exchanges
    if stalled is None or total is None:
        return "—"
    if not stalled:
        return f"0 of {fmt_num(total)}"
    peak = max(stalls.stalls_ms, default=None)
    tail = f", up to {fmt_ms(peak)}" if peak is not None else ""
    return f"{fmt_num(stalled)} of {fmt_num(total)}{tail}"
