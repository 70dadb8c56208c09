"""Every scenario of the lab, once: benign traffic and the attacks, each made by a real tool.

The order here is the order of a run, of the labels file's classes (benign first) and of
the manifest. Builders live in the attack modules; addresses in :mod:`amlhp.lab.topology`.
"""

from __future__ import annotations

from pathlib import Path

from amlhp.lab import attacks_classic as classic
from amlhp.lab.attack_services import AttackServices
from amlhp.lab.attacks_c2 import C2_SCENARIOS
from amlhp.lab.attacks_modbus import MODBUS_SCENARIOS
from amlhp.lab.attacks_web import WEB_SCENARIOS
from amlhp.lab.benign_services import BenignServices
from amlhp.lab.botnet_scan import BOTNET_SCAN
from amlhp.lab.exceptions import LabError
from amlhp.lab.scenario import (
    BENIGN,
    PASSWORDS,
    USERS,
    AttackContext,
    Scenario,
    ToolRun,
    attacker,
    services,
)
from amlhp.lab.services import ServiceSet
from amlhp.lab.topology import Topology
from amlhp.lab.web_services import WebServices

__all__ = [
    "ATTACKS", "BENIGN", "BY_NAME", "PASSWORDS", "SCENARIOS", "USERS",
    "AttackContext", "Scenario", "ToolRun", "select", "service_sets",
]  # fmt: skip

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        BENIGN, BENIGN, "mosquitto, libcoap, nginx, dnsmasq, pymodbus, curl",
        "sensors, actuators and dashboards over MQTT (plain and TLS), CoAP (and observe), "
        "HTTP(S) with firmware and snapshot downloads, Modbus/TCP polling, DNS, NTP, mDNS, SSDP",
        None, None, None,
    ),
    Scenario(
        "syn_flood", "dos_synflood", "hping3", "TCP SYN flood against the web server",
        attacker(1), services, classic._hping(["-S"], "{http}", 0), packets_per_unit=3.0,
    ),
    Scenario(
        "udp_flood", "dos_udpflood", "hping3", "UDP flood to changing closed ports",
        attacker(2), services, classic._hping(["--udp"], "++{base}", 256), packets_per_unit=2.0,
    ),
    Scenario(
        "ack_flood", "dos_ackflood", "hping3", "TCP ACK flood against the web server",
        attacker(3), services, classic._hping(["-A"], "{http}", 64), packets_per_unit=2.0,
    ),
    Scenario(
        "http_flood", "dos_httpflood", "python (amlhp.lab.httpflood)",
        "HTTP GET flood with random paths, many connections",
        attacker(4), services, classic._http_flood, packets_per_unit=7.0,
    ),
    Scenario(
        "tcp_portscan", "tcp_portscan", "nmap -sS", "TCP SYN port scan",
        attacker(5), services, classic._port_scan, packets_per_unit=2.0,
    ),
    Scenario(
        "udp_scan", "udp_scan", "nmap -sU", "UDP port scan",
        attacker(6), services, classic._udp_scan, packets_per_unit=2.0,
    ),
    Scenario(
        "os_scan", "os_scan", "nmap -O", "operating system detection",
        attacker(7), services, classic._os_scan, packets_per_unit=250.0, stop_at_budget=False,
    ),
    Scenario(
        "aggressive_scan", "aggressive_scan", "nmap -A",
        "aggressive scan: OS and version detection, default scripts, traceroute",
        attacker(8), services, classic._aggressive_scan, packets_per_unit=3.0, stop_at_budget=False,
    ),
    Scenario(
        "ssh_bruteforce", "ssh_bruteforce", "hydra", "SSH password guessing against OpenSSH",
        lambda t: t.ssh_bruteforce_victim, lambda t: t.ssh_bruteforce_victim,
        classic._ssh_bruteforce, packets_per_unit=25.0,
    ),
    Scenario(
        "mqtt_bruteforce", "mqtt_bruteforce", "ncrack",
        "MQTT password guessing against Mosquitto with a password file",
        lambda t: t.mqtt_bruteforce_victim, lambda t: t.mqtt_bruteforce_victim,
        classic._mqtt_bruteforce, packets_per_unit=10.0,
    ),
    Scenario(
        "telnet_bruteforce", "telnet_bruteforce", "hydra (telnet), inetutils telnetd",
        "telnet password guessing with Mirai's default credentials",
        lambda t: t.telnet_victim, lambda t: t.telnet_victim,
        classic._telnet_bruteforce, packets_per_unit=20.0,
    ),
    BOTNET_SCAN,
)  # fmt: skip
SCENARIOS += (*C2_SCENARIOS, *WEB_SCENARIOS, *MODBUS_SCENARIOS)

BY_NAME: dict[str, Scenario] = {s.name: s for s in SCENARIOS}

#: the attack programs each scenario runs (see amlhp.lab.tools.ATTACK_PROGRAMS)
PROGRAMS: dict[str, tuple[str, ...]] = {
    "benign": (),
    "syn_flood": ("hping3",),
    "udp_flood": ("hping3",),
    "ack_flood": ("hping3",),
    "http_flood": (),
    "tcp_portscan": ("nmap",),
    "udp_scan": ("nmap",),
    "os_scan": ("nmap",),
    "aggressive_scan": ("nmap",),
    "ssh_bruteforce": ("hydra",),
    "mqtt_bruteforce": ("ncrack",),
    "telnet_bruteforce": ("hydra",),
    "botnet_scan": ("masscan",),
    "dns_tunnel": ("iodine", "iodined", "ncat"),
    "c2_reverse_shell": ("ncat", "socat"),
    "c2_beacon": (),
    "malware_download": (),
    "exfiltration": (),
    "web_sqli": ("sqlmap",),
    "web_dirbrute": ("dirb",),
    "web_exploit": (),
    "slow_dos": ("slowhttptest",),
    "modbus_attack": ("mbpoll",),
}
ATTACKS: tuple[Scenario, ...] = tuple(s for s in SCENARIOS if s.build is not None)


def select(names: list[str] | None) -> list[Scenario]:
    """Scenarios by name, in the lab's canonical order (all when ``names`` is empty)."""
    if not names:
        return list(SCENARIOS)
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise LabError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    wanted = set(names)
    return [s for s in SCENARIOS if s.name in wanted]


def service_sets(topology: Topology, workdir: Path, seed: int = 1) -> list[ServiceSet]:
    """The second round's servers, started by :class:`~amlhp.lab.services.LabServices`."""
    return [
        BenignServices(topology, workdir / "benign", seed=seed),
        WebServices(topology, workdir / "web"),
        AttackServices(topology, workdir / "attack"),
    ]
