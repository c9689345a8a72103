"""The :class:`Testbed`: two model-server replicas, an nginx sidecar each, haproxy over both.

    with Testbed(faults=["proxy_queue"], stack="aiohttp") as tb:
        tb.urls["direct"], tb.urls["proxy"], tb.urls["lb"]   # http://HOST:PORT
        tb.server_pids                                       # the servers' master PIDs

``instrumented=False`` gives the bare variant: no ``Server-Timing`` from the servers and no timing
headers from nginx or haproxy (the replica header stays), as on most production paths.

Everything it starts is recorded (see :mod:`pathprobe.testbed.state`) as soon as it exists, and
:meth:`Testbed.stop` — also called when :meth:`start` fails half-way or is interrupted — removes
exactly that: our process groups by PID, our namespace with its rules and qdiscs, our cgroups.
The servers, nginx and haproxy are pinned to ``server_cpu``; the client should run on
``client_cpu`` so a server fault does not starve it (design.md §6).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from shutil import which
from types import TracebackType
from typing import Any

from pathprobe.errors import CannotRunError, UsageError
from pathprobe.signals import signals_ignored
from pathprobe.testbed import cgroup, netns, state
from pathprobe.testbed.faults import (
    FAULTS,
    NETWORK_FAULTS,
    relevant_magnitudes,
    resolve_magnitudes,
    validate_faults,
    validate_stack,
)
from pathprobe.testbed.procs import ProcRecord, free_port, pin_process_group, spawn
from pathprobe.testbed.render import render_haproxy, render_nginx
from pathprobe.testbed.settings import ENV_VAR, ServerSettings

REPLICAS = ("r1", "r2")
LB_TIMERS_HEADER = "x-haproxy-timers"
START_TIMEOUT_S = 90.0

#: Where each stack puts its time, for the report and for attribution rules.
STACK_FUNCTIONS: dict[str, dict[str, list[str]]] = {
    "fastapi": {
        "preprocessing": ["preprocess_image", "decode_image", "resize_image", "normalize_pixels",
                          "denoise_full_resolution", "expand_pixel_pyramid"],
        "inference": ["DigitModel.predict_digit", "DigitModel.refine_with_ensemble",
                      "TabularModel.predict_rows"],
        "server_timing": ["preprocess", "inference"],
    },
    "aiohttp": {
        "preprocessing": ["prepare_input", "load_jpeg", "fit_to_input", "standardize_array",
                          "sharpen_and_equalize", "build_scale_space"],
        "inference": ["ConvNet.forward", "ConvNet.deep_residual_blocks", "WineModel.score_table"],
        "server_timing": ["prep", "model"],
    },
    # Names no default name rule knows: its stages show through the libraries they call
    # (Pillow, numpy, scikit-learn), as in a service pathprobe has never seen.
    "wsgi": {
        "preprocessing": ["photo_to_features", "open_photo", "shrink_photo", "scale_pixels",
                          "enhance_details", "stack_octaves"],
        "inference": ["GlyphScorer.score", "GlyphScorer.vote_with_jitter",
                      "FlowerModel.rank_rows"],
        "server_timing": [],
    },
}  # fmt: skip


@dataclass(frozen=True)
class _Ports:
    """The ports the testbed listens on: per replica its server's and its nginx's, haproxy's,
    and with gRPC per replica ``(server, nginx)`` and haproxy's gRPC port."""

    server: dict[str, int]
    nginx: dict[str, int]
    lb: int
    grpc: dict[str, tuple[int, int]]
    grpc_lb: int | None

    @classmethod
    def allocate(cls, grpc: bool) -> _Ports:
        """Free ports for every listener (the gRPC ones only with ``grpc``)."""
        server = {r: free_port() for r in REPLICAS}
        nginx = {r: free_port() for r in REPLICAS}
        lb = free_port()
        grpc_ports = {r: (free_port(), free_port()) for r in REPLICAS} if grpc else {}
        grpc_lb = free_port() if grpc else None
        return cls(server, nginx, lb, grpc_ports, grpc_lb)


class Testbed:
    """A real request path on this machine with optional faults. See the module docstring."""

    __test__ = False  # not a pytest test class, though its name starts with "Test"

    def __init__(
        self,
        faults: Sequence[str] = (),
        stack: str = "fastapi",
        workdir: Path | None = None,
        server_cpu: int | None = 1,
        magnitudes: Mapping[str, Any] | None = None,
        replica_header: str = "x-replica",
        state_file: Path | None = None,
        instrumented: bool = True,
        grpc: bool = False,
    ) -> None:
        self.faults = validate_faults(faults)
        self.stack = validate_stack(stack)
        # True: the model also answers ModelInfer over gRPC, through nginx (grpc_pass) and
        # haproxy (HTTP/2 both ways); its paths are in grpc_urls. The aiohttp stack only.
        self.grpc = bool(grpc)
        if self.grpc and self.stack != "aiohttp":
            raise UsageError("the gRPC testbed runs the aiohttp stack only (--stack aiohttp)")
        self.grpc_urls: dict[str, str] = {}
        # False: the "bare" testbed — no Server-Timing from the servers, no timing headers from
        # nginx or haproxy — as most production paths are. The wsgi stack never sends
        # Server-Timing; there this switches only the hops' headers.
        self.instrumented = bool(instrumented)
        self.magnitudes = resolve_magnitudes(stack, magnitudes)
        self.replica_header = replica_header
        self.lb_timers_header = LB_TIMERS_HEADER
        self.tag = secrets.token_hex(3)
        self._workdir_arg = workdir
        self.workdir: Path = workdir or Path(tempfile.gettempdir()) / f"pathprobe-tb-{self.tag}"
        self.state_file = state_file
        cpus = sorted(os.sched_getaffinity(0))
        if server_cpu is not None and server_cpu in cpus and len(cpus) >= 2:
            self.server_cpu: int | None = server_cpu
            self.client_cpu: int | None = next(c for c in cpus if c != server_cpu)
        else:
            self.server_cpu = self.client_cpu = None
        self.urls: dict[str, str] = {}
        self.server_pids: list[int] = []
        self.netns: str | None = None
        self.host = "127.0.0.1"
        self.cgroups: list[cgroup.MemoryCgroup] = []
        self.started_in_s: float | None = None
        self._popens: dict[int, subprocess.Popen[bytes]] = {}
        self._state: dict[str, Any] | None = None
        self._ns_plan: netns.NetnsPlan | None = None

    # --- context manager ----------------------------------------------------------------------

    def __enter__(self) -> Testbed:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Testbed:
        """Bring everything up and wait until all three URLs answer. On any failure (or Ctrl-C)
        everything already started is torn down before the exception propagates."""
        if self._state is not None:
            raise RuntimeError("testbed already started")
        t0 = time.monotonic()
        owns = self._workdir_arg is None
        self.workdir.mkdir(parents=True, exist_ok=not owns)
        self._state = state.empty_state(self.tag, self.workdir, owns)
        self._state.update(
            stack=self.stack, faults=list(self.faults), instrumented=self.instrumented
        )
        self._save()
        try:
            self._start_all()
        except BaseException as exc:
            log_tail = self._log_tails()
            self.stop()
            if isinstance(exc, Exception):
                raise CannotRunError(f"testbed failed to start: {exc}{log_tail}") from exc
            raise
        self.started_in_s = time.monotonic() - t0
        return self

    def stop(self) -> list[str]:
        """Tear down what this testbed started (idempotent). Returns problems, empty when clean."""
        if self._state is None:
            return []
        # A second Ctrl-C here would leave servers, namespaces or iptables rules behind; the
        # teardown is bounded (processes are killed by PID after a short grace).
        with signals_ignored():
            problems = state.teardown(self._state, keep_workdir=False)
            for popen in self._popens.values():
                try:
                    popen.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
            self._popens.clear()
            self._state = None
            if self.state_file is not None:
                self.state_file.unlink(missing_ok=True)
        return problems

    def owned(self) -> dict[str, Any]:
        """A copy of what this testbed has created (processes, namespace, cgroups), for checks."""
        import copy

        return copy.deepcopy(self._state) if self._state is not None else {}

    def describe(self) -> dict[str, Any]:
        """Faults with their magnitudes and the layout, for the report (JSON-serialisable)."""
        timed = self.instrumented
        return {
            "stack": self.stack,
            "faults": [{"name": f, "stage": FAULTS[f]} for f in self.faults],
            "magnitudes": relevant_magnitudes(self.faults, self.magnitudes),
            "urls": dict(self.urls),
            **({"grpc_urls": dict(self.grpc_urls)} if self.grpc else {}),
            "replicas": list(REPLICAS),
            # Which timing headers the responses carry: none on a bare testbed.
            "instrumented": self.instrumented,
            "server_timing": timed and bool(STACK_FUNCTIONS[self.stack]["server_timing"]),
            "replica_header": self.replica_header,
            "lb_timers_header": self.lb_timers_header if timed else None,
            "upstream_time_header": "x-upstream-header-time" if timed else None,
            "server_pids": list(self.server_pids),
            "server_cpu": self.server_cpu,
            "client_cpu": self.client_cpu,
            "netns": self.netns,
            "functions": STACK_FUNCTIONS[self.stack],
            "started_in_s": self.started_in_s,
        }

    # --- internals ------------------------------------------------------------------------------

    def _save(self) -> None:
        if self.state_file is not None and self._state is not None:
            state.save(self._state, self.state_file)

    def _record(self, popen: subprocess.Popen[bytes], record: ProcRecord) -> None:
        assert self._state is not None
        self._popens[record.pid] = popen
        self._state["processes"].append(record.to_json())
        self._save()

    def _check_tools(self) -> None:
        needed = {"nginx": "nginx-light", "haproxy": "haproxy", "taskset": "util-linux"}
        if NETWORK_FAULTS & set(self.faults):
            needed.update({"ip": "iproute2", "tc": "iproute2", "iptables": "iptables"})
        missing = [f"{tool} (Debian: {pkg})" for tool, pkg in needed.items() if not which(tool)]
        if missing:
            raise CannotRunError(f"the testbed needs {', '.join(missing)}")

    def _start_all(self) -> None:
        """Start servers, nginx sidecars, haproxy and the faults' helpers in dependency order,
        waiting for each layer to answer before starting the one in front of it. Everything is
        recorded in ``self._state`` as it is created, so :meth:`stop` can undo a partial start."""
        assert self._state is not None
        self._check_tools()
        prefix: list[str] = []
        bind_host = "127.0.0.1"
        if NETWORK_FAULTS & set(self.faults):
            prefix, bind_host = self._create_namespace()
        pin = ["taskset", "-c", str(self.server_cpu)] if self.server_cpu is not None else []
        # `ip netns exec` then taskset: the proxies run in the namespace, pinned from exec. The
        # model servers run there too but boot on every core and are pinned once their workers
        # answer (_start_servers): their imports and model loads are CPU-bound, and two replicas
        # on one core took 5–6 s to come up instead of about half that. Nothing is measured
        # before the pin.
        launch = [*prefix, *pin]
        ports = _Ports.allocate(self.grpc)
        self._start_servers(ports, prefix, bind_host)
        self._start_nginx(ports, launch, bind_host)
        self._start_haproxy(ports, launch, bind_host)
        self._publish_urls(ports)
        for replica in REPLICAS:
            self._wait_http(
                f"http://{self.host}:{ports.nginx[replica]}/healthz", f"nginx-{replica}"
            )
        self._wait_http(f"{self.urls['lb']}/healthz", "haproxy")
        for name, url in self.grpc_urls.items():
            self._wait_tcp(url, f"gRPC {name}")

        # Network faults last, so bring-up itself is not slowed by them.
        if self._ns_plan is not None:
            self._apply_network_faults(self._ns_plan)
        if "starved_client" in self.faults:
            self._start_hog()

    def _create_namespace(self) -> tuple[list[str], str]:
        """Create the network namespace the network faults act in; returns the argv prefix that
        runs a command inside it and the address to bind there."""
        assert self._state is not None
        plan = netns.plan(self.tag)
        self._ns_plan = plan
        # Recorded before creation: a half-made namespace is removed too.
        self._state["netns"] = {"name": plan.name, "outer_if": plan.outer_if}
        self._save()
        netns.create(plan)
        self.netns, self.host = plan.name, plan.inner_ip
        return plan.exec_prefix(), "0.0.0.0"

    def _start_servers(self, ports: _Ports, launch: list[str], bind_host: str) -> None:
        """Start the model server of each replica and wait until all their workers answer; with
        the ``oom`` fault, each in its own memory cgroup, limited once the workers are up."""
        assert self._state is not None
        for replica in REPLICAS:
            # cgroup first: `ip netns exec` mounts a fresh /sys without the cgroup hierarchy.
            argv = [*self._oom_cgroup_wrap(replica), *launch,
                    *self._server_argv(bind_host, ports.server[replica])]  # fmt: skip
            if self.grpc:
                argv += ["--grpc-port", str(ports.grpc[replica][0])]
            log_path = self.workdir / f"server-{replica}.log"
            popen, record = spawn(f"server-{replica}", argv, log_path=log_path,
                                  env=self._server_env(replica), cwd=self.workdir)  # fmt: skip
            self._record(popen, record)
            self.server_pids.append(record.pid)
        self._state["server_pids"] = list(self.server_pids)
        for replica in REPLICAS:
            self._wait_http(
                f"http://{self.host}:{ports.server[replica]}/healthz", f"server-{replica}"
            )
        # One worker answering /healthz is not all of them: the memory limit below is taken from
        # the usage of every worker, and a diagnosis must meet the server's full concurrency.
        self._wait_workers()
        if self.server_cpu is not None:
            for pid in self.server_pids:
                pin_process_group(pid, self.server_cpu)
        if self.cgroups:
            headroom = int(self.magnitudes["oom_headroom_mb"] * 1024 * 1024)
            for cg in self.cgroups:
                cg.set_limit_bytes(cg.anonymous_bytes() + headroom)

    def _oom_cgroup_wrap(self, replica: str) -> list[str]:
        """With the ``oom`` fault: create ``replica``'s memory cgroup and return the argv prefix
        that starts a command inside it. Without: nothing to prefix."""
        assert self._state is not None
        if "oom" not in self.faults:
            return []
        cg = cgroup.create(f"{self.tag}-{replica}")
        self.cgroups.append(cg)
        self._state["cgroups"].append(str(cg.path))
        self._save()
        # The launcher joins the cgroup itself before exec, so every worker is inside.
        return ["sh", "-c", f'echo $$ > {cg.procs_file} && exec "$@"', "sh"]

    def _start_nginx(self, ports: _Ports, launch: list[str], bind_host: str) -> None:
        """Write each replica's nginx config (in front of its server) and start it."""
        limit_rps = self.magnitudes["proxy_rate_rps"] if "proxy_queue" in self.faults else None
        for replica in REPLICAS:
            tmp = self.workdir / f"nginx-{replica}-tmp"
            tmp.mkdir(exist_ok=True)
            conf = self.workdir / f"nginx-{replica}.conf"
            conf.write_text(render_nginx(
                replica=replica, workdir=self.workdir, listen_host=bind_host,
                listen_port=ports.nginx[replica], server_port=ports.server[replica],
                limit_rate_rps=limit_rps,
                limit_burst=int(self.magnitudes["proxy_burst"]), run_as_root=os.geteuid() == 0,
                instrumented=self.instrumented,
                grpc_ports=(ports.grpc[replica][1], ports.grpc[replica][0]) if self.grpc else None,
            ))  # fmt: skip
            argv = [*launch, "nginx", "-e", "stderr", "-p", str(self.workdir), "-c", str(conf)]
            popen, record = spawn(
                f"nginx-{replica}", argv, log_path=self.workdir / f"nginx-{replica}.log"
            )
            self._record(popen, record)

    def _start_haproxy(self, ports: _Ports, launch: list[str], bind_host: str) -> None:
        """Write haproxy's config (balancing over the replicas' nginx) and start it."""
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(render_haproxy(
            workdir=self.workdir, listen_host=bind_host, listen_port=ports.lb,
            backends=[(r, ports.nginx[r]) for r in REPLICAS],
            maxconn=int(self.magnitudes["lb_maxconn"]) if "lb_queue" in self.faults else None,
            timers_header=self.lb_timers_header, instrumented=self.instrumented,
            grpc_listen_port=ports.grpc_lb,
            grpc_backends=[(r, ports.grpc[r][1]) for r in ports.grpc],
        ))  # fmt: skip
        popen, record = spawn("haproxy", [*launch, "haproxy", "-db", "-f", str(cfg)],
                              log_path=self.workdir / "haproxy.log")  # fmt: skip
        self._record(popen, record)

    def _publish_urls(self, ports: _Ports) -> None:
        """Set :attr:`urls` (and :attr:`grpc_urls`) of the three hops and record them, with
        haproxy's stats socket, in the state."""
        assert self._state is not None
        self.urls = {
            "direct": f"http://{self.host}:{ports.server['r1']}",
            "proxy": f"http://{self.host}:{ports.nginx['r1']}",
            "lb": f"http://{self.host}:{ports.lb}",
        }
        self._state["urls"] = dict(self.urls)
        if self.grpc:
            from pathprobe.testbed.grpc_service import MODEL

            self.grpc_urls = {
                "direct": f"grpc://{self.host}:{ports.grpc['r1'][0]}/models/{MODEL}",
                "proxy": f"grpc://{self.host}:{ports.grpc['r1'][1]}/models/{MODEL}",
                "lb": f"grpc://{self.host}:{ports.grpc_lb}/models/{MODEL}",
            }
            self._state["grpc_urls"] = dict(self.grpc_urls)
        self._state["stats_socket"] = str(self.workdir / "haproxy.sock")
        self._save()

    def _start_hog(self) -> None:
        """The ``starved_client`` fault: a CPU hog on the client's core."""
        if self.client_cpu is None:
            raise CannotRunError("starved_client needs at least 2 CPUs (client and server cores)")
        # taskset pins it from exec on; the hog pins itself again (harmless) when run alone.
        argv = ["taskset", "-c", str(self.client_cpu),
                sys.executable, "-m", "pathprobe.testbed.hog", "--cpu", str(self.client_cpu),
                "--duty", str(self.magnitudes["starved_client_duty"]),
                "--period-ms", str(self.magnitudes["starved_client_period_ms"])]  # fmt: skip
        popen, record = spawn("hog", argv, log_path=self.workdir / "hog.log")
        self._record(popen, record)
        # taskset applies the mask only once it runs; pin now so it holds from this moment.
        with contextlib.suppress(OSError):
            os.sched_setaffinity(popen.pid, {self.client_cpu})

    def _apply_network_faults(self, plan: netns.NetnsPlan) -> None:
        if "net_delay" in self.faults:
            argv = [*plan.exec_prefix(), sys.executable, "-m", "pathprobe.testbed.nfq_delay",
                    "--queue", str(netns.NFQUEUE_NUM),
                    "--delay-ms", str(self.magnitudes["net_delay_ms"])]  # fmt: skip
            if self.server_cpu is not None:
                argv = [*plan.exec_prefix(), "taskset", "-c", str(self.server_cpu), *argv[4:]]
            popen, record = spawn("nfq-delay", argv, log_path=self.workdir / "nfq-delay.log")
            self._record(popen, record)
            self._wait_log(self.workdir / "nfq-delay.log", "nfq_delay: queue", popen)
            netns.add_delay_rules(plan)
        if "net_loss" in self.faults:
            netns.add_loss(plan, self.magnitudes["net_loss_pct"])
        if "net_bandwidth" in self.faults:
            netns.add_bandwidth_limit(plan, self.magnitudes["net_bandwidth_mbit"])

    def _server_argv(self, host: str, port: int) -> list[str]:
        if self.stack == "aiohttp":
            return [sys.executable, "-m", "pathprobe.testbed.aiohttp_server",
                    "--host", host, "--port", str(port)]  # fmt: skip
        settings = self._settings()
        single = settings.has("single_concurrency")
        argv = [sys.executable, "-m", "gunicorn", "--preload", "-w", str(settings.workers),
                "--bind", f"{host}:{port}",
                "--timeout", "120", "--graceful-timeout", "3", "--log-level", "warning",
                "--backlog", "2048", "-c", "python:pathprobe.testbed.gunicorn_hooks"]  # fmt: skip
        if _gunicorn_has_control_socket():
            # gunicorn >= 25 opens one control socket per user: two replicas would collide.
            argv.append("--no-control-socket")
        if self.stack == "wsgi":
            if single:
                # The sync worker: one process, one request at a time; the rest wait in the
                # listen backlog (never 503), as a default `gunicorn app:app` does.
                argv += ["-k", "sync"]
            else:
                # Threads per worker; keep-alive above any gap between requests of a diagnosis
                # (gunicorn's default 2 s would close idle pooled connections under the client).
                argv += ["-k", "gthread", "--threads", str(settings.threads),
                         "--keep-alive", "30"]  # fmt: skip
            argv.append("pathprobe.testbed.wsgi_server:create_app()")
            return argv
        argv += ["-k", "uvicorn_worker.UvicornWorker",
                 "pathprobe.testbed.fastapi_server:create_app()"]  # fmt: skip
        return argv

    def _settings(self, replica: str = REPLICAS[0]) -> ServerSettings:
        """What a replica's server is told; its worker and thread counts are the testbed's too."""
        return ServerSettings(
            replica=replica,
            faults=self.faults,
            magnitudes=dict(self.magnitudes),
            replica_header=self.replica_header,
            instrumented=self.instrumented,
        )

    def _server_env(self, replica: str) -> dict[str, str]:
        settings = self._settings(replica)
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        # One core per testbed: BLAS thread pools would only fight over it.
        env.update({ENV_VAR: settings.to_env(), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
                    "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})  # fmt: skip
        return env

    def _wait_http(self, url: str, what: str, timeout_s: float = START_TIMEOUT_S) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with opener.open(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except (OSError, urllib.error.URLError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise CannotRunError(f"{what} did not answer at {url} within {timeout_s:.0f} s ({last})")

    def _wait_workers(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until every server master has forked all its workers (gunicorn boots them one by one)."""
        import psutil  # here: `pathprobe --help` imports this module and must stay light

        expected = self._settings().workers
        deadline = time.monotonic() + timeout_s
        for pid in self.server_pids:
            master = psutil.Process(pid)
            while len(master.children()) < expected:
                self._check_alive()
                if time.monotonic() > deadline:
                    raise CannotRunError(
                        f"server {pid} started {len(master.children())} of {expected} workers "
                        f"within {timeout_s:.0f} s"
                    )
                time.sleep(0.05)

    def _wait_tcp(self, url: str, what: str, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until ``url``'s port accepts connections (gRPC has no /healthz to poll over HTTP/1)."""
        parts = urllib.parse.urlsplit(url)
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with socket.create_connection((parts.hostname, parts.port), timeout=2):
                    return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise CannotRunError(f"{what} did not accept at {url} within {timeout_s:.0f} s ({last})")

    def _wait_log(self, path: Path, needle: str, popen: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if path.exists() and needle in path.read_text(errors="replace"):
                return
            if popen.poll() is not None:
                break
            time.sleep(0.05)
        raise CannotRunError(f"{path.stem} did not start")

    def _check_alive(self) -> None:
        for pid, popen in self._popens.items():
            if popen.poll() is not None:
                name = next((p["name"] for p in (self._state or {}).get("processes", [])
                             if p["pid"] == pid), str(pid))  # fmt: skip
                raise CannotRunError(f"{name} exited with code {popen.returncode}")

    def _log_tails(self) -> str:
        tails = []
        for log in sorted(self.workdir.glob("*.log")):
            try:
                lines = log.read_text(errors="replace").strip().splitlines()[-5:]
            except OSError:
                continue
            if lines:
                tails.append(f"\n--- {log.name}\n" + "\n".join(lines))
        return "".join(tails)


def _gunicorn_has_control_socket() -> bool:
    try:
        from importlib.metadata import version

        major = int(version("gunicorn").split(".")[0])
    except Exception:
        return False
    return major >= 25


def stats_socket_query(socket_path: Path, command: str = "show stat") -> str:
    """Ask haproxy's admin socket (tests use it to read queue counters independently)."""
    import socket as _socket

    with _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(socket_path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()
