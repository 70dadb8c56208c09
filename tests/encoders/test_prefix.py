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
        (lt.ETHERNET, synth.ethernet(b"\x60" + bytes(500), synth.ETHERTYPE_IPV6), 14),
        (lt.NULL, synth.loopback(bytes(500), family=24), 4),
        (147, bytes(500), 0),
    ],
    ids=["tcp", "tcp-short", "vlan-options", "sll-udp", "raw-icmp", "ipv6", "null-v6", "unknown"],
)
def test_prefix(linktype: int, frame: bytes, expected: int) -> None:
    assert needed_prefix(linktype, frame, 64) == expected


def test_max_needed_prefix() -> None:
    assert max_needed_prefix(lt.ETHERNET, 64) == 14 + 16 + 60 + 60 + 64
    assert max_needed_prefix(lt.RAW, 10) == 130
