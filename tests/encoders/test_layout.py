"""The layout constants and the encoder configuration."""

from __future__ import annotations

import struct

import pytest

from amlhp.encoders.exceptions import EncoderConfigError
from amlhp.encoders.layout import (
    DEFAULT_CONFIG,
    HEADER_LEN,
    MASKABLE_FIELDS,
    SLOTS,
    EncoderConfig,
    mask_columns,
)
from tests.support import synth


def test_slots_tile_the_header() -> None:
    covered = sorted(i for off, size in SLOTS.values() for i in range(off, off + size))
    assert covered == list(range(HEADER_LEN))
    assert SLOTS == {"ip": (0, 60), "tcp": (60, 60), "udp": (120, 8)}


def test_default_is_the_papers() -> None:
    assert EncoderConfig(64, ("ip.dst", "ip.src")) == DEFAULT_CONFIG
    assert DEFAULT_CONFIG.mask_fields == ("ip.dst", "ip.src")


def test_groups_expand_and_normalise() -> None:
    config = EncoderConfig(mask_fields=("ports", "tcp.sport", " IP.TTL "))
    assert config.mask_fields == ("ip.ttl", "tcp.dport", "tcp.sport", "udp.dport", "udp.sport")
    assert EncoderConfig(mask_fields=("ports",)) == EncoderConfig(
        mask_fields=("udp.sport", "udp.dport", "tcp.dport", "tcp.sport")
    )


@pytest.mark.parametrize("payload_bytes", [0, -1, 70000])
def test_bad_payload_length(payload_bytes: int) -> None:
    with pytest.raises(EncoderConfigError, match="payload_bytes"):
        EncoderConfig(payload_bytes=payload_bytes)


def test_unknown_mask_field_lists_the_valid_ones() -> None:
    with pytest.raises(EncoderConfigError, match=r"ip\.ttl"):
        EncoderConfig(mask_fields=("ip.colour",))


def test_field_positions_match_the_wire_formats() -> None:
    """Each maskable field sits where the IPv4/TCP/UDP header puts it."""
    ip = synth.ipv4(b"", 6, src="1.2.3.4", dst="5.6.7.8", ttl=99, ident=0xBEEF)
    seg = synth.tcp(sport=0x1111, dport=0x2222, seq=0x33333333, window=0x4444)
    dgram = synth.udp(sport=0x5555, dport=0x6666, udp_checksum=0x7777)
    h = ip[:20] + b"\xff" * 40 + seg[:20] + b"\xff" * 40 + dgram[:8]

    def field(name: str) -> bytes:
        _, first, last = mask_columns(name)
        return h[first:last]

    assert field("ip.src") == bytes([1, 2, 3, 4])
    assert field("ip.dst") == bytes([5, 6, 7, 8])
    assert field("ip.ttl") == bytes([99])
    assert field("ip.id") == struct.pack("!H", 0xBEEF)
    assert field("ip.proto") == bytes([6])
    assert field("tcp.sport") == struct.pack("!H", 0x1111)
    assert field("tcp.dport") == struct.pack("!H", 0x2222)
    assert field("tcp.seq") == struct.pack("!I", 0x33333333)
    assert field("tcp.window") == struct.pack("!H", 0x4444)
    assert field("udp.sport") == struct.pack("!H", 0x5555)
    assert field("udp.checksum") == struct.pack("!H", 0x7777)
    assert set(MASKABLE_FIELDS) >= {"ip.checksum", "tcp.checksum", "tcp.options", "ip.options"}
