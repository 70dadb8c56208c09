"""``amlhp lab slow``: the low-and-slow attacks at their real pace, side by side, for an hour.

Attacks that hide in time cannot be recorded at the lab's usual pace (as many packets as
fast as the tool goes): password guessing at one attempt every 7 s, a scan with seconds
between probes, a jittered HTTP beacon and a DNS trickle need tens of minutes to an hour
each. They use little CPU, so they run at once, each from its own addresses, beside the
benign devices, and the whole recording takes about an hour (``--hour-minutes``):

* SSH, FTP, telnet and MQTT password guessing (hydra ``-c 7``, ncrack ``cd=7s``), one
  attempt every 7 s for ``--minutes`` (20 by default). The FTP victim is a ``vsftpd``
  whose user list admits nobody: every guess is refused, no account can be logged into.
* A slow SYN scan (nmap ``--scan-delay``) of two telnet ports across 100 lab addresses.
* DNS exfiltration: TXT queries whose names carry base32 data, every 4 s on average
  (:mod:`amlhp.lab.dnsexfil`).
* An HTTP beacon with 30% jitter around 20 s for the hour (:mod:`amlhp.lab.beacon`).
* The benign devices for the hour.

Each scenario is captured into its own pcap by its own ``tcpdump`` (``host <marker>``);
the benign capture takes the lab's networks without the markers, so the files keep the
lab's layout (one class of attack per file, labels, manifest, ``amlhp lab verify``).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from amlhp.lab.attack_services import BEACON_ATTACKER, C2_PORT, TUNNEL_DOMAIN
from amlhp.lab.benign import BenignTraffic
from amlhp.lab.capture import Capture
from amlhp.lab.labels import Labeler, MarkerRule
from amlhp.lab.pcapscan import PcapTail
from amlhp.lab.procs import ProcessGroup
from amlhp.lab.runner import GRACE_S, POLL_S, LabRun, RunOptions, ScenarioStatus
from amlhp.lab.safety import loopback_address
from amlhp.lab.scenario import (
    BENIGN,
    PASSWORDS,
    USERS,
    AttackContext,
    Scenario,
    ToolRun,
    attacker,
    driver_run,
    wordlists,
)
from amlhp.lab.topology import SENSOR_NET, Topology

#: seconds between two guesses of one guessing tool
GUESS_EVERY_S = 7
#: the FTP guessing victim (a vsftpd that admits no user) and the slow scanner's index
FTP_VICTIM = "127.20.0.13"
SLOW_SCANNER = 30
#: scenarios that last the hour; the others last ``minutes``
HOUR_LONG = ("benign", "slow_beacon")


def _ftp_victim(t: Topology) -> IPv4Address:
    del t
    return loopback_address(FTP_VICTIM)


def _guesses(seconds: float) -> int:
    return max(2, int(seconds / GUESS_EVERY_S))


def combos(ctx: AttackContext, guesses: int, name: str) -> Path:
    """A hydra ``-C`` file of ``guesses`` user:password pairs, each user once (credential
    stuffing): a server that refuses the user name itself (the FTP victim) makes hydra
    drop that user, so every guess needs a user of its own."""
    path = ctx.workdir / "wordlists" / f"{name}-combos.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{USERS[k % len(USERS)]}{k // len(USERS) or ''}:{ctx.rng.choice(PASSWORDS)}"
        for k in range(guesses)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _hydra(service: str, port_of: str) -> Any:
    def build(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
        del packets
        seconds = ctx.time_left_s
        port = getattr(ctx.topology.ports, port_of)
        argv = [
            "hydra", "-C", str(combos(ctx, _guesses(seconds), f"slow-{service}")),
            "-c", str(GUESS_EVERY_S), "-w", "10", "-I",
            "-o", str(ctx.workdir / f"hydra-slow-{service}.txt"),
            f"{service}://{s.target_address(ctx.topology)}:{port}",
        ]  # fmt: skip
        return ToolRun(argv, timeout_s=seconds + 30, cwd=ctx.workdir)

    return build


def _ncrack_mqtt(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    del packets
    seconds = ctx.time_left_s
    users, passwords = wordlists(ctx, _guesses(seconds), "slow-mqtt")
    t = ctx.topology
    argv = [
        "ncrack", "-U", str(users), "-P", str(passwords),
        "-g", f"cd={GUESS_EVERY_S}s,CL=1,to={seconds + 20:.0f}s",
        "-oN", str(ctx.workdir / "ncrack-slow-found.txt"),
        f"mqtt://{s.target_address(t)}:{t.ports.mqtt}",
    ]  # fmt: skip
    return ToolRun(argv, timeout_s=seconds + 30, cwd=ctx.workdir)


def _slow_scan(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    del packets
    seconds = ctx.time_left_s
    hosts, ports = 100, 2
    delay = max(0.1, seconds / (hosts * ports) * 0.95)
    argv = [
        "nmap", "-n", "-Pn", "-e", "lo", "-S", str(s.marker_address(ctx.topology)),
        "-sS", "--max-retries", "0", "--scan-delay", f"{delay * 1000:.0f}ms",
        "--max-parallelism", "1", "--max-hostgroup", "1", "-p", "23,2323", f"127.20.1.1-{hosts}",
    ]  # fmt: skip
    return ToolRun(argv, timeout_s=seconds + 60)


def _dns_exfil(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    del packets
    t = ctx.topology
    return driver_run(
        "dnsexfil", ctx.time_left_s, "--resolver", str(s.target_address(t)),
        "--implant", str(t.implant), "--domain", f"x.{TUNNEL_DOMAIN}", "--bytes", "200000",
        "--interval", "4", "--seed", str(ctx.seed),
    )  # fmt: skip


def _beacon(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    del packets
    return driver_run(
        "beacon", ctx.time_left_s, "--server", str(s.marker_address(ctx.topology)),
        "--port", str(C2_PORT), "--implant", str(ctx.topology.implant),
        "--beacons", "100000", "--interval", "20", "--seed", str(ctx.seed),
    )  # fmt: skip


SLOW_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(BENIGN, BENIGN, "the lab's benign devices", "an hour of the benign devices",
             None, None, None),
    Scenario("slow_ssh_guessing", "ssh_bruteforce", "hydra -c 7",
             "SSH password guessing, one attempt every 7 s",
             lambda t: t.ssh_bruteforce_victim, lambda t: t.ssh_bruteforce_victim,
             _hydra("ssh", "ssh")),
    Scenario("slow_ftp_guessing", "ftp_bruteforce", "hydra -c 7, vsftpd",
             "FTP password guessing, one attempt every 7 s",
             _ftp_victim, _ftp_victim, _hydra("ftp", "ftp")),
    Scenario("slow_telnet_guessing", "telnet_bruteforce", "hydra -c 7, inetutils telnetd",
             "telnet password guessing, one attempt every 7 s",
             lambda t: t.telnet_victim, lambda t: t.telnet_victim, _hydra("telnet", "telnet")),
    Scenario("slow_mqtt_guessing", "mqtt_bruteforce", "ncrack cd=7s",
             "MQTT password guessing, one connection every 7 s",
             lambda t: t.mqtt_bruteforce_victim, lambda t: t.mqtt_bruteforce_victim,
             _ncrack_mqtt),
    Scenario("slow_scan", "tcp_portscan", "nmap -sS --scan-delay",
             "a SYN scan of two telnet ports across 100 addresses, seconds between probes",
             attacker(SLOW_SCANNER), lambda t: t.services, _slow_scan),
    Scenario("slow_dns_exfil", "dns_tunnel", "python (amlhp.lab.dnsexfil)",
             "data leaked as DNS TXT query names, one query every 4 s on average",
             lambda t: t.dns_tunnel_resolver, lambda t: t.dns_tunnel_resolver, _dns_exfil),
    Scenario("slow_beacon", "c2_beacon", "curl (implant), python http.server (C2)",
             "HTTP beacons every 20 s with 30% jitter",
             attacker(BEACON_ATTACKER), lambda t: t.implant, _beacon),
)  # fmt: skip


def ftp_victim_config(workdir: Path, topology: Topology) -> Path:
    """A vsftpd that asks for logins and admits nobody (its user list is empty and is
    the list of who may log in): hydra gets a real "530" for every guess."""
    folder = workdir / "ftp-victim"
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty"
    empty.mkdir(mode=0o555, exist_ok=True)
    users = folder / "allowed-users"
    users.write_text("")
    conf = folder / "vsftpd.conf"
    conf.write_text(
        "\n".join([
            "listen=YES", "listen_ipv6=NO", "background=NO", f"listen_address={FTP_VICTIM}",
            f"listen_port={topology.ports.ftp}", "anonymous_enable=NO", "local_enable=YES",
            "userlist_enable=YES", "userlist_deny=NO", f"userlist_file={users}",
            f"secure_chroot_dir={empty}", "seccomp_sandbox=NO", "xferlog_enable=NO",
            "max_clients=16", "idle_session_timeout=30",
        ]) + "\n"
    )  # fmt: skip
    conf.chmod(0o600)
    return conf


class SlowLabRun(LabRun):
    """:class:`~amlhp.lab.runner.LabRun` with the slow scenarios, all at once."""

    def __init__(self, options: RunOptions, minutes: float, hour_minutes: float,
                 on_status: Any = None) -> None:  # fmt: skip
        super().__init__(options, on_status)
        self.scenarios = list(SLOW_SCENARIOS)
        self.seconds = {
            s.name: 60.0 * (hour_minutes if s.name in HOUR_LONG else minutes)
            for s in self.scenarios
        }
        self.statuses = [ScenarioStatus(s.name, s.label, 0) for s in self.scenarios]
        rules = [
            MarkerRule(s.label, m)
            for s in self.scenarios
            if (m := s.marker_address(self.topology)) is not None
        ]
        self.labeler = Labeler(rules, default=BENIGN, default_networks=[IPv4Network(SENSOR_NET)])

    def _record(
        self, group: ProcessGroup, benign: BenignTraffic, rng: random.Random
    ) -> list[dict[str, Any]]:
        logs = self.o.workdir / "logs"
        group.start(
            "vsftpd-ftp-victim",
            ["vsftpd", str(ftp_victim_config(self.o.workdir, self.topology))],
            log_path=logs / "vsftpd-ftp-victim.log",
        )
        markers = [str(m) for s in self.scenarios if (m := s.marker_address(self.topology))]
        others = " or ".join(f"host {m}" for m in markers)
        captures = {}
        for s in self.scenarios:
            marker = s.marker_address(self.topology)
            bpf = (
                f"({self.topology.capture_filter()}) and not ({others})"
                if marker is None
                else f"host {marker}"
            )
            pcap = self.o.out / f"{s.name}.pcap"
            captures[s.name] = Capture(group, pcap, bpf, logs / f"tcpdump-{s.name}.log")
            captures[s.name].start()
        started = time.monotonic()
        children = {}
        for s, status in zip(self.scenarios, self.statuses, strict=True):
            status.state = "running"
            if s.build is None:
                continue
            ctx = AttackContext(self.topology, self.o.workdir, rng, 0, self.seconds[s.name],
                                self.o.seed)  # fmt: skip
            run = s.next_run(ctx, 0)
            status.runs = 1
            children[s.name] = (
                group.start(s.name, run.argv, log_path=logs / f"{s.name}.log", cwd=run.cwd),
                started + run.timeout_s,
            )
        tails = {name: PcapTail(c.path) for name, c in captures.items()}
        counts: dict[str, Counter[str]] = {name: Counter() for name in captures}
        end = started + max(self.seconds.values())
        while True:
            now = time.monotonic()
            for s, status in zip(self.scenarios, self.statuses, strict=True):
                counts[s.name].update(self.labeler.count(tails[s.name].read()))
                status.own, status.total = counts[s.name][s.label], sum(counts[s.name].values())
                status.benign, status.elapsed_s = counts[s.name][BENIGN], now - started
                child, deadline = children.get(s.name, (None, end))
                if child is not None and (not child.running() or now > deadline):
                    group.finish(child)
                    del children[s.name]
                    status.state = "finishing"
            self.on_status(self.statuses)
            if not children and now >= end:
                break
            time.sleep(POLL_S * 4)
        time.sleep(GRACE_S)
        files = []
        for s, status in zip(self.scenarios, self.statuses, strict=True):
            stats = captures[s.name].stop()
            files.append(self._entry(s, status, captures[s.name].path, [stats.dropped],
                                     started, []))  # fmt: skip
        return files
