"""The service's network namespace for network faults: a veth pair, tbf, loss and delay rules.

Layout: namespace ``pptb-<tag>`` holds the whole service; veth ``pptb-<tag>a`` (root namespace,
10.213.X.1, the client's side) ↔ ``pptb-<tag>b`` (inside, 10.213.X.2). Every iptables rule and the
inner qdisc live inside the namespace, so deleting it removes them; the outer qdisc goes with the
outer veth end.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass

from pathprobe.testbed.procs import run

NETNS_PREFIX = "pptb-"
SUBNET_PREFIX = "10.213"
NFQUEUE_NUM = 7


@dataclass(frozen=True)
class NetnsPlan:
    name: str
    outer_if: str
    inner_if: str
    subnet_octet: int

    @property
    def outer_ip(self) -> str:
        return f"{SUBNET_PREFIX}.{self.subnet_octet}.1"

    @property
    def inner_ip(self) -> str:
        return f"{SUBNET_PREFIX}.{self.subnet_octet}.2"

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]


def plan(tag: str) -> NetnsPlan:
    """Names from ``tag`` (≤ 8 chars keeps interface names within 15), a /24 nobody uses now."""
    used = set(
        re.findall(rf"{re.escape(SUBNET_PREFIX)}\.(\d+)\.", run(["ip", "-o", "-4", "addr"]).stdout)
    )
    used |= set(
        re.findall(rf"{re.escape(SUBNET_PREFIX)}\.(\d+)\.", run(["ip", "-4", "route"]).stdout)
    )
    rng = random.Random(tag)
    candidates = [x for x in range(100, 250) if str(x) not in used]
    if not candidates:
        raise RuntimeError(f"no free {SUBNET_PREFIX}.X.0/24 subnet left")
    octet = rng.choice(candidates)
    return NetnsPlan(
        f"{NETNS_PREFIX}{tag}", f"{NETNS_PREFIX}{tag}a", f"{NETNS_PREFIX}{tag}b", octet
    )


def create(p: NetnsPlan) -> None:
    """Namespace, veth pair, addresses, loopback up, no autocorking. Caller tears down on error."""
    run(["ip", "netns", "add", p.name])
    run(["ip", "link", "add", p.outer_if, "type", "veth", "peer", "name", p.inner_if])
    run(["ip", "link", "set", p.inner_if, "netns", p.name])
    run(["ip", "addr", "add", f"{p.outer_ip}/24", "dev", p.outer_if])
    run(["ip", "link", "set", p.outer_if, "up"])
    ns = p.exec_prefix()
    run([*ns, "ip", "addr", "add", f"{p.inner_ip}/24", "dev", p.inner_if])
    run([*ns, "ip", "link", "set", p.inner_if, "up"])
    run([*ns, "ip", "link", "set", "lo", "up"])
    # One MTU-sized segment per packet, as on a real link: with veth's 64 KiB GSO super-packets
    # a "3 % loss" rule would drop whole bursts of 40 segments at a time, and rarely.
    run(["ip", "link", "set", "dev", p.outer_if, "gso_max_segs", "1"])
    run([*ns, "ip", "link", "set", "dev", p.inner_if, "gso_max_segs", "1"])
    # NFQUEUE delay would otherwise hold a response's second write behind the first (autocorking).
    run([*ns, "sysctl", "-q", "-w", "net.ipv4.tcp_autocorking=0"])


def add_bandwidth_limit(p: NetnsPlan, mbit: float) -> None:
    """tbf on both veth ends: uploads are shaped by the sender's egress, downloads by the other."""
    # burst ≥ 64 KiB: veth hands tbf GSO super-packets; latency bounds the queue (then drops).
    spec = ["tbf", "rate", f"{mbit}mbit", "burst", "64kb", "latency", "1000ms"]
    run(["tc", "qdisc", "add", "dev", p.outer_if, "root", *spec])
    run([*p.exec_prefix(), "tc", "qdisc", "add", "dev", p.inner_if, "root", *spec])


def add_loss(p: NetnsPlan, percent: float) -> None:
    """Random drop on the service side's INPUT: real loss, so both TCP ends retransmit.

    Dropping on a namespace's own egress is not loss: the sender sees a local error and does not
    retransmit (design.md §6).
    """
    probability = f"{percent / 100.0:.6f}"
    rule = ["-i", p.inner_if, "-p", "tcp", "-m", "statistic", "--mode", "random",
            "--probability", probability, "-j", "DROP"]  # fmt: skip
    run([*p.exec_prefix(), "iptables", "-I", "INPUT", "1", *rule])


def add_delay_rules(p: NetnsPlan) -> None:
    """Send the veth's packets, both directions, to the delay helper's NFQUEUE."""
    queue = ["-j", "NFQUEUE", "--queue-num", str(NFQUEUE_NUM), "--queue-bypass"]
    run([*p.exec_prefix(), "iptables", "-A", "INPUT", "-i", p.inner_if, *queue])
    run([*p.exec_prefix(), "iptables", "-A", "OUTPUT", "-o", p.inner_if, *queue])


def destroy(name: str, outer_if: str, timeout_s: float = 5.0) -> None:
    """Remove the veth pair and the namespace (with its rules); tolerate either being gone."""
    if not name.startswith(NETNS_PREFIX):
        return
    run(["ip", "link", "del", outer_if], check=False)
    run(["ip", "netns", "del", name], check=False)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if name not in list_namespaces() and not link_exists(outer_if):
            return
        time.sleep(0.05)


def list_namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def link_exists(name: str) -> bool:
    return run(["ip", "link", "show", name], check=False).returncode == 0


def leftovers() -> dict[str, list[str]]:
    """Our namespaces and links that exist now (for tests and ``testbed status``)."""
    links = re.findall(
        rf"\d+: ({re.escape(NETNS_PREFIX)}[\w-]+?)[@:]", run(["ip", "-o", "link"]).stdout
    )
    return {"netns": [n for n in list_namespaces() if n.startswith(NETNS_PREFIX)], "links": links}
