"""Packet record schemas and the Kafka wire format (Arrow IPC stream per message)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from amlhp.encoders import exceptions as encoder_exceptions
from amlhp.encoders import layout
from amlhp.encoders import linktypes as lt
from amlhp.encoders.fast import encode_batch
from amlhp.encoders.layout import EncoderConfig
from amlhp.errors import AmlhpError
from amlhp.wire import (
    ENCODED,
    LAYOUT_VERSION,
    RAW,
    VERDICT,
    BatchDecodeError,
    encoded_schema,
    from_ipc,
    raw_schema,
    to_ipc,
    verdict_schema,
)
from tests.support import synth

FRAMES = [
    (lt.ETHERNET, synth.ethernet(synth.ipv4(synth.tcp(b"one"), 6))),
    (lt.ETHERNET, synth.ethernet(synth.arp(), synth.ETHERTYPE_ARP)),
    (lt.LINUX_SLL, synth.sll(synth.ipv4(synth.udp(b"two"), 17))),
]


def verdict_batch() -> pa.RecordBatch:
    rows = [
        {
            "gateway": "gw-1",
            "ts_ns": 1_700_000_000_000_000_000 + i,
            "seq": i,
            "wire_len": 60,
            "linktype": 1,
            "src_ip": "1.2.3.4" if i else None,
            "dst_ip": "5.6.7.8" if i else None,
            "src_port": 1883 if i else None,
            "dst_port": 50000 if i else None,
            "proto": 6 if i else None,
            "status": "ok" if i else "non_ip",
            "label": "mqtt_bruteforce" if i else None,
            "class_id": 3 if i else None,
            "score": 0.75 if i else None,
            "probs": [0.25, 0.0, 0.0, 0.75] if i else None,
            "model_version": "amlhp-test-1",
            "ingested_at_ns": None,
            "encoded_at_ns": 5,
            "scored_at_ns": 9,
            "inference_ns": 4,
        }
        for i in range(3)
    ]
    return pa.RecordBatch.from_pylist(rows, schema=verdict_schema())


@pytest.mark.parametrize(
    ("schema", "name", "version"),
    [(raw_schema(), RAW, b"1"), (encoded_schema(64), ENCODED, b"2"),
     (verdict_schema(), VERDICT, b"4")],
)  # fmt: skip
def test_schemas_carry_name_and_version(schema: pa.Schema, name: str, version: bytes) -> None:
    assert schema.metadata[b"schema"] == name.encode()
    assert schema.metadata[b"version"] == version


def test_raw_columns() -> None:
    assert [(f.name, str(f.type)) for f in raw_schema()] == [
        ("gateway", "string"),
        ("ts_ns", "int64"),
        ("seq", "uint64"),
        ("linktype", "uint16"),
        ("wire_len", "uint32"),
        ("data", "binary"),
    ]


def test_encoded_columns_and_metadata() -> None:
    schema = encoded_schema(32, ("ip.dst", "ip.src"))
    assert schema.names == [
        "gateway", "ts_ns", "seq", "wire_len", "linktype",
        "src_ip", "dst_ip", "src_port", "dst_port", "proto",
        "header", "payload", "status", "arp_op", "arp_mac",
    ]  # fmt: skip
    assert schema.field("header").type == pa.binary(128)
    assert schema.field("payload").type == pa.binary(32)
    assert schema.metadata[b"payload_bytes"] == b"32"
    assert schema.metadata[b"layout_version"] == LAYOUT_VERSION.encode()
    assert schema.metadata[b"mask_fields"] == b"ip.dst,ip.src"


@pytest.mark.parametrize("compression", [None, "zstd", "lz4"])
def test_raw_round_trip(compression: str | None) -> None:
    batch = synth.raw_batch(FRAMES, gateway="gw-7", start_seq=40)
    back = from_ipc(to_ipc(batch, compression=compression), RAW)
    assert back.equals(batch)
    assert back.schema.metadata == batch.schema.metadata


def test_encoded_round_trip_keeps_nulls_and_config() -> None:
    config = EncoderConfig(payload_bytes=16, mask_fields=("ports",))
    encoded = encode_batch(synth.raw_batch(FRAMES), config)
    back = from_ipc(to_ipc(encoded), ENCODED)
    assert back.equals(encoded)
    assert back.column("status").to_pylist() == ["ok", "arp", "ok"]
    assert back.column("header").to_pylist()[1] is None
    assert back.schema.metadata[b"mask_fields"] == b"tcp.dport,tcp.sport,udp.dport,udp.sport"


def test_verdict_round_trip() -> None:
    batch = verdict_batch()
    back = from_ipc(to_ipc(batch), VERDICT)
    assert back.equals(batch)
    assert back.column("probs").to_pylist()[2] == [0.25, 0.0, 0.0, 0.75]


def test_empty_batch_round_trip() -> None:
    batch = synth.raw_batch([])
    back = from_ipc(to_ipc(batch), RAW)
    assert back.num_rows == 0
    assert back.schema.names == raw_schema().names


def test_stream_of_several_batches_is_one_batch() -> None:
    first, second = synth.raw_batch(FRAMES[:1]), synth.raw_batch(FRAMES[1:], start_seq=1)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, raw_schema()) as writer:
        writer.write_batch(first)
        writer.write_batch(second)
    back = from_ipc(sink.getvalue().to_pybytes(), RAW)
    assert back.column("seq").to_pylist() == [0, 1, 2]


def test_wrong_schema_name() -> None:
    message = to_ipc(synth.raw_batch(FRAMES))
    with pytest.raises(BatchDecodeError, match=r"expected a 'amlhp\.encoded' batch"):
        from_ipc(message, ENCODED)


def test_wrong_schema_version() -> None:
    batch = synth.raw_batch(FRAMES)
    meta = dict(batch.schema.metadata)
    meta[b"version"] = b"2"
    message = to_ipc(batch.replace_schema_metadata(meta))
    with pytest.raises(BatchDecodeError, match="version '2' is not supported"):
        from_ipc(message, RAW)


def test_a_schema_checked_once_is_not_trusted_for_another() -> None:
    """The reader remembers the last schema it checked (every message carries one): a
    message whose schema differs in anything, metadata included, is checked afresh."""
    batch = synth.raw_batch(FRAMES)
    assert from_ipc(to_ipc(batch), RAW).num_rows == len(FRAMES)
    meta = dict(batch.schema.metadata)
    meta[b"version"] = b"2"
    with pytest.raises(BatchDecodeError, match="version '2' is not supported"):
        from_ipc(to_ipc(batch.replace_schema_metadata(meta)), RAW)
    assert from_ipc(to_ipc(batch), RAW).num_rows == len(FRAMES)


def test_missing_metadata() -> None:
    message = to_ipc(synth.raw_batch(FRAMES).replace_schema_metadata(None))
    with pytest.raises(BatchDecodeError, match="got schema None"):
        from_ipc(message, RAW)


def test_wrong_column_types() -> None:
    batch = synth.raw_batch(FRAMES)
    columns = list(batch.columns)
    columns[2] = columns[2].cast(pa.int64())  # seq
    schema = raw_schema().set(2, pa.field("seq", pa.int64()))
    with pytest.raises(BatchDecodeError, match="columns differ"):
        from_ipc(to_ipc(pa.RecordBatch.from_arrays(columns, schema=schema)), RAW)


def test_nulls_in_required_columns() -> None:
    batch = synth.raw_batch(FRAMES)
    columns = list(batch.columns)
    columns[5] = pa.array([None, b"x", b"y"], pa.binary())
    with pytest.raises(BatchDecodeError, match="'data' holds nulls"):
        from_ipc(to_ipc(pa.RecordBatch.from_arrays(columns, schema=raw_schema())), RAW)


@pytest.mark.parametrize(
    "message",
    [b"", b"not arrow at all", b"\xff\xff\xff\xff" + b"\x00" * 8, b"\x00" * 64],
    ids=["empty", "text", "continuation-only", "zeros"],
)
def test_garbage(message: bytes) -> None:
    with pytest.raises(BatchDecodeError):
        from_ipc(message, RAW)


def test_every_truncation_of_a_message_is_a_typed_error_or_whole() -> None:
    """Cut anywhere: an error, or an intact stream (empty when cut right after the schema,
    the whole batch when only the end-of-stream marker is missing), never half a batch."""
    original = synth.raw_batch(FRAMES)
    message = to_ipc(original)
    outcomes = set()
    for cut in range(len(message)):
        try:
            batch = from_ipc(message[:cut], RAW)
        except BatchDecodeError:
            outcomes.add("error")
            continue
        if batch.num_rows == 0:
            outcomes.add("empty")
        else:
            assert batch.equals(original)
            assert cut >= len(message) - 8
            outcomes.add("whole")
    assert outcomes == {"error", "empty", "whole"}


def test_unknown_expected_name_and_non_bytes() -> None:
    message = to_ipc(synth.raw_batch(FRAMES))
    with pytest.raises(BatchDecodeError, match="unknown schema name"):
        from_ipc(message, "amlhp.nope")
    with pytest.raises(BatchDecodeError, match="expected bytes"):
        from_ipc("text", RAW)  # type: ignore[arg-type]


def test_encoders_name_the_wire_error_and_share_the_layout_constants() -> None:
    assert encoder_exceptions.BatchDecodeError is BatchDecodeError
    assert issubclass(BatchDecodeError, AmlhpError)
    assert layout.LAYOUT_VERSION == LAYOUT_VERSION
    assert encoded_schema(64).field("header").type == pa.binary(layout.HEADER_LEN)
    masks = encoded_schema(64).metadata[b"mask_fields"]
    assert masks == ",".join(layout.DEFAULT_MASK_FIELDS).encode()


def test_encoded_payload_width_comes_from_the_message() -> None:
    """The encoded schema's P is read from the received batch: any P decodes, but a payload
    column that is not fixed-width binary, or none at all, is refused."""
    for p in (1, 64, 300):
        encoded = encode_batch(synth.raw_batch(FRAMES), EncoderConfig(payload_bytes=p))
        assert from_ipc(to_ipc(encoded), ENCODED).schema.field("payload").type == pa.binary(p)
    encoded = encode_batch(synth.raw_batch(FRAMES), EncoderConfig())
    index = encoded.schema.get_field_index("payload")
    as_binary = encoded.set_column(
        index, pa.field("payload", pa.binary()), encoded.column(index).cast(pa.binary())
    )
    with pytest.raises(BatchDecodeError, match="not fixed_size_binary"):
        from_ipc(to_ipc(as_binary), ENCODED)
    with pytest.raises(BatchDecodeError, match="without a payload column"):
        from_ipc(to_ipc(encoded.drop_columns(["payload"])), ENCODED)
