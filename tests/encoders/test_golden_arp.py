"""Golden tests for ARP frames, both encoders: what the behaviour detectors get of each.

An ARP frame is not scored (no ``h``/``d``): its row carries the sender and target
protocol addresses as ``src_ip``/``dst_ip``, the operation and the sender hardware address.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from amlhp.encoders import linktypes as lt
from amlhp.encoders.layout import EncoderConfig
from amlhp.encoders.prefix import needed_prefix
from amlhp.encoders.reference import EncodedPacket
from tests.support import synth

Encoder = Callable[..., EncodedPacket]
ARP = synth.ETHERTYPE_ARP
MAC = "02:42:ac:11:00:07"


def arp_row(op: int, sender: str, target: str, mac: str = MAC) -> EncodedPacket:
    return EncodedPacket(status="arp", src_ip=sender, dst_ip=target, arp_op=op, arp_mac=mac)


@pytest.mark.parametrize(
    ("linktype", "frame", "expected"),
    [
        (
            lt.ETHERNET,
            synth.ethernet(synth.arp(1, MAC, "10.0.0.7", target_ip="10.0.0.1"), ARP),
            arp_row(1, "10.0.0.7", "10.0.0.1"),
        ),
        (  # a reply, padded to Ethernet's 60 bytes as on the wire
            lt.ETHERNET,
            synth.ethernet(synth.arp(2, MAC, "10.0.0.1", "aa:bb:cc:dd:ee:ff", "10.0.0.7"), ARP)
            + bytes(18),
            arp_row(2, "10.0.0.1", "10.0.0.7"),
        ),
        (  # gratuitous: sender and target the same address
            lt.ETHERNET,
            synth.ethernet(synth.arp(1, MAC, "10.0.0.9", target_ip="10.0.0.9"), ARP),
            arp_row(1, "10.0.0.9", "10.0.0.9"),
        ),
        (  # a probe (RFC 5227): sender address 0.0.0.0
            lt.ETHERNET,
            synth.ethernet(synth.arp(1, MAC, "0.0.0.0", target_ip="10.0.0.9"), ARP),
            arp_row(1, "0.0.0.0", "10.0.0.9"),
        ),
        (
            lt.ETHERNET,
            synth.ethernet(synth.arp(2, MAC, "10.0.0.1", hardware=6), ARP, vlans=[(0x8100, 5)]),
            arp_row(2, "10.0.0.1", "192.168.1.1"),
        ),
        (
            lt.LINUX_SLL,
            synth.sll(synth.arp(1, MAC, "10.0.0.7"), ARP),
            arp_row(1, "10.0.0.7", "192.168.1.1"),
        ),
        (
            lt.LINUX_SLL2,
            synth.sll2(synth.arp(3, MAC, "10.0.0.7"), ARP),
            arp_row(3, "10.0.0.7", "192.168.1.1"),
        ),
    ],
    ids=["request", "reply-padded", "gratuitous", "probe", "vlan-ieee802", "sll", "sll2-rarp-op"],
)
def test_arp_frames(encoder: Encoder, linktype: int, frame: bytes, expected: EncodedPacket) -> None:
    assert encoder(linktype, frame, EncoderConfig()) == expected
    assert needed_prefix(linktype, frame, 64) == len(frame) - (18 if len(frame) == 60 else 0)


@pytest.mark.parametrize(
    "frame",
    [
        synth.ethernet(synth.arp()[:27], ARP),
        synth.ethernet(synth.arp(hardware=7), ARP),
        synth.ethernet(synth.arp(protocol=0x86DD), ARP),
        synth.ethernet(bytes(4) + b"\x06\x10" + synth.arp()[6:], ARP),  # 16-byte addresses
    ],
    ids=["cut", "hardware-7", "protocol-ipv6", "address-lengths"],
)
def test_bad_arp(encoder: Encoder, frame: bytes) -> None:
    assert encoder(lt.ETHERNET, frame, EncoderConfig()) == EncodedPacket(status="bad_arp")
