"""Merging the results of several load workers into one, exactly.

Raw merge (:func:`merge_results`): the workers' record arrays are concatenated and re-sorted by
``seq``; nothing is summarised, so every percentile of the merged result equals the percentile of
all samples taken together (it *is* all samples taken together). When a worker thinned its records
(:mod:`pathprobe.load.store`), every part is thinned to the largest stride first, so the merged
sample is still one systematic sample by ``seq``; the exact tallies (counts and histograms) add.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from pathprobe.load.schedule import StepPlan
from pathprobe.load.store import kept_mask
from pathprobe.model.records import Records
from pathprobe.model.results import StepResult, Tally, tally_of

#: Captured header values by header name, one per record (None: not on that response).
_Headers = dict[str, list[str | None]]


def merge_results(
    parts: Sequence[StepResult],
    *,
    first_measured_seq: int | None = None,
    renumber: bool = False,
) -> StepResult:
    """One :class:`StepResult` holding every record of ``parts``, sorted by ``seq``.

    ``parts`` carry globally unique ``seq`` values (open loop: the plan's own indices). With
    ``renumber`` (closed loop, where each worker counted its own requests) ``seq`` becomes the
    order of sending, as one process would have numbered them. Replica tables are united and the
    replica column remapped; captured header lists follow their records; loop-lag samples of all
    workers are pooled. ``first_measured_seq`` defaults to the first request sent at or after
    the end of the warm-up. Thinned parts are first thinned to the largest stride among them.
    """
    if not parts:
        raise ValueError("nothing to merge")
    stride = max(p.sample_stride for p in parts)
    tally = Tally()
    for part in parts:
        tally.merge(tally_of(part))
    replicas: dict[str, int] = {}
    chunks: list[Records] = []
    header_names = list(parts[0].headers)
    headers: _Headers = {name: [] for name in header_names}
    for part in parts:
        recs, part_headers = _thinned(part, stride)
        if part.replicas:
            recs = _remap_replicas(recs, part.replicas, replicas)
        chunks.append(recs)
        for name in header_names:
            headers[name].extend(part_headers.get(name) or [None] * len(recs))
    records, order = _order_by_seq(chunks, parts[0].records, renumber)
    if header_names:
        index = _merged_positions(chunks, order)
        headers = {name: [values[i] for i in index] for name, values in headers.items()}
    start_ns = min(p.start_ns for p in parts)
    measured_start_ns = min(p.measured_start_ns for p in parts)
    if first_measured_seq is None:
        later = records["seq"][records["intended_ns"] >= measured_start_ns]
        first_measured_seq = int(later.min()) if len(later) else len(records)
    base = parts[0]
    return StepResult(
        path=base.path,
        url=base.url,
        step=base.step,
        offered_rps=base.offered_rps,
        concurrency=(
            sum(p.concurrency or 0 for p in parts) if base.concurrency is not None else None
        ),
        engine=base.engine,
        records=records,
        first_measured_seq=first_measured_seq,
        start_ns=start_ns,
        measured_start_ns=measured_start_ns,
        measured_end_ns=max(p.measured_end_ns for p in parts),
        replicas=list(replicas),
        headers=headers,
        loop_lag_ns=np.concatenate([p.loop_lag_ns for p in parts]).astype(np.int64),
        in_flight_cap_hits=sum(p.in_flight_cap_hits for p in parts),
        aborted=next((p.aborted for p in parts if p.aborted is not None), None),
        interrupted=any(p.interrupted for p in parts),
        tally=tally,
        sample_stride=stride,
    )


def merge_step(parts: Sequence[StepResult], plan: StepPlan) -> StepResult:
    """The one result of ``plan``'s step from the workers' ``parts``: open loop keeps the plan's
    own ``seq`` and its first measured request; closed loop renumbers in sending order and
    reports the whole plan's concurrency."""
    if plan.offsets_ns is not None:
        return merge_results(parts, first_measured_seq=plan.first_measured_seq)
    merged = merge_results(parts, renumber=True)
    merged.concurrency = plan.concurrency
    return merged


def _thinned(part: StepResult, stride: int) -> tuple[Records, _Headers]:
    """``part``'s records and header lists as a part thinned to ``stride`` would hold them.

    The thinning is by ``seq`` (:func:`~pathprobe.load.store.kept_mask`), so the parts together
    stay one systematic sample; a part already at ``stride`` comes back as it is."""
    if part.sample_stride == stride:
        return part.records, part.headers
    keep = kept_mask(part.records["seq"], stride)
    headers = {
        name: [v for v, k in zip(values, keep.tolist(), strict=True) if k]
        for name, values in part.headers.items()
    }
    return part.records[keep], headers


def _remap_replicas(recs: Records, names: list[str], replicas: dict[str, int]) -> Records:
    """``recs`` with its replica column indexing the united table ``replicas`` instead of the
    part's own ``names``; names not yet in ``replicas`` are added to it (first seen, first
    numbered). ``recs`` itself is never written: a remapped copy is returned."""
    table = np.array(
        [replicas.setdefault(name, len(replicas)) for name in names],
        dtype=np.int16,
    )
    if np.array_equal(table, np.arange(len(table))):
        return recs  # the part's numbering is the united one: nothing to remap
    recs = recs.copy()
    known = recs["replica"] >= 0  # -1: no replica header on that response
    recs["replica"][known] = table[recs["replica"][known]]
    return recs


def _order_by_seq(
    chunks: list[Records], empty: Records, renumber: bool
) -> tuple[Records, npt.NDArray[np.intp] | None]:
    """The records of ``chunks`` in one array sorted by ``seq`` (with ``renumber``: by send time,
    ``seq`` rewritten to the order of sending), and the order that sorted their concatenation
    (``None`` when they were scattered by ``seq`` instead; see :func:`_merged_positions`).
    ``empty`` gives the dtype when there are no chunks."""
    total = sum(len(c) for c in chunks)
    seqs = [c["seq"] for c in chunks]
    if (
        not renumber
        and total
        and all(len(q) == 0 or (q.min() >= 0 and q.max() < total) for q in seqs)
    ):
        scattered = _scatter_by_seq(chunks, seqs, total)
        if scattered is not None:
            return scattered, None
    joined = np.concatenate(chunks) if chunks else empty[:0]
    if renumber:
        # Stable radix sort on the send time (closed loop: intended = actual).
        order = np.argsort(joined["intended_ns"], kind="stable")
        records = joined[order]
        records["seq"] = np.arange(len(records), dtype=np.int64)
    else:
        order = np.argsort(joined["seq"], kind="stable")
        records = joined[order]
    return records, order


def _merged_positions(chunks: list[Records], order: npt.NDArray[np.intp] | None) -> list[int]:
    """For each merged record, its position in the concatenated ``chunks``: what reorders the
    lists that follow the records (captured headers) as :func:`_order_by_seq` reordered them."""
    if order is not None:
        positions: list[int] = order.tolist()
        return positions
    # Scattered by seq (0 .. total-1): the concatenated position of each seq.
    seqs = [c["seq"] for c in chunks]
    position = np.empty(sum(len(q) for q in seqs), dtype=np.int64)
    offset = 0
    for q in seqs:
        position[q] = np.arange(offset, offset + len(q))
        offset += len(q)
    return position.tolist()


def _scatter_by_seq(
    chunks: list[Records], seqs: list[npt.NDArray[np.int64]], total: int
) -> Records | None:
    """The usual open-loop case: when the seqs are exactly 0 .. total-1, each record goes
    straight to its place (one scatter instead of concatenate + argsort + gather). ``None`` when
    they are not (duplicates or holes): the caller sorts instead."""
    records = np.empty(total, dtype=chunks[0].dtype)
    filled = np.zeros(total, dtype=bool)
    for chunk, q in zip(chunks, seqs, strict=True):
        records[q] = chunk
        filled[q] = True
    return records if filled.all() else None
