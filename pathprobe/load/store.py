"""Where one (path, step) window keeps its per-request records: whole up to a cap, then thinned.

Every request is **counted exactly** in a :class:`Tally` (requests, errors by kind, statuses, bytes,
connections, and HdrHistograms of latency and service time at 0.1 % precision, see
:mod:`pathprobe.model.histograms`). The per-request **rows** are kept whole up to ``max_records``;
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
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from pathprobe.model.records import RECORD_DTYPE, Records, empty_records
from pathprobe.model.results import Tally
from pathprobe.options import DEFAULT_MAX_RECORDS

#: Rows are buffered as tuples (cheapest to append) and moved to numpy this many at a time.
FLUSH_ROWS = 8192
#: Loop-lag samples kept per window (one per 10 ms tick: 5.5 minutes whole, then thinned).
MAX_LAG_SAMPLES = 1 << 15

T = TypeVar("T")


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
    not named keep :func:`~pathprobe.model.records.empty_records`' "absent" values.
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
