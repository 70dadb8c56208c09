"""A small Ethernet LAN in network namespaces, for the lab scenarios that need a link
layer (loopback has none) or more than one IPv6 address (loopback has only ``::1``).

A namespace ``amlhp-arp-lan`` holds a Linux bridge; three hosts in namespaces of their own
join it by veth pairs: a router (``10.77.0.1``), a camera (``10.77.0.20``) and an attacker
(``10.77.0.66``), each with a fixed, locally administered MAC and an IPv6 address in
``fd77::/64``. Nothing leaves the namespaces, and :func:`lan` removes them at the end even
when the block fails. Used by :mod:`amlhp.lab.arp_lan` and :mod:`amlhp.lab.twins`.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amlhp.encoders.capture import iter_encoded
from amlhp.lab.exceptions import LabError

LAN = "amlhp-arp-lan"
BRIDGE = "br0"
SUBNET = "10.77.0.0/24"


@dataclass(frozen=True)
class Host:
    """One host of the LAN: its namespace, addresses and MAC."""

    name: str
    address: str
    mac: str
    address6: str

    @property
    def netns(self) -> str:
        return f"amlhp-arp-{self.name}"

    @property
    def port(self) -> str:
        """Its veth end on the bridge (in the LAN namespace)."""
        return f"p-{self.name}"


ROUTER = Host("router", "10.77.0.1", "02:77:00:00:00:01", "fd77::1")
CAMERA = Host("camera", "10.77.0.20", "02:77:00:00:00:20", "fd77::20")
ATTACKER = Host("attacker", "10.77.0.66", "02:77:00:00:00:66", "fd77::66")
HOSTS = (ROUTER, CAMERA, ATTACKER)


def run(*argv: str, timeout_s: float = 15) -> None:
    out = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False)
    if out.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {out.stderr.strip()[-300:]}")


def inside(host: Host | str, *argv: str) -> list[str]:
    netns = host if isinstance(host, str) else host.netns
    return ["ip", "netns", "exec", netns, *argv]


def remove() -> None:
    """Delete the namespaces (their veth pairs go with them); quiet when absent."""
    for netns in (LAN, *(h.netns for h in HOSTS)):
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=15, check=False)


@contextlib.contextmanager
def lan() -> Iterator[None]:
    """The bridge, the three hosts and their links, for as long as the block runs."""
    remove()  # what a killed run left
    try:
        run("ip", "netns", "add", LAN)
        run(*inside(LAN, "ip", "link", "add", BRIDGE, "type", "bridge"))
        run(*inside(LAN, "ip", "link", "set", BRIDGE, "up"))
        for host in HOSTS:
            run("ip", "netns", "add", host.netns)
            run("ip", "-n", LAN, "link", "add", host.port, "type", "veth",
                 "peer", "name", "eth0", "netns", host.netns)  # fmt: skip
            run("ip", "-n", LAN, "link", "set", host.port, "master", BRIDGE, "up")
            run("ip", "-n", host.netns, "link", "set", "eth0", "address", host.mac)
            run("ip", "-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            run("ip", "-n", host.netns, "addr", "add", f"{host.address6}/64", "dev", "eth0",
                 "nodad")  # fmt: skip
            run("ip", "-n", host.netns, "link", "set", "eth0", "up")
            run("ip", "-n", host.netns, "link", "set", "lo", "up")
        yield
    finally:
        remove()


def capture_manifest(pcap: Path, started: float) -> dict[str, Any]:
    """What every LAN run's manifest starts with: the capture, what the encoder makes of
    its frames (``arp``, ``ok``, ...), the run's length and the hosts."""
    statuses: Counter[str] = Counter()
    for batch in iter_encoded([pcap]):
        statuses.update(batch.column("status").to_pylist())
    return {
        "capture": pcap.name,
        "total_packets": sum(statuses.values()),
        "classes": dict(sorted(statuses.items())),
        "seconds": round(time.time() - started, 1),
        "hosts": {
            h.name: {"address": h.address, "address6": h.address6, "mac": h.mac} for h in HOSTS
        },
    }
