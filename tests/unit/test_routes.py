"""Route lookup: parsing ``ip route get`` and ``/proc/net/route``, and the loopback shortcut."""

from __future__ import annotations

import pytest

from pathprobe.probes.routes import (
    capture_iface_for,
    parse_ip_route_get,
    parse_proc_net_route,
    resolve_host,
    route_iface,
)

PROC_NET_ROUTE = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
    "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    "veth1\t00FAD50A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    "wg0\t0000D50A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
    "down0\t05FAD50A\t00000000\t0000\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n"
)


@pytest.mark.parametrize(
    ("output", "dev"),
    [
        ("10.0.0.5 via 192.0.2.1 dev eth0 src 192.0.2.2 uid 0 \n    cache \n", "eth0"),
        ("local 127.0.0.1 dev lo src 127.0.0.1 uid 0 \n    cache <local> \n", "lo"),
        ("local ::1 from :: dev lo table local proto kernel src ::1 metric 0 pref medium", "lo"),
        ("10.213.250.2 dev ppnh123 src 10.213.250.1 uid 0 \n    cache \n", "ppnh123"),
        ("RTNETLINK answers: Network is unreachable", None),
    ],
)
def test_parse_ip_route_get(output: str, dev: str | None) -> None:
    assert parse_ip_route_get(output) == dev


@pytest.mark.parametrize(
    ("addr", "iface"),
    [
        ("192.0.2.77", "eth0"),  # the /24 beats the default route
        ("10.213.250.5", "veth1"),  # the /24 beats the /16
        ("10.213.1.1", "wg0"),  # only the /16 matches
        ("8.8.8.8", "eth0"),  # default route
    ],
)
def test_parse_proc_net_route_longest_prefix(addr: str, iface: str) -> None:
    assert parse_proc_net_route(PROC_NET_ROUTE, addr) == iface


def test_parse_proc_net_route_skips_routes_that_are_down() -> None:
    # down0 is a /32 for 10.213.250.5 but without RTF_UP: the /24 wins.
    assert parse_proc_net_route(PROC_NET_ROUTE, "10.213.250.5") == "veth1"
    assert parse_proc_net_route(PROC_NET_ROUTE.splitlines()[0], "1.2.3.4") is None


def test_loopback_routes_to_lo() -> None:
    assert route_iface("127.0.0.1") == "lo"
    assert route_iface("127.5.6.7") == "lo"
    assert route_iface("::1") == "lo"
    assert capture_iface_for(["127.0.0.1", "::1"]) == "lo"
    assert capture_iface_for([]) is None


def test_resolve_host() -> None:
    assert resolve_host("127.0.0.1", 80) == ["127.0.0.1"]
    assert resolve_host("[::1]", 80) == ["::1"]
    assert "127.0.0.1" in resolve_host("localhost", 80)
    assert resolve_host("no-such-host.invalid", 80) == []
