"""Where one (path, step) window keeps its per-request records: whole up to a cap, then thinned.

Every request is **counted exactly** in a :class:`Tally` (requests, errors by kind, statuses, bytes,
connections, and HdrHistograms of latency and service time at 0.1 % precision, see
:mod:`pathprobe.load.histograms`). The per-request **rows** are kept whole up to ``max_records``;
beyond that the store keeps a sample by sequence number: the rows whose :func:`sample_key` (a fixed
mix of ``seq``) is a multiple of ``stride``, doubling ``stride`` whenever the cap is reached again.
So a soak holds at most ``max_records`` rows (≈ 81 bytes each) however long it runs, and because the
rule depends only on ``seq``:

* every path keeps the same requests, so pairing by ``seq`` still works (a path thinned to a larger
  stride keeps a subset of what a smaller stride keeps);
* load workers, which send interleaved slices of one sequence, keep the same share each (the mix
  makes the rule blind to how ``seq`` was sliced) and their samples merge into one.

Captured header values follow their rows (kept only for kept ``seq``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt
from hdrh.histogram import HdrHistogram

from pathprobe.load.histograms import histogram_ns, new_histogram
from pathprobe.load.records import (
    RECORD_DTYPE,
    ErrorKind,
    Records,
    completed,
    empty_records,
    error_kinds,
    is_error,
)

#: Rows kept whole per (path, step): 65,536 × 81 B ≈ 5.3 MB. Past it, the sample never holds fewer
#: than half of this, so a p99 read from it still has ≥ 327 requests above it, and the bootstrap
#: intervals of the hop deltas are as tight as they will get; counts and the latency and service
#: percentiles come from the exact tally anyway.
DEFAULT_MAX_RECORDS = 1 << 16
#: Rows are buffered as tuples (cheapest to append) and moved to numpy this many at a time.
FLUSH_ROWS = 8192
#: Loop-lag samples kept per window (one per 10 ms tick: 5.5 minutes whole, then thinned).
MAX_LAG_SAMPLES = 1 << 15

T = TypeVar("T")


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


_MIX = 0x9E3779B97F4A7C15  # Fibonacci hashing: odd, so the map is a bijection on 64 bits
_MASK64 = (1 << 64) - 1


def sample_key(seq: int) -> int:
    """The key the sampling rule tests: ``seq`` mixed, so that any slice of seqs samples evenly."""
    return ((seq * _MIX) & _MASK64) >> 32  # the top half: the well-mixed bits


def sample_keys(seqs: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    """:func:`sample_key` of every element (wrapping uint64 arithmetic, as intended)."""
    mixed = np.asarray(seqs, dtype=np.int64).astype(np.uint64) * np.uint64(_MIX)
    keys: npt.NDArray[np.uint64] = mixed >> np.uint64(32)
    return keys


def kept_mask(seqs: npt.NDArray[np.int64], stride: int) -> npt.NDArray[np.bool_]:
    """Which of ``seqs`` a window thinned to ``stride`` keeps (all of them at stride 1)."""
    if stride == 1:
        return np.ones(len(seqs), dtype=bool)
    mask: npt.NDArray[np.bool_] = sample_keys(seqs) % np.uint64(stride) == 0
    return mask


def thin(records: Records, stride: int, seq_scale: int = 1, seq_offset: int = 0) -> Records:
    """The rows of ``records`` a window thinned to ``stride`` keeps.

    ``seq_scale``/``seq_offset`` map a load worker's own ``seq`` to the plan's (``seq × scale +
    offset``): the rule is applied to the plan's numbering, which is what the merge sees.
    """
    if stride == 1:
        return records
    global_seq = records["seq"] * seq_scale + seq_offset
    kept: Records = records[kept_mask(global_seq, stride)]
    return kept


class RecordStore:
    """The rows of one window as the engine produces them, counted, kept or thinned.

    ``fields`` names the columns of the row tuples passed to :meth:`add` (``seq`` first); columns
    not named keep :func:`~pathprobe.load.records.empty_records`' "absent" values.
    """

    def __init__(
        self,
        fields: Sequence[str],
        max_records: int = DEFAULT_MAX_RECORDS,
        seq_scale: int = 1,
        seq_offset: int = 0,
    ) -> None:
        if fields[0] != "seq" or not set(fields) <= set(RECORD_DTYPE.names or ()):
            raise ValueError(f"bad row fields {fields!r}")
        self.fields = tuple(fields)
        self.seq_scale = seq_scale
        self.seq_offset = seq_offset
        self.measured_start_ns = 0
        self.measured_end_ns = 0
        self.max_records = max(int(max_records), 2)
        self.stride = 1
        self.tally = Tally()
        self._rows: list[tuple[int, ...]] = []
        self._chunks: list[Records] = []
        self._kept = 0
        self._headers: dict[int, list[str | None]] = {}

    def begin(self, measured_start_ns: int, measured_end_ns: int) -> None:
        """The measured window (known once the step starts); call before the first :meth:`add`."""
        self.measured_start_ns = measured_start_ns
        self.measured_end_ns = measured_end_ns

    def add(self, row: tuple[int, ...], headers: list[str | None] | None = None) -> None:
        """One finished request; ``headers`` are its captured header values, if any."""
        self._rows.append(row)
        if headers is not None and self._keeps(row[0]):
            self._headers[row[0]] = headers
        if len(self._rows) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Count the buffered rows and keep those the current stride keeps."""
        if not self._rows:
            return
        table = np.array(self._rows, dtype=np.int64)
        self._rows = []
        chunk = empty_records(len(table))
        for j, name in enumerate(self.fields):
            chunk[name] = table[:, j]
        self.tally.add(chunk, self.measured_start_ns, self.measured_end_ns)
        chunk = thin(chunk, self.stride, self.seq_scale, self.seq_offset)
        self._chunks.append(chunk)
        self._kept += len(chunk)
        while self._kept > self.max_records:
            self._double_stride()

    def _keeps(self, seq: int) -> bool:
        return (
            self.stride == 1
            or sample_key(seq * self.seq_scale + self.seq_offset) % self.stride == 0
        )

    def _double_stride(self) -> None:
        self.stride *= 2
        self._chunks = [thin(c, self.stride, self.seq_scale, self.seq_offset) for c in self._chunks]
        self._kept = sum(len(c) for c in self._chunks)
        self._headers = {s: h for s, h in self._headers.items() if self._keeps(s)}

    def records(self) -> Records:
        """The kept rows, sorted by ``seq``."""
        self.flush()
        if not self._chunks:
            return empty_records(0)
        joined = np.concatenate(self._chunks)
        self._chunks = [joined]
        order = np.argsort(joined["seq"], kind="stable")
        out: Records = joined[order]
        return out

    def header_columns(self, records: Records, names: Sequence[str]) -> dict[str, list[str | None]]:
        """Captured values of each header in ``names``, aligned with ``records``."""
        missing: list[str | None] = [None] * len(names)
        rows = [self._headers.get(s, missing) for s in records["seq"].tolist()]
        return {name: [row[j] for row in rows] for j, name in enumerate(names)}


class BoundedSamples(Generic[T]):
    """At most ``cap`` of a stream of samples: all of them, then every 2nd, 4th, … (evenly).

    ``append`` is safe from one producer thread while another thread reads :meth:`values`.
    """

    def __init__(self, cap: int = MAX_LAG_SAMPLES) -> None:
        self.cap = max(int(cap), 2)
        self.stride = 1
        self._seen = 0
        self._values: list[T] = []

    def append(self, value: T) -> None:
        if self._seen % self.stride == 0:
            self._values.append(value)
            if len(self._values) >= self.cap:
                self._values = self._values[::2]
                self.stride *= 2
        self._seen += 1

    def values(self) -> list[T]:
        return list(self._values)

    def array(self) -> npt.NDArray[np.int64]:
        return np.array(self._values, dtype=np.int64)
