"""Bandwidth: the transfer time per byte moved, measured on the innermost path.

Measured before the decomposition (:mod:`pathprobe.analysis.decompose` charges ``slope × bytes``
to the network), and quoted by the network finding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from pathprobe.analysis.decompose import MIN_UPLOAD_SAMPLES, transfer_slope_ms_per_byte
from pathprobe.analysis.evidence import NetworkEvidence
from pathprobe.analysis.lookup import result_at
from pathprobe.model.records import Records
from pathprobe.model.results import StepResult, measured
from pathprobe.run import RunResult

FloatArray = npt.NDArray[np.float64]

#: The spread of sizes sent (p10 → p90) must cost at least this much for a slope to be kept (see
#: :func:`transfer_slope`).
TRANSFER_MIN_SPREAD_MS = 5.0
#: A bandwidth estimate is kept only while the bytes really moved per ms stay within this factor
#: of the bandwidth it implies (see _link_can_carry): 2 allows for the slope's estimation error.
LINK_CAPACITY_SLACK = 2.0


def transfer_slope(
    run: RunResult,
    names: Sequence[str],
    step: int,
    hop_times: Mapping[str, Mapping[str, FloatArray]],
    net_ev: Mapping[str, NetworkEvidence],
) -> float:
    """Bandwidth as ms per byte moved, measured on the innermost path.

    From the capture when it saw the uploads: the wire's own upload time against request size.
    Else from the load's records where a server timer exists: residual = time to first byte −
    connect/pool − the server's own time (Server-Timing on the direct path, nginx's upstream time
    on a proxy path); what still grows with the body size is transfer time. Zero without either
    (then size-dependent server work would pass for bandwidth).
    """
    innermost = net_ev.get(names[0]) if names else None
    uploads = innermost.uploads if innermost is not None else None
    if uploads and int(uploads.get("count") or 0) >= MIN_UPLOAD_SAMPLES:
        sizes = np.asarray(uploads.get("bytes") or [], np.float64)
        upload_ms = np.asarray(uploads.get("ms") or [], np.float64)
        slope = transfer_slope_ms_per_byte(sizes, upload_ms)
        p10, p90 = np.percentile(sizes, [10, 90]) if sizes.size else (0.0, 0.0)
        return slope if slope * float(p90 - p10) >= TRANSFER_MIN_SPREAD_MS else 0.0
    for name in names:
        res = result_at(run, name, step)
        if res is None:
            continue
        server = _server_timer_ms(hop_times.get(name, {}))
        if server is None:
            return 0.0
        return _records_slope(res, server)
    return 0.0


def _server_timer_ms(times: Mapping[str, FloatArray]) -> FloatArray | None:
    """The server's own time per request: nginx's upstream time, else the Server-Timing sum."""
    if "upstream_ms" in times:
        return times["upstream_ms"]
    server_timing = [v for k, v in times.items() if k.startswith("server_timing.")]
    if server_timing:
        return np.asarray(np.nansum(np.stack(server_timing), axis=0), np.float64)
    return None


def _records_slope(res: StepResult, server: FloatArray) -> float:
    """The slope from the window's records against the server's own time (0 when none shows)."""
    recs = measured(res)
    ok = (recs["ttfb_ns"] >= 0) & np.isfinite(server)
    ttfb = recs["ttfb_ns"][ok] / 1e6
    # TTFB already starts once a pooled connection was free (load/records.py): only the
    # connection set-up comes before the request's own exchange.
    pre = np.maximum(recs["connect_ns"][ok], 0) / 1e6
    residual = ttfb - pre - server[ok]
    moved = (recs["bytes_out"][ok] + recs["bytes_in"][ok]).astype(np.float64)
    slope = transfer_slope_ms_per_byte(moved, residual)
    # Keep it only when body size visibly drives time: the spread of sizes sent (p10 → p90)
    # must cost ≥ TRANSFER_MIN_SPREAD_MS. Smaller size effects are what a server's own body
    # parsing outside its timers produces on loopback (measured: ~0.5 ms per KB on the
    # testbed), and within the jitter of a loaded host; a bandwidth problem worth a verdict
    # costs more than that across the payloads it carries.
    if moved.size:
        p10, p90 = np.percentile(moved, [10, 90])
        if slope * float(p90 - p10) >= TRANSFER_MIN_SPREAD_MS and _link_can_carry(slope, res, recs):
            return slope
    return 0.0


def _link_can_carry(slope_ms_per_byte: float, res: StepResult, recs: Records) -> bool:
    """Whether a link of the bandwidth the slope implies could have carried what was moved.

    A slope of ``s`` ms per byte means a link of ``1/s`` bytes/ms, shared by all requests: the
    window's total bytes per ms cannot exceed it. When they do (by more than
    LINK_CAPACITY_SLACK, for the slope's estimation error), the size-dependent time is not
    transfer but work outside the server's timers (body parsing on a CPU-starved server).
    """
    window_ms = (res.measured_end_ns - res.measured_start_ns) / 1e6
    if window_ms <= 0 or slope_ms_per_byte <= 0:
        return False
    carried = float((recs["bytes_out"] + recs["bytes_in"]).sum()) / window_ms
    return carried <= LINK_CAPACITY_SLACK / slope_ms_per_byte
