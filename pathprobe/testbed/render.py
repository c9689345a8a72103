"""Render the nginx and haproxy configurations from the templates shipped in the package (pure)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from string import Template

#: nginx's upstream timers as response headers (seconds, one value per upstream tried).
NGINX_TIMING_HEADERS = (
    "add_header X-Upstream-Header-Time $upstream_header_time always;\n"
    "            add_header X-Upstream-Connect-Time $upstream_connect_time always;"
)


def _template(name: str) -> Template:
    return Template(resources.files("pathprobe.testbed").joinpath("templates", name).read_text())


def render_nginx(
    *,
    replica: str,
    workdir: Path,
    listen_host: str,
    listen_port: int,
    server_port: int,
    limit_rate_rps: float | None = None,
    limit_burst: int = 2000,
    run_as_root: bool = False,
    instrumented: bool = True,
    grpc_ports: tuple[int, int] | None = None,
) -> str:
    """nginx in front of one model server; with ``limit_rate_rps``, requests above it queue.

    ``instrumented`` adds nginx's upstream timers as response headers; without it the proxy is
    bare, as most are: it adds no header that times anything. ``grpc_ports`` (listen, server)
    adds an HTTP/2 server that ``grpc_pass``-es to the model server's gRPC port, with the same
    rate limit and timers.
    """
    zone = limit = ""
    if limit_rate_rps is not None:
        # One shared key ($server_port), so every client counts against the same rate. No
        # ``nodelay``: excess requests wait in the burst queue instead of being rejected.
        rate = f"{max(1, round(limit_rate_rps))}r/s"
        zone = f"limit_req_zone $server_port zone=pptb_{replica}:1m rate={rate};"
        # nginx refuses an explicit "burst=0"; leaving it out means no burst: every request
        # beyond the rate is turned away with limit_req_status.
        burst = f" burst={int(limit_burst)}" if int(limit_burst) > 0 else ""
        limit = f"limit_req zone=pptb_{replica}{burst};\n            limit_req_status 503;"
    return _template("nginx.conf.tmpl").substitute(
        replica=replica,
        workdir=str(workdir),
        listen_host=listen_host,
        listen_port=listen_port,
        server_port=server_port,
        limit_req_zone=zone,
        limit_req=limit,
        user_line="user root root;" if run_as_root else "",
        timing_headers=NGINX_TIMING_HEADERS if instrumented else "# bare: no timing headers",
        grpc_server=_nginx_grpc_server(listen_host, grpc_ports, limit, instrumented),
    )


def _nginx_grpc_server(
    listen_host: str, ports: tuple[int, int] | None, limit: str, instrumented: bool
) -> str:
    if ports is None:
        return ""
    listen_port, server_port = ports
    # add_header also reaches a gRPC response's initial metadata (HTTP/2 headers).
    timing = NGINX_TIMING_HEADERS if instrumented else "# bare: no timing headers"
    return f"""
    upstream model_server_grpc {{
        server 127.0.0.1:{server_port};
        keepalive 64;
    }}

    server {{
        listen {listen_host}:{listen_port} http2 backlog=4096;
        location / {{
            {limit}
            grpc_pass grpc://model_server_grpc;
            grpc_read_timeout 300s;
            grpc_send_timeout 300s;
            {timing}
        }}
    }}"""


def render_haproxy(
    *,
    workdir: Path,
    listen_host: str,
    listen_port: int,
    backends: list[tuple[str, int]],
    maxconn: int | None = None,
    timers_header: str = "x-haproxy-timers",
    instrumented: bool = True,
    grpc_listen_port: int | None = None,
    grpc_backends: list[tuple[str, int]] | None = None,
) -> str:
    """haproxy round-robin over ``backends`` (name, port on 127.0.0.1); ``maxconn`` per server.

    ``instrumented`` sets haproxy's timers (``%Tw/%Tc/%Tr``) as the response header
    ``timers_header``; without it the load balancer adds no timing header. With
    ``grpc_listen_port`` a second frontend balances gRPC in ``mode http`` over HTTP/2 both
    ways (``proto h2``): per request (stream), not per connection, over ``grpc_backends``.
    """
    limit = f" maxconn {int(maxconn)}" if maxconn else ""
    servers = "\n".join(f"    server {name} 127.0.0.1:{port}{limit}" for name, port in backends)
    timers = f'    http-response set-header {timers_header} "Tw=%Tw Tc=%Tc Tr=%Tr"'
    grpc_section = ""
    if grpc_listen_port is not None:
        grpc_servers = "\n".join(
            f"    server {name} 127.0.0.1:{port} proto h2{limit}"
            for name, port in grpc_backends or []
        )
        grpc_section = (
            f"\nfrontend fe_testbed_grpc\n    bind {listen_host}:{grpc_listen_port} proto h2\n"
            f"    default_backend be_replicas_grpc\n{timers if instrumented else ''}\n\n"
            f"backend be_replicas_grpc\n    balance roundrobin\n{grpc_servers}\n"
        )
    return _template("haproxy.cfg.tmpl").substitute(
        grpc_section=grpc_section,
        workdir=str(workdir),
        listen_host=listen_host,
        listen_port=listen_port,
        servers=servers,
        timers_line=(
            "# The LB's own timers, as real deployments log them: queue wait, connect, response\n"
            "    # headers (ms).\n"
            f'    http-response set-header {timers_header} "Tw=%Tw Tc=%Tc Tr=%Tr"'
            if instrumented
            else "# bare: no timing header"
        ),
    )
