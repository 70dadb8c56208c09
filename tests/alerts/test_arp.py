"""ARP frames through the alert engine: cache poisoning and sweeps raise incidents that
name the spoofer's MAC and address; a LAN's ordinary ARP raises nothing.

The frames are written into capture files and go the whole offline way (`amlhp alerts`:
encoder, committed model, engine), which is the stream's code (the pipeline test on the
broker checks the stream gives the offline verdicts)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from amlhp.alerts.offline import alerts_from_captures
from amlhp.alerts.policy import AlertPolicy
from amlhp.model.scorer import default_model_path, load_scorer
from tests.support import synth

ARP = synth.ETHERTYPE_ARP
ROUTER, ROUTER_MAC = "192.168.7.1", "00:11:22:33:44:01"
CAMERA, CAMERA_MAC = "192.168.7.20", "00:11:22:33:44:20"
ATTACKER, ATTACKER_MAC = "192.168.7.66", "de:ad:be:ef:00:66"
START = 1_700_000_000_000_000_000
SECOND = 1_000_000_000


def frame(
    op: int, mac: str, sender: str, target: str, target_mac: str = "00:00:00:00:00:00"
) -> bytes:
    return synth.ethernet(synth.arp(op, mac, sender, target_mac, target), ARP)


def ordinary_lan(seconds: int) -> list[tuple[int, bytes]]:
    """A camera and the router asking for each other and answering, every few seconds,
    with probes and gratuitous announcements as devices do at start."""
    out = [
        (0, frame(1, CAMERA_MAC, "0.0.0.0", CAMERA)),  # RFC 5227 probe
        (1, frame(1, CAMERA_MAC, CAMERA, CAMERA)),  # gratuitous announcement
    ]
    for t in range(2, seconds, 5):
        out += [
            (t, frame(1, CAMERA_MAC, CAMERA, ROUTER)),
            (t, frame(2, ROUTER_MAC, ROUTER, CAMERA, CAMERA_MAC)),
            (t + 2, frame(1, ROUTER_MAC, ROUTER, CAMERA)),
            (t + 2, frame(2, CAMERA_MAC, CAMERA, ROUTER, ROUTER_MAC)),
        ]
    return out


def write(path: Path, timed: list[tuple[int, bytes]]) -> Path:
    timed = sorted(timed, key=lambda item: item[0])
    records = [synth.Record(f, START + t * SECOND + i) for i, (t, f) in enumerate(timed)]
    return synth.write_pcap(path, records)


def incidents(path: Path) -> list[dict[str, object]]:
    """Each incident's last revision."""
    return alerts_from_captures([path], load_scorer(default_model_path()), AlertPolicy()).incidents


def test_ordinary_arp_raises_nothing(tmp_path: Path) -> None:
    assert incidents(write(tmp_path / "lan.pcap", ordinary_lan(600))) == []


def test_poisoning_names_the_spoofing_mac_and_address(tmp_path: Path) -> None:
    """arpspoof's way: the attacker announces itself, then tells the camera every two
    seconds that the router's address is at its MAC, while the router keeps answering."""
    timed = ordinary_lan(120)
    timed.append((3, frame(1, ATTACKER_MAC, ATTACKER, ROUTER)))
    timed += [(t, frame(2, ATTACKER_MAC, ROUTER, CAMERA, CAMERA_MAC)) for t in range(10, 60, 2)]
    found = incidents(write(tmp_path / "spoof.pcap", timed))
    assert [(i["host"], i["kind"]) for i in found] == [(ATTACKER, "mitm")]
    evidence = found[0]["evidence"]
    assert isinstance(evidence, list)
    facts = evidence[0]["facts"]
    assert evidence[0]["detector"] == "arp_spoof"
    assert f"mac={ATTACKER_MAC}" in facts
    assert f"claimed={ROUTER}" in facts
    assert "T1557.002" in found[0]["techniques"]  # type: ignore[operator]


def test_an_address_moves_after_its_owner_is_silent(tmp_path: Path) -> None:
    """DHCP gives a silent device's address to another: one claim after the rebind time
    is a move, not a conflict."""
    timed = [(0, frame(1, CAMERA_MAC, CAMERA, ROUTER))]
    timed += [(t, frame(1, ATTACKER_MAC, CAMERA, ROUTER)) for t in range(400, 460, 2)]
    assert incidents(write(tmp_path / "moved.pcap", timed)) == []


@pytest.mark.parametrize("spacing_ms", [5, 900])
def test_a_sweep_is_a_scan(tmp_path: Path, spacing_ms: int) -> None:
    """nmap -sn over a /24: a request for every address, fast or one a second."""
    base = START
    records = [
        synth.Record(
            frame(1, ATTACKER_MAC, ATTACKER, f"192.168.7.{i}"), base + i * spacing_ms * 10**6
        )
        for i in range(1, 255)
    ]
    path = synth.write_pcap(tmp_path / "sweep.pcap", records)
    found = incidents(path)
    assert [(i["host"], i["kind"]) for i in found] == [(ATTACKER, "scan")]
    evidence = found[0]["evidence"]
    assert isinstance(evidence, list)
    assert evidence[0]["detector"] == "arp_sweep"


def advert(mac: str, address: str, to: str) -> bytes:
    """A neighbour advertisement (override flag) for ``address`` from itself, its target
    link-layer address option giving ``mac``: how a node answers, and how
    ``atk6-fake_advertise6`` spoofs."""
    body = b"\x20\x00\x00\x00" + socket.inet_pton(socket.AF_INET6, address)
    body += bytes([2, 1]) + bytes.fromhex(mac.replace(":", ""))
    packet = synth.ipv6(synth.icmpv6(136, 0, body), 58, src=address, dst=to)
    return synth.ethernet(packet, synth.ETHERTYPE_IPV6)


def test_neighbour_spoofing_over_ipv6_is_arp_spoofing(tmp_path: Path) -> None:
    """IPv6's ARP: the router advertises its own address; the attacker, known by its IPv4
    address, then advertises the router's IPv6 address at its own MAC every second."""
    timed = ordinary_lan(120)
    timed.append((3, frame(1, ATTACKER_MAC, ATTACKER, ROUTER)))
    for t in range(0, 120, 10):
        timed.append((t, advert(ROUTER_MAC, "fd00::1", "fd00::20")))
    timed += [(t, advert(ATTACKER_MAC, "fd00::1", "fd00::20")) for t in range(30, 45)]
    found = incidents(write(tmp_path / "nd-spoof.pcap", timed))
    mitm = [i for i in found if i["kind"] == "mitm"]
    assert [i["host"] for i in mitm] == [ATTACKER]
    evidence = mitm[0]["evidence"]
    assert isinstance(evidence, list)
    assert evidence[0]["detector"] == "arp_spoof"
    assert f"mac={ATTACKER_MAC}" in evidence[0]["facts"]
    assert "claimed=fd00::1" in evidence[0]["facts"]
