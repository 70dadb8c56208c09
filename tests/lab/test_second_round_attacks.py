"""The second round's attacks, each run for a few seconds with its real tools.

One short lab run of the telnet brute force, the masscan scan, the DNS tunnel, the reverse
shell, the beaconing, the payload download and the exfiltration; then, per scenario, what
its packets must hold (read back with dpkt) and that ``amlhp lab verify`` accepts the run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import dpkt
import pytest

from amlhp.lab.attack_services import C2_PORT, REVSHELL_PORT, TUNNEL_DOMAIN
from amlhp.lab.botnet_scan import BOT_PORTS, HOST_END, NETNS
from amlhp.lab.dnstunnel import CLIENT_NS, SERVER_NS
from amlhp.lab.topology import Topology
from amlhp.lab.verify import verify_run
from tests.support.lab import attacks_alone, require_lab

pytestmark = [pytest.mark.slow, pytest.mark.live]

NAMES = (
    "telnet_bruteforce", "botnet_scan", "dns_tunnel", "c2_reverse_shell", "c2_beacon",
    "malware_download", "exfiltration",
)  # fmt: skip
T = Topology()
Run = tuple[Path, dict[str, Any]]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    require_lab()
    out = tmp_path_factory.mktemp("lab-second-round")
    return out, attacks_alone(out, "second-round", NAMES, 250, "pytest second round")


def packets(path: Path) -> Iterator[tuple[IPv4Address, IPv4Address, dpkt.ip.IP]]:
    with path.open("rb") as fh:
        for _, frame in dpkt.pcap.Reader(fh):
            eth = dpkt.ethernet.Ethernet(frame)
            if isinstance(eth.data, dpkt.ip.IP):
                ip = eth.data
                yield IPv4Address(ip.src), IPv4Address(ip.dst), ip


def tcp_payload(path: Path, port: int) -> bytes:
    """Every TCP payload byte to or from ``port``, in capture order."""
    return b"".join(
        bytes(ip.data.data)
        for _, _, ip in packets(path)
        if isinstance(ip.data, dpkt.tcp.TCP) and port in (ip.data.sport, ip.data.dport)
    )


def test_every_scenario_made_its_class_and_verify_accepts_the_run(run: Run) -> None:
    out, manifest = run
    for entry in manifest["files"]:
        assert entry["classes"].get(entry["label"], 0) >= 100, entry
    report = verify_run(out)
    assert report.ok, "\n".join(report.lines())


def test_telnet_brute_force_speaks_telnet_and_is_refused(run: Run) -> None:
    out, _ = run
    data = tcp_payload(out / "telnet_bruteforce.pcap", T.ports.telnet)
    assert b"\xff\xfb" in data or b"\xff\xfd" in data  # IAC WILL / IAC DO negotiation
    assert data.count(b"Login incorrect") >= 3
    assert b"login:" in data


def test_masscan_probes_many_hosts_on_bot_ports_from_its_namespace(run: Run) -> None:
    out, manifest = run
    entry = next(e for e in manifest["files"] if e["scenario"] == "botnet_scan")
    assert entry["interfaces"] == ["lo", HOST_END]
    syns = [
        (dst, ip.data.dport)
        for src, dst, ip in packets(out / "botnet_scan.pcap")
        if src == T.attacker(11)
        and isinstance(ip.data, dpkt.tcp.TCP)
        and ip.data.flags & dpkt.tcp.TH_SYN
    ]
    assert len({d for d, _ in syns}) >= 10
    assert {p for _, p in syns} <= set(BOT_PORTS)
    assert len({p for _, p in syns}) == len(BOT_PORTS)
    assert not Path(f"/var/run/netns/{NETNS}").exists()
    assert not Path(f"/sys/class/net/{HOST_END}").exists()


def query_name(message: bytes) -> bytes:
    """The first question's name, as raw bytes (iodine's labels need not be UTF-8)."""
    labels, pos = [], 12
    while pos < len(message) and message[pos]:
        size = message[pos]
        labels.append(message[pos + 1 : pos + 1 + size])
        pos += 1 + size
    return b".".join(labels)


def test_dns_tunnel_queries_carry_long_encoded_names_of_its_domain(run: Run) -> None:
    out, _ = run
    names = [
        query_name(bytes(ip.data.data))
        for _, _, ip in packets(out / "dns_tunnel.pcap")
        if isinstance(ip.data, dpkt.udp.UDP) and ip.data.dport in (53, 5300)
    ]
    tunnel = [n for n in names if n.lower().endswith(TUNNEL_DOMAIN.encode())]
    assert len(tunnel) >= 50
    assert max(len(n) for n in tunnel) > 100  # data rides in the query names
    assert not Path(f"/var/run/netns/{CLIENT_NS}").exists()
    assert not Path(f"/var/run/netns/{SERVER_NS}").exists()


def test_reverse_shell_carries_commands_out_and_their_output_back(run: Run) -> None:
    out, _ = run
    typed = b""
    answers = b""
    for src, _, ip in packets(out / "c2_reverse_shell.pcap"):
        if isinstance(ip.data, dpkt.tcp.TCP) and REVSHELL_PORT in (ip.data.sport, ip.data.dport):
            if src == T.attacker(14):
                typed += bytes(ip.data.data)
            else:
                answers += bytes(ip.data.data)
    assert typed.count(b"\n") >= 2
    assert b"nobody" in answers or b"Linux" in answers or b"/" in answers


def test_beacons_poll_the_c2_and_post_results(run: Run) -> None:
    out, _ = run
    data = tcp_payload(out / "c2_beacon.pcap", C2_PORT)
    assert data.count(b"GET /api/v1/beacon?id=") >= 3
    assert b"POST /api/v1/result" in data
    assert b'"t": "' in data  # a base64 task


def test_payloads_are_fetched_over_ftp_and_http(run: Run) -> None:
    out, _ = run
    path = out / "malware_download.pcap"
    ftp = tcp_payload(path, T.ports.ftp)
    http = tcp_payload(path, T.ports.http)
    assert b"RETR " in ftp
    assert b"GET /" in http
    everything = b"".join(bytes(ip.data.data) for _, _, ip in packets(path))
    assert b"\x7fELF" in everything or b"#!/bin/sh" in everything


def test_exfiltration_stores_files_on_the_attackers_ftp(run: Run) -> None:
    out, _ = run
    ftp = tcp_payload(out / "exfiltration.pcap", T.ports.ftp)
    stored = Counter(line.split(b" ", 1)[0] for line in ftp.split(b"\r\n") if line)
    assert stored[b"STOR"] >= 1
    assert b"226 " in ftp  # transfer complete
