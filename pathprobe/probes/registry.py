"""The explicit list of probes a diagnosis runs (plugins by Protocol, listed here).

Order matters: probes start in list order and stop in the same order. The client probe comes first
so its CPU sampler and loop-lag timer cover the other probes' own start-up work; the network probe
next (its idle-RTT connects run in ``open`` before any load); the server probe last (py-spy start
is the slowest).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pathprobe.config import DiagnoseConfig
from pathprobe.grpc_url import is_grpc_url
from pathprobe.probes.base import JSONDict, Probe
from pathprobe.probes.client import ClientProbe
from pathprobe.probes.network import NetworkProbe
from pathprobe.probes.server import make_server_probe


def build_probes(
    config: DiagnoseConfig,
    client_pids: Callable[[], Sequence[int]],
    load_generators: Callable[[], list[JSONDict]] | None = None,
) -> list[Probe]:
    """The probes for ``config``, in the order they are started (client first).

    Every probe is always listed: one that cannot observe (no root, no ``--server-pid``,
    ``--no-capture``) says why in its report section instead of being silently left out.
    The server probe is the agent-backed one when ``--agent URL`` is given.
    ``load_generators`` gives the accounts of workers that measure themselves (Ray actors).
    """
    probes: list[Probe] = [
        ClientProbe(client_pids, load_generators),
        NetworkProbe(config.probes, [p.url for p in config.paths]),
        make_server_probe(config.probes),
    ]
    if is_grpc_url(config.paths[0].url):
        # gRPC runs only (it needs grpcio): Triton's ModelStatistics, when the server has it.
        from pathprobe.probes.model_stats import ModelStatsProbe

        probes.append(ModelStatsProbe(config))
    return probes
