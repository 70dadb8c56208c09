"""The fast encoder against the reference on every packet of every public capture."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from amlhp.encoders.fast import encode_batch
from amlhp.encoders.layout import EncoderConfig
from amlhp.encoders.prefix import needed_prefix
from amlhp.encoders.readers import iter_raw_batches
from amlhp.encoders.reference import encode_packet

pytestmark = [pytest.mark.public_data]


def _rows_equal(path: Path, config: EncoderConfig) -> Counter[str]:
    statuses: Counter[str] = Counter()
    for raw in iter_raw_batches(path):
        encoded = encode_batch(raw, config)
        frames = zip(
            raw.column("linktype").to_pylist(), raw.column("data").to_pylist(), strict=True
        )
        for seq, ((linktype, frame), row) in enumerate(
            zip(frames, encoded.to_pylist(), strict=True)
        ):
            ref = encode_packet(linktype, frame, config)
            got = (
                row["status"],
                row["header"],
                row["payload"],
                row["src_ip"],
                row["dst_ip"],
                row["src_port"],
                row["dst_port"],
                row["proto"],
                row["arp_op"],
                row["arp_mac"],
            )
            want = (
                ref.status,
                ref.header,
                ref.payload,
                ref.src_ip,
                ref.dst_ip,
                ref.src_port,
                ref.dst_port,
                ref.proto,
                ref.arp_op,
                ref.arp_mac,
            )
            assert got == want, f"{path} packet {row['seq']} (batch row {seq})"
            statuses[ref.status] += 1
    return statuses


@pytest.mark.slow
def test_fast_equals_reference_on_every_public_packet(public_captures: list[Path]) -> None:
    totals: Counter[str] = Counter()
    for path in public_captures:
        totals += _rows_equal(path, EncoderConfig())
    assert totals["ok"] > 400_000  # the comparison really covered encoded packets
    assert sum(totals.values()) > totals["ok"]  # and some with a reason (ARP, IPv6, ...)


def test_other_configs_on_a_few_captures(public_captures: list[Path]) -> None:
    chosen = [p for p in public_captures if "stopddos" in p.parts or "mqttset_reduced" in p.parts]
    config = EncoderConfig(payload_bytes=20, mask_fields=("ports", "path", "tcp.options"))
    totals: Counter[str] = Counter()
    for path in chosen[:4]:
        totals += _rows_equal(path, config)
    assert totals["ok"] > 1000


def test_needed_prefix_on_public_packets(public_captures: list[Path]) -> None:
    """Cutting every frame of a few captures to its needed prefix changes no encoding."""
    config = EncoderConfig()
    cut_bytes = all_bytes = 0
    for path in public_captures[::40]:
        for raw in iter_raw_batches(path):
            for linktype, frame in zip(
                raw.column("linktype").to_pylist(), raw.column("data").to_pylist(), strict=True
            ):
                prefix = needed_prefix(linktype, frame, config.payload_bytes)
                assert encode_packet(linktype, frame[:prefix], config) == encode_packet(
                    linktype, frame, config
                )
                cut_bytes += prefix
                all_bytes += len(frame)
    assert 0 < cut_bytes < all_bytes
