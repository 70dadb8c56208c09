"""model_inputs: the arrays the model gets, from batches, tables and Parquet files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from amlhp.encoders import linktypes as lt
from amlhp.encoders.arrays import model_inputs
from amlhp.encoders.exceptions import SchemaMismatchError
from amlhp.encoders.fast import encode_batch
from amlhp.encoders.layout import EncoderConfig
from amlhp.encoders.reference import encode_packet
from tests.support import synth

FRAMES = [
    (lt.ETHERNET, synth.ethernet(synth.ipv4(synth.tcp(b"first"), 6))),
    (lt.ETHERNET, synth.ethernet(bytes(28), synth.ETHERTYPE_ARP)),
    (lt.ETHERNET, synth.ethernet(synth.ipv4(synth.udp(b"third" * 20), 17))),
]


def test_batch_to_arrays() -> None:
    config = EncoderConfig(payload_bytes=32)
    encoded = encode_batch(synth.raw_batch(FRAMES), config)
    header, payload, ok = model_inputs(encoded)
    assert header.shape == (3, 128)
    assert header.dtype == np.uint8
    assert payload.shape == (3, 32)
    assert payload.dtype == np.uint8
    assert ok.tolist() == [True, False, True]
    for i in (0, 2):
        ref = encode_packet(*FRAMES[i], config)
        assert header[i].tobytes() == ref.header
        assert payload[i].tobytes() == ref.payload
    assert not header.flags.writeable  # a view of Arrow memory
    buffer = encoded.column("header").buffers()[1]
    assert header.ctypes.data == buffer.address  # zero-copy


def test_sliced_batch_and_chunked_table() -> None:
    encoded = encode_batch(synth.raw_batch(FRAMES))
    header, _, ok = model_inputs(encoded.slice(2))
    assert header.shape == (1, 128)
    assert ok.tolist() == [True]
    assert header[0].tobytes() == encoded.column("header")[2].as_py()
    table = pa.Table.from_batches([encoded, encoded.slice(1)])
    header, payload, ok = model_inputs(table)
    assert ok.tolist() == [True, False, True, False, True]
    assert header[4].tobytes() == header[2].tobytes() == encoded.column("header")[2].as_py()
    assert payload.shape == (5, 64)


def test_parquet_round_trip(tmp_path: Path) -> None:
    encoded = encode_batch(synth.raw_batch(FRAMES))
    pq.write_table(pa.Table.from_batches([encoded]), tmp_path / "e.parquet")
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.schema.field("header").type == pa.binary(128)
    header, payload, ok = model_inputs(table)
    want_header, want_payload, want_ok = model_inputs(encoded)
    assert (ok == want_ok).all()
    assert (header[ok] == want_header[ok]).all()
    assert (payload[ok] == want_payload[ok]).all()


def test_wrong_columns() -> None:
    with pytest.raises(SchemaMismatchError, match="'header'"):
        model_inputs(synth.raw_batch(FRAMES))
