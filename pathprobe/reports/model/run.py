"""``run`` of report.json, typed: the load generators of a distributed run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pathprobe.reports.fields import as_list, as_map, num
from pathprobe.reports.model.values import text, texts


@dataclass(frozen=True)
class LostWork:
    """A load generator's ``lost``: the requests it never sent, and where."""

    path: str | None
    step: float | None
    unsent_requests: float | None


@dataclass(frozen=True)
class LoadGenerator:
    """One row of ``run.load_generators`` (a Ray load worker)."""

    worker: float | None
    address: str | None
    node: str | None
    requests: float | None
    cpu_percent: float | None
    clock_offset_ms: float | None
    clock_uncertainty_ms: float | None
    lost: LostWork | None  # None when missing or empty

    @classmethod
    def from_json(cls, raw: Any) -> LoadGenerator:
        g = as_map(raw)
        lost = as_map(g.get("lost"))
        return cls(
            worker=num(g.get("worker")),
            address=text(g.get("address")),
            node=text(g.get("node")),
            requests=num(g.get("requests")),
            cpu_percent=num(g.get("cpu_percent")),
            clock_offset_ms=num(g.get("clock_offset_ms")),
            clock_uncertainty_ms=num(g.get("clock_uncertainty_ms")),
            lost=LostWork(
                path=text(lost.get("path")),
                step=num(lost.get("step")),
                unsent_requests=num(lost.get("unsent_requests")),
            )
            if lost
            else None,
        )


@dataclass(frozen=True)
class RunInfo:
    """``run``: how the report came about. ``config`` is the resolved configuration as stored
    (any JSON value); ``host`` values are loosely known and shown by their key's unit."""

    argv: tuple[str, ...]
    command: str | None
    config: Any
    versions: tuple[tuple[str, str | None], ...]
    host: tuple[tuple[str, Any], ...]
    started_at: str | None
    ended_at: str | None
    load_generators: tuple[LoadGenerator, ...]

    @classmethod
    def from_json(cls, raw: Any) -> RunInfo:
        run = as_map(raw)
        return cls(
            argv=texts(run.get("argv")),
            command=text(run.get("command")),
            config=run.get("config"),
            versions=tuple((str(k), text(v)) for k, v in as_map(run.get("versions")).items()),
            host=tuple((str(k), v) for k, v in as_map(run.get("host")).items()),
            started_at=text(run.get("started_at")),
            ended_at=text(run.get("ended_at")),
            load_generators=tuple(
                LoadGenerator.from_json(g) for g in as_list(run.get("load_generators"))
            ),
        )
