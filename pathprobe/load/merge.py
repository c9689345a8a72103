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

from pathprobe.load.store import kept_mask
from pathprobe.model.records import Records
from pathprobe.model.results import StepResult, Tally, tally_of


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
    headers: dict[str, list[str | None]] = {name: [] for name in header_names}
    for part in parts:
        recs = part.records
        part_headers = part.headers
        if part.sample_stride != stride:
            keep = kept_mask(recs["seq"], stride)
            recs = recs[keep]
            part_headers = {
                name: [v for v, k in zip(values, keep.tolist(), strict=True) if k]
                for name, values in part.headers.items()
            }
        if part.replicas:
            table = np.array(
                [replicas.setdefault(name, len(replicas)) for name in part.replicas],
                dtype=np.int16,
            )
            if not np.array_equal(table, np.arange(len(table))):  # else nothing to remap
                recs = recs.copy()
                known = recs["replica"] >= 0
                recs["replica"][known] = table[recs["replica"][known]]
        chunks.append(recs)
        for name in header_names:
            headers[name].extend(part_headers.get(name) or [None] * len(recs))
    total = sum(len(c) for c in chunks)
    seqs = [c["seq"] for c in chunks]
    records: Records | None = None
    order: npt.NDArray[np.intp] | None = None
    if (
        not renumber
        and total
        and all(len(q) == 0 or (q.min() >= 0 and q.max() < total) for q in seqs)
    ):
        # The usual open-loop case: seqs are exactly 0 .. total-1, so each record goes straight
        # to its place (one scatter instead of concatenate + argsort + gather).
        records = np.empty(total, dtype=chunks[0].dtype)
        filled = np.zeros(total, dtype=bool)
        for chunk, q in zip(chunks, seqs, strict=True):
            records[q] = chunk
            filled[q] = True
        if not filled.all():  # duplicates or holes: fall back to sorting
            records = None
    if records is None:
        joined = np.concatenate(chunks) if chunks else parts[0].records[:0]
        if renumber:
            # Stable radix sort on the send time (closed loop: intended = actual).
            order = np.argsort(joined["intended_ns"], kind="stable")
            records = joined[order]
            records["seq"] = np.arange(len(records), dtype=np.int64)
        else:
            order = np.argsort(joined["seq"], kind="stable")
            records = joined[order]
    if header_names:
        if order is not None:
            index = order.tolist()
        else:  # scattered by seq: the concatenated position of each seq
            position = np.empty(total, dtype=np.int64)
            offset = 0
            for q in seqs:
                position[q] = np.arange(offset, offset + len(q))
                offset += len(q)
            index = position.tolist()
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
