"""What every stage's finding reads, built once per analysis, and the finding itself."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pathprobe.analysis.client_gate import GateResult
from pathprobe.analysis.decompose import Decomposition
from pathprobe.analysis.evidence import (
    FailureEvidence,
    NetworkEvidence,
    ServerEvidence,
)
from pathprobe.analysis.stage_means import PathSets
from pathprobe.run import RunResult

#: A stage must explain at least this share of the tail latency to clear its bar. A stage whose
#: complete removal would shorten the tail by less than a tenth did not make a target miss by a
#: meaningful amount; a tenth is also above the run-to-run drift of a tail over short windows.
BAR_SHARE_OF_TAIL = 0.10
#: ...and at least this many ms (timer resolution, loopback noise).
BAR_FLOOR_MS = 2.0


@dataclass
class StageFinding:
    stage: str
    explains_ms: float = 0.0
    p50_ms: float = 0.0
    evidence: list[str] = field(default_factory=list)
    clears_bar: bool = False
    stands_out: bool = False
    direct_evidence: bool = False  # measured by the stage's own signal, not inferred
    # Failed requests (errors as the targets count them) this stage explains at the focus step.
    failures_explained: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "explains_ms": round(self.explains_ms, 3),
            "p50_ms": round(self.p50_ms, 3),
            "evidence": list(self.evidence),
            "clears_bar": self.clears_bar,
            "stands_out": self.stands_out,
            **(
                {"failures_explained": round(self.failures_explained, 1)}
                if self.failures_explained
                else {}
            ),
        }


@dataclass(frozen=True)
class OomEvidence:
    """Whether OOM cleared its bar on any path, with the sentences that say why."""

    clears_bar: bool
    evidence: tuple[str, ...]


@dataclass(frozen=True)
class FindingContext:
    """Everything the stage findings read about one analysis (the focus step of every path)."""

    run: RunResult
    #: The paths measured, innermost first.
    names: tuple[str, ...]
    #: The path the verdict is about (the outermost measured).
    outer: str
    focus_step: int
    #: Path → its stage means over the tail and median sets.
    sets: Mapping[str, PathSets]
    decompositions: Mapping[str, Decomposition]
    hop_deltas: Sequence[Mapping[str, Any]]
    network: Mapping[str, NetworkEvidence]
    server: Mapping[str, ServerEvidence]
    failures: Mapping[str, FailureEvidence]
    gate: GateResult
    oom: OomEvidence
    transfer_slope_ms_per_byte: float
    #: Path → the rate where it stops keeping up (None when it kept up).
    knee: Mapping[str, float | None]

    @property
    def tail_label(self) -> str:
        outer = self.sets.get(self.outer)
        return outer.label if outer is not None else "p99"

    @property
    def tail_latency_ms(self) -> float | None:
        outer = self.sets.get(self.outer)
        return outer.tail_latency_ms if outer is not None else None

    @property
    def tail(self) -> Mapping[str, float]:
        """Stage → mean ms over the outer path's tail set."""
        outer = self.sets.get(self.outer)
        return outer.tail if outer is not None else {}

    @property
    def bar_ms(self) -> float:
        """What a stage must explain of the tail to clear its bar."""
        return max(BAR_FLOOR_MS, BAR_SHARE_OF_TAIL * (self.tail_latency_ms or 0.0))

    @property
    def where(self) -> str:
        """The tail the findings quote: "lb p99 123.4 ms"."""
        return f"{self.outer} {self.tail_label} {self.tail_latency_ms or 0.0:.1f} ms"

    @property
    def outer_decomposition(self) -> Decomposition | None:
        return self.decompositions.get(self.outer)

    @property
    def outer_network(self) -> NetworkEvidence:
        return self.network.get(self.outer) or NetworkEvidence()

    @property
    def outer_server(self) -> ServerEvidence:
        return self.server.get(self.outer) or ServerEvidence()

    def base_finding(self, stage: str) -> StageFinding:
        """``stage`` with what it explains on the outer path and no evidence yet."""
        outer = self.sets.get(self.outer)
        p50 = outer.p50 if outer is not None else {}
        return StageFinding(
            stage,
            explains_ms=float(self.tail.get(stage, 0.0)),
            p50_ms=float(p50.get(stage, 0.0)),
        )
