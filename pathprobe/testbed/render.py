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
) -> str:
    """nginx in front of one model server; with ``limit_rate_rps``, requests above it queue.

    ``instrumented`` adds nginx's upstream timers as response headers; without it the proxy is
    bare, as most are: it adds no header that times anything.
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
    )


def render_haproxy(
    *,
    workdir: Path,
    listen_host: str,
    listen_port: int,
    backends: list[tuple[str, int]],
    maxconn: int | None = None,
    timers_header: str = "x-haproxy-timers",
    instrumented: bool = True,
) -> str:
    """haproxy round-robin over ``backends`` (name, port on 127.0.0.1); ``maxconn`` per server.

    ``instrumented`` sets haproxy's timers (``%Tw/%Tc/%Tr``) as the response header
    ``timers_header``; without it the load balancer adds no timing header.
    """
    limit = f" maxconn {int(maxconn)}" if maxconn else ""
    servers = "\n".join(f"    server {name} 127.0.0.1:{port}{limit}" for name, port in backends)
    return _template("haproxy.cfg.tmpl").substitute(
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
