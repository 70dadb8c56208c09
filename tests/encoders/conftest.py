"""Fixtures of the encoder tests: both encoders behind one calling convention."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from amlhp.encoders.capture import expand_paths
from amlhp.encoders.fast import encode_batch
from amlhp.encoders.layout import DEFAULT_CONFIG, EncoderConfig
from amlhp.encoders.reference import EncodedPacket, encode_packet
from tests.support.synth import raw_batch

Encoder = Callable[[int, bytes, EncoderConfig], EncodedPacket]


def fast_one(linktype: int, data: bytes, config: EncoderConfig = DEFAULT_CONFIG) -> EncodedPacket:
    """The fast encoder on a batch of one, read back as an :class:`EncodedPacket`."""
    row = encode_batch(raw_batch([(linktype, data)]), config).to_pylist()[0]
    return EncodedPacket(
        status=row["status"],
        header=row["header"],
        payload=row["payload"],
        src_ip=row["src_ip"],
        dst_ip=row["dst_ip"],
        src_port=row["src_port"],
        dst_port=row["dst_port"],
        proto=row["proto"],
        arp_op=row["arp_op"],
        arp_mac=row["arp_mac"],
    )


@pytest.fixture(params=["fast", "reference"])
def encoder(request: pytest.FixtureRequest) -> Encoder:
    """Each test using this runs against both encoders: both must meet every golden."""
    return fast_one if request.param == "fast" else encode_packet


@pytest.fixture(scope="session")
def public_captures(public_data: Path) -> list[Path]:
    """Every pcap/pcapng file under the public data folder."""
    files = expand_paths([public_data])
    assert files, f"no captures under {public_data}"
    return files
