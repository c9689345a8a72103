"""``probes.network`` and ``probes.client`` of report.json, typed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pathprobe.reports.fields import as_list, as_map, get, not_observed_text, num
from pathprobe.reports.model.values import Percentiles, text


@dataclass(frozen=True)
class ProbeStatus:
    """What a ``probes.<name>`` section says of itself: unavailable and why, or whether it holds
    any windows. ``reason`` and ``how_to_enable`` are None when missing or empty."""

    unavailable: bool
    reason: str | None
    how_to_enable: str | None
    has_windows: bool

    @classmethod
    def from_json(cls, raw: Any) -> ProbeStatus:
        sec = as_map(raw)
        return cls(
            unavailable=sec.get("available") is False,
            reason=text(sec.get("reason") or None),
            how_to_enable=text(sec.get("how_to_enable") or None),
            has_windows=bool(sec) and bool(as_list(sec.get("windows"))),
        )

    def not_observed(self, what: str) -> str | None:
        """None when the section holds data, else "Not observed: <reason> — <how to enable>"."""
        return not_observed_text(
            what,
            unavailable=self.unavailable,
            reason=self.reason,
            how_to_enable=self.how_to_enable,
            has_data=self.has_windows,
        )


@dataclass(frozen=True)
class RetransStalls:
    """A network window's ``retrans_stalls``: exchanges a lost segment held up (tcpflows)."""

    stalled: float | None
    exchanges: float | None
    stalls_ms: tuple[float, ...]  # the finite ones

    @classmethod
    def from_json(cls, raw: Any) -> RetransStalls:
        s = as_map(raw)
        return cls(
            stalled=num(s.get("stalled")),
            exchanges=num(s.get("exchanges")),
            stalls_ms=tuple(n for v in as_list(s.get("stalls_ms")) if (n := num(v)) is not None),
        )


@dataclass(frozen=True)
class NetworkWindow:
    """One window of ``probes.network`` (an item that is not a mapping reads as an empty one).
    ``raw`` locates the window (its path and step) for :func:`.sections.common.window_label`."""

    raw: Mapping[str, Any]
    unavailable: bool
    reason: str | None
    rtt: Percentiles
    retransmissions: float | None
    retransmission_rate: float | None
    retrans_stalls: RetransStalls
    resets: float | None
    zero_windows: float | None
    bytes_to_server: float | None
    bytes_from_server: float | None
    capture_drops: float | None
    wire_ttfb: Percentiles

    @classmethod
    def from_json(cls, raw: Any) -> NetworkWindow:
        w = as_map(raw)
        return cls(
            raw=w,
            unavailable=w.get("available") is False,
            reason=text(w.get("reason")),
            rtt=Percentiles.from_json(w.get("rtt_ms")),
            retransmissions=num(w.get("retransmissions")),
            retransmission_rate=num(w.get("retransmission_rate")),
            retrans_stalls=RetransStalls.from_json(w.get("retrans_stalls")),
            resets=num(w.get("resets")),
            zero_windows=num(w.get("zero_windows")),
            bytes_to_server=num(w.get("bytes_to_server")),
            bytes_from_server=num(w.get("bytes_from_server")),
            capture_drops=num(w.get("capture_drops")),
            wire_ttfb=Percentiles.from_json(w.get("wire_ttfb_ms")),
        )


#: The percentiles an idle-RTT distribution shows, under their report.json keys.
IDLE_RTT_KEYS = ("p50", "p90", "p99", "p99.9", "max")


@dataclass(frozen=True)
class NetworkProbe:
    """``probes.network``: its windows and the idle RTT baseline, per path ("" when the report
    holds one distribution for all paths) as (key, ms) pairs in the report's order."""

    status: ProbeStatus
    windows: tuple[NetworkWindow, ...]
    idle_rtt_ms: tuple[tuple[str, tuple[tuple[str, float], ...]], ...]

    @classmethod
    def from_json(cls, raw: Any) -> NetworkProbe:
        net = as_map(raw)
        idle = as_map(net.get("idle_rtt_ms"))
        per_path = idle if all(isinstance(v, Mapping) for v in idle.values()) else {"": idle}
        return cls(
            status=ProbeStatus.from_json(net),
            windows=tuple(NetworkWindow.from_json(w) for w in as_list(net.get("windows"))),
            idle_rtt_ms=tuple(
                (
                    str(name),
                    tuple(
                        (k, n)
                        for k, v in as_map(dist).items()
                        if k in IDLE_RTT_KEYS and (n := num(v)) is not None
                    ),
                )
                for name, dist in per_path.items()
            ),
        )


@dataclass(frozen=True)
class CpuPercent:
    """A ``cpu_percent`` summary (percent of one core)."""

    mean: float | None
    p90: float | None
    max: float | None

    @classmethod
    def from_json(cls, raw: Any) -> CpuPercent:
        c = as_map(raw)
        return cls(mean=num(c.get("mean")), p90=num(c.get("p90")), max=num(c.get("max")))


@dataclass(frozen=True)
class ClientWindow:
    """One window of ``probes.client``; ``slip`` is None when the window holds no ``slip_ms``
    (the step's own slip stands in). ``raw`` locates the window and holds its timeline."""

    raw: Mapping[str, Any]
    cpu_percent: CpuPercent
    loop_lag: Percentiles
    slip: Percentiles | None
    busiest_process_cpu_max: float | None

    @classmethod
    def from_json(cls, raw: Any) -> ClientWindow:
        w = as_map(raw)
        slip = as_map(w.get("slip_ms"))
        return cls(
            raw=w,
            cpu_percent=CpuPercent.from_json(w.get("cpu_percent")),
            loop_lag=Percentiles.from_json(w.get("loop_lag_ms")),
            slip=Percentiles.from_json(slip) if slip else None,
            busiest_process_cpu_max=num(get(w, "busiest_process_cpu_percent", "max")),
        )


@dataclass(frozen=True)
class ClientProbe:
    """``probes.client``: the calibration floor (its finite entries; ``has_floor`` when the
    report holds any floor mapping at all) and the windows."""

    status: ProbeStatus
    has_floor: bool
    floor_ms: Mapping[str, float]
    windows: tuple[ClientWindow, ...]

    @classmethod
    def from_json(cls, raw: Any) -> ClientProbe:
        client = as_map(raw)
        floor = as_map(get(client, "calibration", "floor_ms"))
        return cls(
            status=ProbeStatus.from_json(client),
            has_floor=bool(floor),
            floor_ms={str(k): n for k, v in floor.items() if (n := num(v)) is not None},
            windows=tuple(ClientWindow.from_json(w) for w in as_list(client.get("windows"))),
        )
