"""What one (path, step) window produced: :class:`StepResult`, and the exact :class:`Tally` of it.

The load engines build these (:mod:`pathprobe.load.engine`, :mod:`pathprobe.load.store`); analysis,
the probes and the report read them. Load workers send both across processes and Ray: they pickle,
by this module's path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from hdrh.histogram import HdrHistogram

from pathprobe.model.histograms import histogram_ns, new_histogram
from pathprobe.model.records import ErrorKind, Records, completed, error_kinds, is_error


@dataclass
class Tally:
    """Exact counts over every request of one window, however thinly its rows are kept.

    ``requests`` … ``service_ns`` cover the measured requests (warm-up excluded; ``requests`` also
    excludes ``cancelled`` ones, in flight when the run was interrupted). ``in_window`` counts
    responses of any request that ended inside the measured window (``achieved_rps``). The
    ``all_*`` fields cover every request of the window, warm-up included (what a capture saw).
    """

    requests: int = 0
    responses: int = 0
    cancelled: int = 0
    errors_by_kind: dict[int, int] = field(default_factory=dict)
    status_codes: dict[int, int] = field(default_factory=dict)
    bytes_out: int = 0
    bytes_in: int = 0
    connections_opened: int = 0
    in_window: int = 0
    last_end_ns: int = 0
    all_requests: int = 0
    all_connections_opened: int = 0
    all_bytes_out: int = 0
    all_bytes_in: int = 0
    latency_ns: HdrHistogram = field(default_factory=new_histogram)
    service_ns: HdrHistogram = field(default_factory=new_histogram)

    @property
    def errors(self) -> int:
        return sum(self.errors_by_kind.values())

    def add(self, rows: Records, measured_start_ns: int, measured_end_ns: int) -> None:
        """Count ``rows`` (any subset of the window's requests, each counted once)."""
        if len(rows) == 0:
            return
        self.all_requests += len(rows)
        self.all_connections_opened += int((rows["connect_ns"] >= 0).sum())
        self.all_bytes_out += int(rows["bytes_out"].sum())
        self.all_bytes_in += int(rows["bytes_in"].sum())
        done = completed(rows)
        ends = rows["end_ns"]
        inside = done & (ends >= measured_start_ns) & (ends <= measured_end_ns)
        self.in_window += int(inside.sum())
        self.last_end_ns = max(self.last_end_ns, int(ends.max()))
        measured = rows["intended_ns"] >= measured_start_ns
        kinds = error_kinds(rows)
        cancelled = kinds == ErrorKind.CANCELLED
        counted = measured & ~cancelled
        self.cancelled += int((measured & cancelled).sum())
        self.requests += int(counted.sum())
        self.bytes_out += int(rows["bytes_out"][counted].sum())
        self.bytes_in += int(rows["bytes_in"][counted].sum())
        self.connections_opened += int((rows["connect_ns"][counted] >= 0).sum())
        errs = kinds[counted & is_error(kinds)]
        _add_counts(self.errors_by_kind, errs)
        ok = rows[counted & done]
        self.responses += len(ok)
        _add_counts(self.status_codes, ok["status"])
        if len(ok):
            wait = np.maximum(ok["conn_wait_ns"], 0)
            self.latency_ns.add(histogram_ns(ok["end_ns"] - ok["intended_ns"]))
            self.service_ns.add(histogram_ns(ok["end_ns"] - ok["actual_ns"] - wait))

    def __getstate__(self) -> dict[str, object]:
        # HdrHistogram does not pickle (load workers send their tallies back): ship it encoded.
        state = dict(self.__dict__)
        state["latency_ns"] = self.latency_ns.encode()
        state["service_ns"] = self.service_ns.encode()
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        for name in ("latency_ns", "service_ns"):
            state[name] = HdrHistogram.decode(state[name])
        self.__dict__.update(state)

    def merge(self, other: Tally) -> None:
        """Add ``other`` (another worker's share of the same window)."""
        for name in (
            "requests", "responses", "cancelled", "bytes_out", "bytes_in", "connections_opened",
            "in_window", "all_requests", "all_connections_opened", "all_bytes_out",
            "all_bytes_in",
        ):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.last_end_ns = max(self.last_end_ns, other.last_end_ns)
        for mine, theirs in (
            (self.errors_by_kind, other.errors_by_kind),
            (self.status_codes, other.status_codes),
        ):
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count
        self.latency_ns.add(other.latency_ns)
        self.service_ns.add(other.service_ns)


def _add_counts(counts: dict[int, int], values: npt.NDArray[np.integer]) -> None:
    keys, n = np.unique(values, return_counts=True)
    for key, count in zip(keys.tolist(), n.tolist(), strict=True):
        counts[int(key)] = counts.get(int(key), 0) + int(count)


def tally_records(records: Records, measured_start_ns: int, measured_end_ns: int) -> Tally:
    """The tally of a window whose every record is at hand (nothing thinned)."""
    tally = Tally()
    tally.add(records, measured_start_ns, measured_end_ns)
    return tally


@dataclass
class StepResult:
    """Everything one (path, step) window produced. ``records`` is sorted by ``seq``.

    Warm-up requests are kept (``seq < first_measured_seq``) so pairing by ``seq`` works; analysis
    drops them. ``records`` holds every request when ``sample_stride`` is 1, else only those whose
    ``seq`` is a multiple of it (:mod:`pathprobe.load.store`); ``tally`` counts every request
    either way (``None`` only for results built by hand: see :func:`tally_of`).
    """

    path: str
    url: str
    step: int
    offered_rps: float | None
    concurrency: int | None
    engine: str
    records: Records
    first_measured_seq: int
    start_ns: int
    measured_start_ns: int
    measured_end_ns: int
    replicas: list[str] = field(default_factory=list)
    headers: dict[str, list[str | None]] = field(default_factory=dict)
    loop_lag_ns: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    in_flight_cap_hits: int = 0
    aborted: str | None = None
    interrupted: bool = False
    tally: Tally | None = None
    sample_stride: int = 1


def tally_of(result: StepResult) -> Tally:
    """The exact counts of ``result``'s window (computed from the records when not stored)."""
    if result.tally is not None:
        return result.tally
    return tally_records(result.records, result.measured_start_ns, result.measured_end_ns)


def measured(result: StepResult) -> Records:
    """The records of the measured window (warm-up dropped)."""
    recs: Records = result.records[result.records["seq"] >= result.first_measured_seq]
    return recs


def header_values(result: StepResult, name: str) -> list[str | None]:
    """Captured values of header ``name`` for the measured requests (aligned with ``measured``)."""
    values = result.headers.get(name, [])
    if not values:
        return []
    keep = result.records["seq"] >= result.first_measured_seq
    return [v for v, k in zip(values, keep.tolist(), strict=True) if k]
