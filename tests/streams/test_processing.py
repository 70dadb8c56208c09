"""Per-message work of the encode and score agents: exact accounting without a broker."""

from __future__ import annotations

import dpkt
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from amlhp.encoders.layout import EncoderConfig
from amlhp.model.decision import UNCALIBRATED, Assessment
from amlhp.streams import processing as proc
from amlhp.streams.deadletter import ENCODER_MISMATCH, INVALID_BATCH, Origin, reason_counts
from amlhp.wire import DEAD_LETTER, VERDICT, from_ipc, raw_schema, to_ipc

ORIGIN = Origin("amlhp.packets.raw", 2, 41)


class ProtocolScorer:
    """A transparent stand-in model: class 1 for TCP (IP proto byte 9 == 6), else 0."""

    version = "test-1"
    payload_bytes = 64

    @property
    def classes(self) -> list[str]:
        return ["other", "tcp"]

    def predict(self, header: np.ndarray, payload: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert header.shape[1] == 128
        assert payload.shape == (header.shape[0], 64)
        ids = (header[:, 9] == 6).astype(np.int64)
        probs = np.zeros((len(ids), 2), np.float32)
        probs[np.arange(len(ids)), ids] = 0.9
        probs[np.arange(len(ids)), 1 - ids] = 0.1
        return ids, probs

    def assess(self, header: np.ndarray, payload: np.ndarray) -> Assessment:
        """The same answer as a policy would give it: "tcp" is the attack class here."""
        logits = np.log(self.predict(header, payload)[1])
        return UNCALIBRATED.assess(logits, np.array([True, False]))


def _frame(transport: dpkt.Packet, proto: int) -> bytes:
    ip = dpkt.ip.IP(
        src=bytes([10, 0, 0, 1]), dst=bytes([10, 0, 0, 2]), p=proto, ttl=64, data=transport
    )
    ip.len = len(ip)
    eth = dpkt.ethernet.Ethernet(src=b"\x00" * 6, dst=b"\x00" * 6, type=0x0800, data=ip)
    return bytes(eth)


def _raw_batch(gateway: str, frames: list[bytes], first_seq: int = 0) -> pa.RecordBatch:
    n = len(frames)
    return pa.RecordBatch.from_arrays(
        [
            pa.array([gateway] * n, pa.string()),
            pa.array(range(1_000, 1_000 + n), pa.int64()),
            pa.array(range(first_seq, first_seq + n), pa.uint64()),
            pa.array([1] * n, pa.uint16()),
            pa.array([len(f) for f in frames], pa.uint32()),
            pa.array(frames, pa.binary()),
        ],
        schema=raw_schema(),
    )


@pytest.fixture
def mixed_frames() -> list[bytes]:
    tcp = _frame(dpkt.tcp.TCP(sport=1234, dport=1883, flags=2, data=b"hello"), 6)
    udp = _frame(dpkt.udp.UDP(sport=53, dport=5353, ulen=12, data=b"abcd"), 17)
    arp = bytes(dpkt.ethernet.Ethernet(type=0x0806, data=b"\x00" * 28))
    truncated = tcp[:20]
    return [tcp, udp, arp, tcp, truncated]


def test_every_packet_is_encoded_or_dead(mixed_frames: list[bytes]) -> None:
    value = to_ipc(_raw_batch("gw-a", mixed_frames, first_seq=10))
    result = proc.encode_message(value, ORIGIN, EncoderConfig())
    assert result.packets_in == 5
    assert result.encoded is not None
    assert result.dead is not None
    assert result.encoded.num_rows + result.dead.num_rows == 5
    assert result.encoded.column("seq").to_pylist() == [10, 11, 13]
    dead = from_ipc(to_ipc(result.dead), DEAD_LETTER)
    assert dead.column("seq").to_pylist() == [12, 14]
    assert set(dead.column("origin_offset").to_pylist()) == {41}
    assert "ok" not in reason_counts(dead)
    assert sum(reason_counts(dead).values()) == 2


def test_garbage_message_becomes_one_dead_letter() -> None:
    result = proc.encode_message(b"\x00garbage", ORIGIN, EncoderConfig(), gateway="gw-x")
    assert result.encoded is None
    assert result.packets_in == 0
    assert result.dead is not None
    assert result.dead.column("reason").to_pylist() == [INVALID_BATCH]
    assert result.dead.column("gateway").to_pylist() == ["gw-x"]
    assert result.dead.column("data").to_pylist() == [b"\x00garbage"]


def test_score_keeps_identity_and_uses_one_model(mixed_frames: list[bytes]) -> None:
    encoded = [
        proc.encode_message(to_ipc(_raw_batch(gw, mixed_frames)), ORIGIN, EncoderConfig()).encoded
        for gw in ("gw-a", "gw-b")
    ]
    messages = [
        proc.EncodedMessage(to_ipc(b), ORIGIN, None, 5, 7) for b in encoded if b is not None
    ] + [proc.EncodedMessage(b"not arrow", ORIGIN, "gw-c")]
    decoded = proc.decode_encoded(messages)
    assert len(decoded.dead) == 1
    verdicts = proc.score_batches(
        decoded.batches, ProtocolScorer(), max_batch=2, timings=decoded.timings
    )
    assert verdicts.num_rows == 6
    assert verdicts.column("label").to_pylist() == ["tcp", "other", "tcp"] * 2
    assert set(verdicts.column("model_version").to_pylist()) == {"test-1"}
    assert pc.all(pc.equal(verdicts.column("encoded_at_ns"), 7)).as_py()
    parts = dict(proc.split_by_gateway(verdicts))
    assert sorted(parts) == ["gw-a", "gw-b"]
    round_trip = from_ipc(to_ipc(parts["gw-a"]), VERDICT)
    assert round_trip.column("seq").to_pylist() == [0, 1, 3]
    assert round_trip.column("score").to_pylist() == pytest.approx([0.9] * 3)
    # uncalibrated: the attack class's probability is the malicious score, cut at 0.5
    assert round_trip.column("malicious_score").to_pylist() == pytest.approx([0.9, 0.1, 0.9])
    assert round_trip.column("decision").to_pylist() == ["malicious", "benign", "malicious"]


@pytest.mark.parametrize(
    ("encoded_with", "scored_with", "says"),
    [
        (EncoderConfig(payload_bytes=64), EncoderConfig(payload_bytes=32), "P=64"),
        (EncoderConfig(mask_fields=("ip.src", "ip.dst")), EncoderConfig(mask_fields=()), "mask"),
    ],
)
def test_records_of_another_encoding_are_dead_letters_not_scored(
    mixed_frames: list[bytes], encoded_with: EncoderConfig, scored_with: EncoderConfig, says: str
) -> None:
    """A hot reload between the encode and score agents: the new model never sees them."""
    encoded = proc.encode_message(
        to_ipc(_raw_batch("gw-a", mixed_frames, first_seq=10)), ORIGIN, encoded_with
    ).encoded
    assert encoded is not None
    message = proc.EncodedMessage(to_ipc(encoded), ORIGIN, "gw-a")
    assert proc.decode_encoded([message], encoded_with).batches  # its own model scores it
    decoded = proc.decode_encoded([message], scored_with)
    assert decoded.batches == []
    [dead] = decoded.dead
    dead = from_ipc(to_ipc(dead), DEAD_LETTER)
    assert dead.column("seq").to_pylist() == [10, 11, 13]  # each packet accounted
    assert reason_counts(dead) == {ENCODER_MISMATCH: 3}
    assert says in dead.column("detail")[0].as_py()


def test_row_chunks_cover_every_row_once(mixed_frames: list[bytes]) -> None:
    raw = _raw_batch("gw-a", mixed_frames * 5)
    parts = proc.row_chunks(raw, 7)
    assert [p.num_rows for p in parts] == [7, 7, 7, 4]
    assert [s for p in parts for s in p.column("seq").to_pylist()] == list(range(25))
    assert proc.row_chunks(raw, 100) == [raw]
