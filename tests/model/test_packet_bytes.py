"""The baselines' "first n bytes" rebuilt from the encoded vectors equal the real packet."""

from __future__ import annotations

import numpy as np
import pytest

from amlhp.encoders.arrays import model_inputs
from amlhp.encoders.fast import encode_batch
from amlhp.encoders.layout import EncoderConfig
from amlhp.model.packet_bytes import packet_bytes
from tests.support import synth

PACKETS = [
    synth.ipv4(
        synth.tcp(b"hello mqtt" * 3, options=b"\x02\x04\x05\xb4"), 6, options=b"\x01\x01\x01\x01"
    ),
    synth.ipv4(synth.udp(b"dns!" * 20), 17),
    synth.ipv4(synth.icmp_echo(b"ping" * 4), 1),
    synth.ipv4(synth.tcp(b""), 6),
]


@pytest.mark.parametrize("length", [20, 50, 120])
def test_matches_l3_bytes_with_masked_addresses(length: int) -> None:
    batch = encode_batch(
        synth.raw_batch([(1, synth.ethernet(p)) for p in PACKETS]), EncoderConfig(payload_bytes=200)
    )
    header, payload, ok = model_inputs(batch)
    assert ok.all()
    got = packet_bytes(header, payload, length)
    for row, packet in zip(got, PACKETS, strict=True):
        expected = bytearray(packet[:length])
        expected[12:20] = bytes(8)  # ip.src and ip.dst are masked by default
        want = np.zeros(length, np.uint8)
        want[: len(expected)] = np.frombuffer(bytes(expected), np.uint8)
        assert row.tolist() == want.tolist()


def test_rejects_wrong_header_width() -> None:
    with pytest.raises(ValueError, match="header"):
        packet_bytes(np.zeros((2, 64), np.uint8), np.zeros((2, 8), np.uint8), 50)
