"""Triton's statistics extension, differenced over each window: the server's own split.

``ModelStatistics`` answers cumulative counters per model since the server started: successful and
failed requests, and the total time they spent queued, preparing inputs (``compute_input``), in the
model (``compute_infer``) and extracting outputs (``compute_output``). Read at the start and at the
end of each window, their difference divided by the requests completed in between is the mean time
per request in each phase during that window.

Two cautions the report carries: the numbers are **model-wide** (every client's requests to that
model count, not only pathprobe's), and they are read from the server behind the **innermost**
path (through a load balancer the query would land on any replica), so under an LB over R
replicas they describe one of them. A server without the extension answers UNIMPLEMENTED: the
probe then says so and observes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pathprobe.config import DiagnoseConfig
from pathprobe.probes.base import JSONDict, Unavailable, Window
from pathprobe.redact import redact_url

QUERY_TIMEOUT_S = 2.0
STATS_METHOD = "/inference.GRPCInferenceService/ModelStatistics"
PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class Counters:
    """One reading of a model's cumulative statistics (counts and nanoseconds)."""

    success: int
    fail: int
    phase_ns: tuple[int, ...]  # in the order of PHASES

    @classmethod
    def of(cls, model_stats: Any) -> Counters:
        """Summed over the versions answered (a request without a version may get several)."""
        success = fail = 0
        phase = [0] * len(PHASES)
        for entry in model_stats:
            stats = entry.inference_stats
            success += stats.success.count
            fail += stats.fail.count
            for i, name in enumerate(PHASES):
                phase[i] += getattr(stats, name).ns
        return cls(success, fail, tuple(phase))


def window_split(before: Counters, after: Counters) -> JSONDict:
    """Requests completed between two readings and the mean milliseconds of each phase.

    A counter that went down (the server restarted in between) makes the window unusable.
    """
    done = after.success - before.success
    failed = after.fail - before.fail
    deltas = [a - b for a, b in zip(after.phase_ns, before.phase_ns, strict=True)]
    if done < 0 or failed < 0 or any(d < 0 for d in deltas):
        return {"requests": None, "note": "counters went down: the server restarted"}
    split: JSONDict = {"requests": done, "failed": failed}
    for name, delta in zip(PHASES, deltas, strict=True):
        split[f"{name}_ms"] = round(delta / done / 1e6, 4) if done else None
    return split


class ModelStatsProbe:
    """Reads ModelStatistics of the innermost gRPC path's model around every window."""

    name = "model_stats"

    def __init__(self, config: DiagnoseConfig) -> None:
        from pathprobe.grpc_url import parse_grpc_url

        inner = config.paths[0]
        self._url = inner.url
        self._target = parse_grpc_url(inner.url)
        self._tls = config.load.tls
        self._metadata = tuple((k.lower(), v) for k, v in config.load.headers)
        self._unavailable: Unavailable | None = None
        self._before: Counters | None = None
        self._windows: list[JSONDict] = []
        self._channel: Any = None
        self._call: Any = None

    async def open(self) -> None:
        from pathprobe.grpcproto import grpc_predict_v2_pb2 as pb
        from pathprobe.load.grpc_engine import open_channel

        self._channel = open_channel(self._target, self._tls, 64 << 20)
        self._call = self._channel.unary_unary(
            STATS_METHOD,
            request_serializer=pb.ModelStatisticsRequest.SerializeToString,
            response_deserializer=pb.ModelStatisticsResponse.FromString,
        )
        await self._read()  # one reading now tells whether the server has the extension

    async def _read(self) -> Counters | None:
        import grpc

        from pathprobe.grpcproto import grpc_predict_v2_pb2 as pb

        if self._unavailable is not None or self._call is None:
            return None
        request = pb.ModelStatisticsRequest(name=self._target.model, version=self._target.version)
        try:
            answer = await self._call(request, timeout=QUERY_TIMEOUT_S, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                self._unavailable = Unavailable(
                    "the server has no statistics extension (ModelStatistics: UNIMPLEMENTED)",
                    "use a server that has it (Triton, KServe runtimes with statistics)",
                )
            else:
                self._unavailable = Unavailable(
                    f"ModelStatistics failed ({exc.code().name}: {exc.details()})"[:300],
                    "check that the model is loaded and the statistics extension enabled",
                )
            return None
        return Counters.of(answer.model_stats)

    async def start_window(self, window: Window) -> None:
        self._before = await self._read()

    async def stop_window(self, window: Window) -> JSONDict:
        after = await self._read()
        summary: JSONDict = {"path": window.path, "step": window.step}
        if self._before is not None and after is not None:
            summary.update(window_split(self._before, after))
            self._windows.append(summary)
        self._before = None
        return summary

    async def close(self) -> JSONDict:
        if self._channel is not None:
            await self._channel.close(grace=None)
        if self._unavailable is not None:
            return {**self._unavailable.as_json(), "windows": []}
        return {
            "available": True,
            "reason": None,
            "how_to_enable": None,
            "source": redact_url(self._url),
            "model_wide": True,
            "note": "model-wide (every client's requests to the model count), read from the "
            "server behind the innermost path; mean milliseconds per completed request",
            "windows": self._windows,
        }
