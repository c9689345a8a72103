"""What one model-server replica is told at start-up, passed through one environment variable.

The testbed writes :class:`ServerSettings` as JSON into ``PATHPROBE_TB_SETTINGS``; the server
(gunicorn app factory or aiohttp master) reads it back. Kept tiny so servers import nothing heavy
from the orchestration side.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field

ENV_VAR = "PATHPROBE_TB_SETTINGS"


@dataclass(frozen=True)
class ServerSettings:
    replica: str = "r1"
    faults: tuple[str, ...] = ()
    magnitudes: dict[str, float] = field(default_factory=dict)
    replica_header: str = "x-replica"
    # False: a "bare" server, as most in production are: no Server-Timing, no debugging headers
    # (the replica header stays: it names a pod, it times nothing).
    instrumented: bool = True

    def has(self, fault: str) -> bool:
        return fault in self.faults

    def magnitude(self, key: str, default: float = 0.0) -> float:
        return float(self.magnitudes.get(key, default))

    @property
    def workers(self) -> int:
        if self.has("single_concurrency"):
            return 1
        return max(1, int(self.magnitude("workers", 2)))

    @property
    def threads(self) -> int:
        """Threads per worker (thread-per-request stacks); one serves one request at a time."""
        if self.has("single_concurrency"):
            return 1
        return max(1, int(self.magnitude("threads", 1)))

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServerSettings:
        raw = json.loads(os.environ.get(ENV_VAR, "{}"))
        return cls(
            # Without a name (e.g. in Kubernetes) the host name — the pod's name — identifies it.
            replica=str(raw.get("replica") or socket.gethostname()),
            faults=tuple(raw.get("faults", ())),
            magnitudes={str(k): float(v) for k, v in raw.get("magnitudes", {}).items()},
            replica_header=str(raw.get("replica_header", "x-replica")),
            instrumented=bool(raw.get("instrumented", True)),
        )
