"""The lab's scenarios: benign traffic and ten attacks, each made by a real tool.

A scenario knows its class label, its *marker* address (see :mod:`amlhp.lab.labels`) and
how to build one bounded run of its tool for a number of packets still wanted. Every run
is bounded twice: by a packet or attempt count given to the tool (``hping3 -c``, a port
range for nmap, a word list for hydra and ncrack) and by a time limit after which the
lab stops it. Rates are capped (``hping3 -i``, ``nmap --max-rate``) because the lab
shares a small machine.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from amlhp.lab.exceptions import LabError
from amlhp.lab.safety import loopback_address
from amlhp.lab.topology import Topology

BENIGN = "benign"

#: user names and passwords of the brute-force runs: Mirai's default-credential list style
USERS = ("admin", "root", "user", "support", "iot", "pi", "ubnt", "guest", "sensor01", "hub")
PASSWORDS = (
    "admin", "root", "12345", "123456", "password", "1234", "default", "support", "user",
    "xc3511", "vizxv", "888888", "xmhdipc", "juantech", "54321", "7ujMko0admin", "system",
    "ikwb", "dreambox", "realtek", "00000000", "1111111", "smcadmin", "klv123", "klv1234",
    "Zte521", "hi3518", "jvbzd", "anko", "zlxx.", "7ujMko0vizxv", "1111", "666666", "meinsm",
    "raspberry", "ubnt", "changeme", "letmein", "qwerty", "iot2020", "sensor", "mqtt",
)  # fmt: skip


@dataclass(frozen=True)
class ToolRun:
    """One bounded invocation of an attack tool."""

    argv: list[str]
    timeout_s: float
    cwd: Path | None = None


@dataclass
class AttackContext:
    """What a scenario needs to build its next run."""

    topology: Topology
    workdir: Path
    rng: random.Random
    iteration: int
    time_left_s: float
    seed: int


@dataclass(frozen=True)
class Scenario:
    """A named traffic scenario; ``build`` is None for the benign one."""

    name: str
    label: str
    tool: str
    description: str
    marker: Callable[[Topology], IPv4Address] | None
    target: Callable[[Topology], IPv4Address] | None
    build: Callable[[Scenario, AttackContext, int], ToolRun] | None
    #: rough packets one run produces per unit of its count (to size runs)
    packets_per_unit: float = 2.0
    #: stop a run once the class has its packets (False: a run always completes, so that
    #: every phase of a multi-phase scan is in the capture)
    stop_at_budget: bool = True

    def marker_address(self, topology: Topology) -> IPv4Address | None:
        return None if self.marker is None else loopback_address(self.marker(topology))

    def target_address(self, topology: Topology) -> IPv4Address | None:
        return None if self.target is None else loopback_address(self.target(topology))

    def next_run(self, ctx: AttackContext, packets_wanted: int) -> ToolRun:
        if self.build is None:
            raise LabError(f"scenario {self.name} runs no tool")
        # Validate again right before the command is built: the rule is absolute.
        self.target_address(ctx.topology)
        self.marker_address(ctx.topology)
        return self.build(self, ctx, packets_wanted)


def _units(scenario: Scenario, packets: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, math.ceil(packets / scenario.packets_per_unit)))


def _attacker(index: int) -> Callable[[Topology], IPv4Address]:
    return lambda t: t.attacker(index)


def _services(t: Topology) -> IPv4Address:
    return t.services


def _limit(ctx: AttackContext, cap: float) -> float:
    return max(1.0, min(cap, ctx.time_left_s))


# -- floods (hping3 and the HTTP flooder) ---------------------------------------------
def _hping(
    mode: list[str], port: str, data: int
) -> Callable[[Scenario, AttackContext, int], ToolRun]:
    def build(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
        t = ctx.topology
        count = _units(s, packets, 10, 60_000)
        dport = port.format(base=ctx.rng.randint(2000, 4000), http=t.ports.http)
        argv = [
            "hping3",
            *mode,
            "-p",
            dport,
            "-a",
            str(s.marker_address(t)),
            "-c",
            str(count),
            "-i",
            "u250",  # at most 4,000 packets/s
            "-d",
            str(data),
            "-q",
            str(s.target_address(t)),
        ]
        return ToolRun(argv, timeout_s=_limit(ctx, count / 4000 * 1.5 + 5))

    return build


def _http_flood(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    t = ctx.topology
    requests = _units(s, packets, 5, 20_000)
    seconds = _limit(ctx, 120)
    argv = [
        sys.executable,
        "-m",
        "amlhp.lab.httpflood",
        "--source",
        str(s.marker_address(t)),
        "--target",
        str(s.target_address(t)),
        "--port",
        str(t.ports.http),
        "--requests",
        str(requests),
        "--seconds",
        f"{seconds:.0f}",
        "--workers",
        "6",
        "--seed",
        str(ctx.seed * 100 + ctx.iteration),
    ]
    return ToolRun(argv, timeout_s=seconds + 5)


# -- scans (nmap) ---------------------------------------------------------------------
def _nmap_base(s: Scenario, ctx: AttackContext, host_timeout: float) -> list[str]:
    return [
        "nmap",
        "-n",
        "-Pn",
        "-e",
        "lo",
        "-S",
        str(s.marker_address(ctx.topology)),
        "--host-timeout",
        f"{host_timeout:.0f}s",
    ]


def _port_range(ctx: AttackContext, count: int) -> str:
    start = ctx.rng.randint(1, max(1, 65535 - count))
    return f"{start}-{min(65535, start + count - 1)}"


def _port_scan(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    ports = _units(s, packets, 10, 30_000)
    limit = _limit(ctx, 120)
    argv = [
        *_nmap_base(s, ctx, limit),
        "-sS",
        "--max-retries",
        "1",
        "--max-rate",
        "2000",
        "-p",
        _port_range(ctx, ports),
        str(s.target_address(ctx.topology)),
    ]
    return ToolRun(argv, timeout_s=limit + 5)


def _udp_scan(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    t = ctx.topology
    ports = _units(s, packets, 10, 20_000)
    limit = _limit(ctx, 120)
    # Always include the lab's open UDP services, so that the scan also gets real replies.
    known = {t.ports.dns, t.ports.ntp, t.ports.coap}
    spec = ",".join([*(str(p) for p in sorted(known)), _port_range(ctx, ports)])
    argv = [
        *_nmap_base(s, ctx, limit),
        "-sU",
        "--max-retries",
        "1",
        "--max-rate",
        "1500",
        "-p",
        spec,
        str(s.target_address(t)),
    ]
    return ToolRun(argv, timeout_s=limit + 5)


def _os_scan(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    del packets  # one OS detection is a few hundred packets; the runner repeats it
    limit = _limit(ctx, 60)
    argv = [
        *_nmap_base(s, ctx, limit),
        "-O",
        "--max-os-tries",
        "1",
        "--top-ports",
        str(ctx.rng.choice((50, 100, 200))),
        "--max-rate",
        "1000",
        str(s.target_address(ctx.topology)),
    ]
    return ToolRun(argv, timeout_s=limit + 5)


def _aggressive_scan(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    t = ctx.topology
    limit = _limit(ctx, 90)
    ports = _units(s, packets, 20, 1000)
    # The lab's TCP services are always in the list, so versions and scripts run on them.
    known = sorted({t.ports.ssh, t.ports.dns, t.ports.http, t.ports.mqtt})
    spec = ",".join([*(str(p) for p in known), _port_range(ctx, ports)])
    argv = [
        *_nmap_base(s, ctx, limit),
        "-A",
        "-T4",
        "-p",
        spec,
        "--max-os-tries",
        "1",
        "--script-timeout",
        "10s",
        "--max-rate",
        "1000",
        str(s.target_address(t)),
    ]
    return ToolRun(argv, timeout_s=limit + 5)


# -- brute force (hydra, ncrack) ------------------------------------------------------
def _wordlists(ctx: AttackContext, attempts: int, name: str) -> tuple[Path, Path]:
    """Small user and password lists for about ``attempts`` login attempts."""
    users = list(USERS)
    ctx.rng.shuffle(users)
    n_users = max(1, min(len(users), math.ceil(attempts / len(PASSWORDS))))
    n_pass = max(1, min(len(PASSWORDS), math.ceil(attempts / n_users)))
    passwords = ctx.rng.sample(PASSWORDS, n_pass)
    folder = ctx.workdir / "wordlists"
    folder.mkdir(parents=True, exist_ok=True)
    user_file = folder / f"{name}-users-{ctx.iteration}.txt"
    pass_file = folder / f"{name}-passwords-{ctx.iteration}.txt"
    user_file.write_text("\n".join(users[:n_users]) + "\n")
    pass_file.write_text("\n".join(passwords) + "\n")
    return user_file, pass_file


def _ssh_bruteforce(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    t = ctx.topology
    attempts = _units(s, packets, 4, 400)
    users, passwords = _wordlists(ctx, attempts, "ssh")
    limit = _limit(ctx, 120)
    argv = [
        "hydra",
        "-L",
        str(users),
        "-P",
        str(passwords),
        "-t",
        "4",
        "-w",
        "10",
        "-I",
        "-o",
        str(ctx.workdir / "hydra-found.txt"),
        f"ssh://{s.target_address(t)}:{t.ports.ssh}",
    ]
    return ToolRun(argv, timeout_s=limit, cwd=ctx.workdir)


def _mqtt_bruteforce(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    t = ctx.topology
    attempts = _units(s, packets, 4, 400)
    users, passwords = _wordlists(ctx, attempts, "mqtt")
    limit = _limit(ctx, 120)
    argv = [
        "ncrack",
        "-T4",
        "-U",
        str(users),
        "-P",
        str(passwords),
        "--connection-limit",
        "8",
        "-g",
        f"to={limit:.0f}s",
        "-oN",
        str(ctx.workdir / "ncrack-found.txt"),
        f"mqtt://{s.target_address(t)}:{t.ports.mqtt}",
    ]
    return ToolRun(argv, timeout_s=limit + 5, cwd=ctx.workdir)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        BENIGN, BENIGN, "mosquitto, libcoap, nginx, dnsmasq",
        "sensors, actuators and a dashboard over MQTT, CoAP, HTTP, DNS and NTP",
        None, None, None,
    ),
    Scenario(
        "syn_flood", "dos_synflood", "hping3", "TCP SYN flood against the web server",
        _attacker(1), _services, _hping(["-S"], "{http}", 0), packets_per_unit=3.0,
    ),
    Scenario(
        "udp_flood", "dos_udpflood", "hping3", "UDP flood to changing closed ports",
        _attacker(2), _services, _hping(["--udp"], "++{base}", 256), packets_per_unit=2.0,
    ),
    Scenario(
        "ack_flood", "dos_ackflood", "hping3", "TCP ACK flood against the web server",
        _attacker(3), _services, _hping(["-A"], "{http}", 64), packets_per_unit=2.0,
    ),
    Scenario(
        "http_flood", "dos_httpflood", "python (amlhp.lab.httpflood)",
        "HTTP GET flood with random paths, many connections",
        _attacker(4), _services, _http_flood, packets_per_unit=7.0,
    ),
    Scenario(
        "tcp_portscan", "tcp_portscan", "nmap -sS", "TCP SYN port scan",
        _attacker(5), _services, _port_scan, packets_per_unit=2.0,
    ),
    Scenario(
        "udp_scan", "udp_scan", "nmap -sU", "UDP port scan",
        _attacker(6), _services, _udp_scan, packets_per_unit=2.0,
    ),
    Scenario(
        "os_scan", "os_scan", "nmap -O", "operating system detection",
        _attacker(7), _services, _os_scan, packets_per_unit=250.0, stop_at_budget=False,
    ),
    Scenario(
        "aggressive_scan", "aggressive_scan", "nmap -A",
        "aggressive scan: OS and version detection, default scripts, traceroute",
        _attacker(8), _services, _aggressive_scan, packets_per_unit=3.0, stop_at_budget=False,
    ),
    Scenario(
        "ssh_bruteforce", "ssh_bruteforce", "hydra", "SSH password guessing against OpenSSH",
        lambda t: t.ssh_bruteforce_victim, lambda t: t.ssh_bruteforce_victim,
        _ssh_bruteforce, packets_per_unit=25.0,
    ),
    Scenario(
        "mqtt_bruteforce", "mqtt_bruteforce", "ncrack",
        "MQTT password guessing against Mosquitto with a password file",
        lambda t: t.mqtt_bruteforce_victim, lambda t: t.mqtt_bruteforce_victim,
        _mqtt_bruteforce, packets_per_unit=10.0,
    ),
)  # fmt: skip

BY_NAME: dict[str, Scenario] = {s.name: s for s in SCENARIOS}
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
