"""A small Ethernet LAN in network namespaces, for the attacks that live below IP.

Loopback has no link layer, so ARP cannot be attacked there. This scenario runs on the
namespaced LAN of :mod:`amlhp.lab.netns_lan` (a router, a camera and an attacker on a
bridge); tcpdump on the bridge records every frame.

The timeline, with real tools (Debian's ``dsniff`` for ``arpspoof``, ``nmap``):

1. the camera pings the router throughout (the kernels' ARP: requests, replies, the
   periodic re-validation that keeps the router's binding fresh); the attacker pings the
   router once, which announces its own address;
2. ``arpspoof -t camera router`` tells the camera, every 2 s, that the router's address is
   at the attacker's MAC (ARP cache poisoning for a man in the middle), then stops (and
   restores the camera's cache with the router's real MAC, as arpspoof does);
3. ``nmap -sn`` sweeps the /24 by ARP from the attacker;
4. ``nmap -6 -sS`` scans 100 ports of the router over IPv6 (``fd77::/64``; the camera
   pings the router over IPv6 too, with the Neighbor Discovery that goes with it);
5. ``atk6-fake_advertise6`` (Debian's ``thc-ipv6``) tells the camera, once a second, that
   the router's IPv6 address is at the attacker's MAC (IPv6's ARP spoofing).

The alert stage should raise a ``mitm`` incident naming the attacker's address and MAC,
a ``scan`` incident for the sweep and one for the IPv6 scan (from ``fd77::66``), and
nothing for the router or the camera
(``tests/lab/test_arp_lan.py``; ``amlhp lab arp`` writes the capture and a manifest).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from amlhp.lab.netns_lan import (
    ATTACKER,
    BRIDGE,
    CAMERA,
    LAN,
    ROUTER,
    SUBNET,
    capture_manifest,
    inside,
    lan,
    run,
)
from amlhp.lab.tools import tool_path

#: the ports the IPv6 scan probes (a few services the router answers: none, all refused)
SCAN6_PORTS = "1-100"
#: neighbour advertisements the IPv6 spoofing sends, one a second
ND_SPOOFS = 6


def run_arp_lan(out: Path, *, seconds: float = 24.0) -> dict[str, Any]:
    """Record the scenario (module docstring) into ``out``/arp.pcap; returns the manifest
    (also written as ``out``/manifest.json)."""
    for program in ("tcpdump", "arpspoof", "nmap", "ping", "ip", "atk6-fake_advertise6"):
        tool_path(program)  # a clear error naming the package when one is missing
    out.mkdir(parents=True, exist_ok=True)
    pcap = out / "arp.pcap"
    spoof_s, sweep_at = max(14.0, seconds * 0.4), seconds * 0.65  # arpspoof: a reply in 2 s
    started = time.time()
    with lan():
        capture = subprocess.Popen(
            inside(LAN, "tcpdump", "-i", BRIDGE, "-U", "-n", "-w", str(pcap)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs: list[subprocess.Popen[bytes]] = []
        try:
            time.sleep(1.0)  # tcpdump listening
            for address in (ROUTER.address, ROUTER.address6):  # IPv4 and IPv6 (NDP, ICMPv6)
                ping = inside(CAMERA, "ping", "-q", "-i", "0.5", "-w", str(int(seconds)), address)
                procs.append(subprocess.Popen(ping, stdout=subprocess.DEVNULL))
            run(*inside(ATTACKER, "ping", "-c", "1", "-W", "1", ROUTER.address))
            time.sleep(2.0)
            spoof = subprocess.Popen(
                inside(ATTACKER, "arpspoof", "-i", "eth0", "-t", CAMERA.address, ROUTER.address),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            procs.append(spoof)
            time.sleep(spoof_s)
            spoof.terminate()  # arpspoof restores the camera's cache as it exits
            spoof.wait(timeout=30)
            time.sleep(max(0.0, sweep_at - (time.time() - started)))
            run(*inside(ATTACKER, "nmap", "-sn", "-n", "-T4", SUBNET), timeout_s=120)
            run(*inside(ATTACKER, "nmap", "-6", "-sS", "-n", "-T4", "-Pn", "-p", SCAN6_PORTS,
                      ROUTER.address6), timeout_s=120)  # fmt: skip
            # IPv6's ARP spoofing: neighbour advertisements telling the camera that the
            # router's address is at the attacker's MAC (override flag set)
            run(*inside(ATTACKER, "atk6-fake_advertise6", "-n", str(ND_SPOOFS), "-w", "1",
                        "eth0", ROUTER.address6, CAMERA.address6), timeout_s=60)  # fmt: skip
            for proc in procs:
                proc.wait(timeout=seconds + 30)
            time.sleep(1.5)  # the last frames reach tcpdump's socket before it stops
        finally:
            for proc in [*procs, capture]:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=15)
    manifest = {
        **capture_manifest(pcap, started),
        "expected_incidents": [
            {"host": ATTACKER.address, "kind": "mitm", "mac": ATTACKER.mac},
            {"host": ATTACKER.address, "kind": "scan"},
            {"host": ATTACKER.address6, "kind": "scan"},
        ],
        "tools": ["arpspoof (dsniff)", "nmap -sn", "nmap -6 -sS", "atk6-fake_advertise6", "ping"],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
