"""The worker's work on one micro-batch: exact accounting without a broker."""

from __future__ import annotations

import dpkt
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from amlhp.encoders.arrays import model_inputs
from amlhp.encoders.layout import EncoderConfig
from amlhp.model.decision import UNCALIBRATED, Assessment
from amlhp.streams import processing as proc
from amlhp.streams.deadletter import INVALID_BATCH, Origin, reason_counts
from amlhp.wire import DEAD_LETTER, RAW, VERDICT, from_ipc, raw_schema, to_ipc

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
    raw = from_ipc(to_ipc(_raw_batch("gw-a", mixed_frames, first_seq=10)), RAW)
    result = proc.encode_raw(raw, [ORIGIN], EncoderConfig())
    assert result.encoded is not None
    assert result.ok.tolist() == [True, True, False, True, False]
    assert result.encoded.column("seq").to_pylist() == [10, 11, 13]
    [dead] = [from_ipc(to_ipc(d), DEAD_LETTER) for d in result.dead]
    assert dead.column("seq").to_pylist() == [12, 14]
    assert set(dead.column("origin_offset").to_pylist()) == {41}
    assert "ok" not in reason_counts(dead)
    assert sum(reason_counts(dead).values()) == 2


def test_garbage_message_becomes_one_dead_letter() -> None:
    message = proc.RawMessage(b"\x00garbage", ORIGIN, "gw-x")
    done = proc.process_micro_batch([message], ProtocolScorer(), 64, EncoderConfig())
    assert done.verdicts is None
    assert done.packets_in == [0]
    [dead] = done.dead
    assert dead.column("reason").to_pylist() == [INVALID_BATCH]
    assert dead.column("gateway").to_pylist() == ["gw-x"]
    assert dead.column("data").to_pylist() == [b"\x00garbage"]


def test_micro_batch_accounts_every_packet_and_uses_one_model(mixed_frames: list[bytes]) -> None:
    origins = [Origin(ORIGIN.topic, ORIGIN.partition, offset) for offset in (41, 42, 43)]
    messages = [
        proc.RawMessage(to_ipc(_raw_batch(gw, mixed_frames)), origin, gw, 5)
        for gw, origin in zip(("gw-a", "gw-b"), origins, strict=False)
    ] + [proc.RawMessage(b"not arrow", origins[2], "gw-c")]
    done = proc.process_micro_batch(messages, ProtocolScorer(), 2, EncoderConfig())
    assert done.packets_in == [5, 5, 0]
    dead = pa.Table.from_batches([from_ipc(to_ipc(d), DEAD_LETTER) for d in done.dead])
    assert dead.column("gateway").to_pylist() == ["gw-c"] + ["gw-a"] * 2 + ["gw-b"] * 2
    assert dead.column("seq").to_pylist() == [None, 2, 4, 2, 4]  # one message, four packets
    assert dead.column("origin_offset").to_pylist() == [43, 41, 41, 42, 42]  # each its own
    assert reason_counts(dead)[INVALID_BATCH] == 1
    verdicts = done.verdicts
    assert verdicts is not None
    assert verdicts.num_rows == 6  # 10 packets in: 6 verdicts + 4 dead letters
    assert verdicts.column("label").to_pylist() == ["tcp", "other", "tcp"] * 2
    assert set(verdicts.column("model_version").to_pylist()) == {"test-1"}
    assert pc.all(pc.equal(verdicts.column("ingested_at_ns"), 5)).as_py()
    encoded_at = verdicts.column("encoded_at_ns").to_numpy()
    scored_at = verdicts.column("scored_at_ns").to_numpy()
    assert (encoded_at > 5).all()
    assert (scored_at >= encoded_at).all()
    assert sum(b.num_rows for b in done.encoded) == verdicts.num_rows
    assert done.partitions is not None
    assert done.partitions.tolist() == [ORIGIN.partition] * 6  # where each row came from
    moved = np.array([2, 2, 2, 5, 5, 5], np.int32)  # as if gw-b's messages were on 5
    parts = dict(proc.split_by_partition(verdicts, moved))
    assert sorted(parts) == [2, 5]
    assert set(parts[5].column("gateway").to_pylist()) == {"gw-b"}
    round_trip = from_ipc(to_ipc(parts[2]), VERDICT)
    assert round_trip.column("seq").to_pylist() == [0, 1, 3]
    assert round_trip.column("score").to_pylist() == pytest.approx([0.9] * 3)
    # uncalibrated: the attack class's probability is the malicious score, cut at 0.5
    assert round_trip.column("malicious_score").to_pylist() == pytest.approx([0.9, 0.1, 0.9])
    assert round_trip.column("decision").to_pylist() == ["malicious", "benign", "malicious"]


class RecordingScorer(ProtocolScorer):
    """Remembers the payload width and the header bytes it was given."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, np.ndarray]] = []

    def predict(self, header: np.ndarray, payload: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.seen.append((payload.shape[1], header.copy()))
        ids = np.zeros(len(header), np.int64)
        return ids, np.tile(np.array([[0.9, 0.1]], np.float32), (len(header), 1))


@pytest.mark.parametrize(
    "config", [EncoderConfig(payload_bytes=32), EncoderConfig(mask_fields=("ip.src", "ip.dst"))]
)
def test_the_model_sees_the_encoding_it_is_given(
    mixed_frames: list[bytes], config: EncoderConfig
) -> None:
    """The worker passes the scoring model's own encoder configuration: what the model
    receives is encoded exactly so (P and masking), as ``amlhp encode`` would."""
    raw = _raw_batch("gw-a", mixed_frames, first_seq=10)
    scorer = RecordingScorer()
    message = proc.RawMessage(to_ipc(raw), ORIGIN, "gw-a")
    done = proc.process_micro_batch([message], scorer, 64, config)
    assert done.verdicts is not None
    assert done.verdicts.num_rows == 3
    [(width, header)] = scorer.seen
    assert width == config.payload_bytes
    expected = proc.encode_raw(raw, [ORIGIN], config).encoded
    assert expected is not None
    assert np.array_equal(header, model_inputs(pa.Table.from_batches([expected]))[0])


def test_row_chunks_cover_every_row_once(mixed_frames: list[bytes]) -> None:
    raw = _raw_batch("gw-a", mixed_frames * 5)
    parts = proc.row_chunks(raw, 7)
    assert [p.num_rows for p in parts] == [7, 7, 7, 4]
    assert [s for p in parts for s in p.column("seq").to_pylist()] == list(range(25))
    assert proc.row_chunks(raw, 100) == [raw]
