"""needed_prefix: the snap length rule for a tap (the property test covers random packets)."""

from __future__ import annotations

import pytest

from amlhp.encoders import linktypes as lt
from amlhp.encoders.prefix import max_needed_prefix, needed_prefix
from tests.support import synth

TCP_OPTIONS = bytes(12)


@pytest.mark.parametrize(
    ("linktype", "frame", "expected"),
    [
        (lt.ETHERNET, synth.ethernet(synth.ipv4(synth.tcp(b"x" * 500), 6)), 14 + 20 + 20 + 64),
        (lt.ETHERNET, synth.ethernet(synth.ipv4(synth.tcp(b"x" * 10), 6)), 14 + 20 + 20 + 10),
        (
            lt.ETHERNET,
            synth.ethernet(
                synth.ipv4(synth.tcp(b"x" * 500, options=TCP_OPTIONS), 6, options=bytes(8)),
                vlans=[(0x8100, 1)],
            ),
            18 + 28 + 32 + 64,
        ),
        (lt.LINUX_SLL, synth.sll(synth.ipv4(synth.udp(b"y" * 500), 17)), 16 + 20 + 8 + 64),
        (lt.RAW, synth.ipv4(synth.icmp_echo(b"z" * 500), 1), 20 + 64),
        (
            lt.ETHERNET,
            synth.ethernet(synth.ipv6(synth.udp(b"y" * 500), 17), synth.ETHERTYPE_IPV6),
            14 + 40 + 8 + 64,
        ),
        (
            lt.NULL,
            synth.loopback(
                synth.ipv6(
                    synth.tcp(b"x" * 500),
                    0,
                    extensions=synth.ipv6_extension(0, 44, bytes(70))
                    + synth.ipv6_extension(44, 6, offset=0, more=True),
                ),
                family=24,
            ),
            4 + 40 + 72 + 8 + 20 + 64,
        ),
        (lt.ETHERNET, synth.ethernet(bytes(500), synth.ETHERTYPE_ARP), 14 + 28),
        (lt.NULL, synth.loopback(bytes(500), family=7), 4),
        (147, bytes(500), 0),
    ],
    ids=[
        "tcp",
        "tcp-short",
        "vlan-options",
        "sll-udp",
        "raw-icmp",
        "ipv6-udp",
        "null-v6-extensions",
        "arp",
        "null-other",
        "unknown",
    ],
)
def test_prefix(linktype: int, frame: bytes, expected: int) -> None:
    assert needed_prefix(linktype, frame, 64) == expected


def test_max_needed_prefix() -> None:
    assert max_needed_prefix(lt.ETHERNET, 64) == 14 + 16 + 40 + 256 + 60 + 64
    assert max_needed_prefix(lt.RAW, 10) == 40 + 256 + 60 + 10
