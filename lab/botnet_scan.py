"""Botnet-style fast scanning: masscan over the telnet, SSH and HTTP ports of many hosts.

masscan writes Ethernet frames with its own TCP/IP stack, which Linux's ``lo`` does not
take in (a frame for another MAC address is dropped). So the lab gives it a wire of its
own: a network namespace ``amlhp-lab-scan`` joined to the machine by a veth pair. masscan
sends from the scan's marker address on the namespace's end; the machine's end accepts
127.0.0.0/8 traffic (``route_localnet``, reverse-path filter off, on that interface only),
so the SYNs reach the lab's addresses and the kernel's answers (SYN-ACK, RST) travel on
``lo`` as for any lab packet. The runner captures both interfaces and merges them.

The pair and the namespace exist only while the scenario runs, and are removed even when
it fails. A SYN per (host, port) with no retransmission and no completed handshake, many
hosts of one /22 and the ports Mirai-like bots probe: that is the shape of such a scan.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Address

from amlhp.lab.exceptions import LabError
from amlhp.lab.safety import loopback_address
from amlhp.lab.scenario import AttackContext, Scenario, ToolRun, attacker, time_limit, units
from amlhp.lab.topology import Topology

NETNS = "amlhp-lab-scan"
HOST_END, NS_END = "amlhpscan1", "amlhpscan0"
#: the machine's end of the pair gets a fixed, locally administered MAC address: masscan's
#: "router" (frames to any other MAC would be dropped)
HOST_END_MAC = "02:00:00:66:0b:01"
SCAN_ATTACKER = 11
#: telnet, SSH, HTTP and the other ports IoT bots probe (TR-069, ADB, Huawei, Realtek)
BOT_PORTS = (23, 2323, 22, 80, 8080, 81, 7547, 5555, 37215, 52869)
#: the scanned range starts at the lab's service network
SCAN_BASE = IPv4Address("127.20.0.0")
MAX_RATE = 2000  # packets per second
MIN_HOSTS = 16  # per run: a block, never only excluded addresses


def _run(*argv: str) -> None:
    out = subprocess.run(list(argv), capture_output=True, text=True, timeout=15, check=False)
    if out.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {out.stderr.strip()[-300:]}")


def _quiet(*argv: str) -> None:
    subprocess.run(list(argv), capture_output=True, timeout=15, check=False)


def _remove() -> None:
    _quiet("ip", "link", "del", HOST_END)
    _quiet("ip", "netns", "del", NETNS)


@contextlib.contextmanager
def scan_network(topology: Topology) -> Iterator[list[str]]:
    """The scan's namespace and veth pair, for as long as the scenario runs."""
    del topology
    _remove()  # a previous run that was killed
    try:
        _run("ip", "netns", "add", NETNS)
        _run(
            "ip", "link", "add", HOST_END, "address", HOST_END_MAC, "type", "veth",
            "peer", "name", NS_END, "netns", NETNS,
        )  # fmt: skip
        for key in ("route_localnet=1", "rp_filter=0", "accept_local=1"):
            _run("sysctl", "-qw", f"net.ipv4.conf.{HOST_END}.{key}")
        _run("ip", "link", "set", HOST_END, "up")
        _run("ip", "-n", NETNS, "link", "set", NS_END, "up")
        yield [HOST_END]
    finally:
        _remove()


def _others(t: Topology) -> list[IPv4Address]:
    """Every lab address but the services: victims, brokers, the implant."""
    return sorted(a for a in set(t.all_addresses()) if a != t.services)


def _masscan(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    probes = units(s, packets, len(BOT_PORTS) * MIN_HOSTS, 200_000)
    hosts = -(-probes // len(BOT_PORTS))
    # each run scans the next block of the service network (the first block holds the services)
    first = SCAN_BASE + (ctx.iteration * hosts) % max(1, 65_536 - hosts)
    last = loopback_address(IPv4Address(int(first) + hosts - 1))
    limit = time_limit(ctx, 120)
    argv = [
        "ip", "netns", "exec", NETNS, "masscan",
        "--adapter", NS_END, "--adapter-ip", str(s.marker_address(ctx.topology)),
        "--router-mac", HOST_END_MAC,
        "-p", ",".join(str(p) for p in BOT_PORTS), f"{first}-{last}",
        "--rate", str(MAX_RATE), "--wait", "1", "--retries", "0",
        "--seed", str(ctx.seed * 100 + ctx.iteration),
        # other scenarios' markers are left out: a packet belongs to exactly one class
        "--exclude", ",".join(str(a) for a in _others(ctx.topology)),
    ]  # fmt: skip
    return ToolRun(argv, timeout_s=limit)


BOTNET_SCAN = Scenario(
    "botnet_scan", "botnet_scan", "masscan (in a lab namespace)",
    "fast SYN scan of telnet, SSH, HTTP and other IoT ports over many hosts",
    attacker(SCAN_ATTACKER), lambda t: loopback_address(SCAN_BASE),
    _masscan, packets_per_unit=2.0, network=scan_network,
)  # fmt: skip
