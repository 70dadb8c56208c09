"""Batch-level behaviour of the fast encoder (per-packet results are in the golden tests)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from amlhp.encoders import linktypes as lt
from amlhp.encoders.exceptions import SchemaMismatchError
from amlhp.encoders.fast import encode_batch
from amlhp.encoders.layout import EncoderConfig
from amlhp.encoders.reference import encode_packet
from amlhp.wire import ENCODED, check_schema, raw_schema
from tests.support import synth

FRAME = synth.ethernet(synth.ipv4(synth.tcp(b"payload"), 6))


def test_empty_batch() -> None:
    encoded = encode_batch(synth.raw_batch([]))
    assert encoded.num_rows == 0
    check_schema(encoded.schema, ENCODED)


def test_output_schema_records_the_config() -> None:
    config = EncoderConfig(payload_bytes=12, mask_fields=("path",))
    encoded = encode_batch(synth.raw_batch([(lt.ETHERNET, FRAME)]), config)
    check_schema(encoded.schema, ENCODED)
    assert encoded.schema.metadata[b"payload_bytes"] == b"12"
    assert encoded.schema.metadata[b"mask_fields"] == b"ip.checksum,ip.id,ip.ttl"


def test_large_binary_and_null_frames() -> None:
    raw = synth.raw_batch([(lt.ETHERNET, FRAME)] * 3)
    data = pa.array([FRAME, None, FRAME], pa.large_binary())
    schema = raw_schema().set(5, pa.field("data", pa.large_binary()))
    raw = pa.RecordBatch.from_arrays([*raw.columns[:5], data], schema=schema)
    encoded = encode_batch(raw)
    assert encoded.column("status").to_pylist() == ["ok", "truncated_link", "ok"]
    assert encoded.column("header").to_pylist()[2] == encode_packet(lt.ETHERNET, FRAME).header


def test_identity_columns_pass_through() -> None:
    raw = synth.raw_batch([(lt.ETHERNET, FRAME), (lt.RAW, b"\x60")], gateway="gw", start_seq=9)
    encoded = encode_batch(raw)
    for name in ("gateway", "ts_ns", "seq", "wire_len", "linktype"):
        assert encoded.column(name).equals(raw.column(name))


def test_a_batch_without_the_raw_columns_is_a_schema_error() -> None:
    with pytest.raises(SchemaMismatchError, match="lacks column 'ts_ns'"):
        encode_batch(pa.RecordBatch.from_pydict({"gateway": ["x"]}))
    raw = synth.raw_batch([(lt.ETHERNET, FRAME)])
    bad = raw.set_column(2, pa.field("seq", pa.int64()), raw.column(2).cast(pa.int64()))
    with pytest.raises(SchemaMismatchError, match="'seq'"):
        encode_batch(bad)
