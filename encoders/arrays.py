"""Model inputs from encoded records: (N, 128) and (N, P) ``uint8`` arrays and the ok mask.

Training (from a Parquet file or a table) and serving (from a Kafka batch) go through this
one function, so both feed the model identically.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from amlhp.encoders.exceptions import SchemaMismatchError
from amlhp.encoders.layout import HEADER_LEN
from amlhp.encoders.reasons import OK


def _fixed_width_matrix(column: pa.Array | pa.ChunkedArray, width: int) -> npt.NDArray[np.uint8]:
    """A fixed_size_binary(width) column as an (N, width) uint8 array, zero-copy if one chunk.

    Null rows hold whatever bytes the buffer has there (0 when written by Parquet, 0xff/0
    when written by the fast encoder); callers use the ok mask.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if not pa.types.is_fixed_size_binary(column.type) or column.type.byte_width != width:
        raise SchemaMismatchError(f"expected fixed_size_binary({width}), got {column.type}")
    n = len(column)
    data = column.buffers()[1]
    if n == 0 or data is None:
        return np.zeros((n, width), np.uint8)
    flat = np.frombuffer(data, np.uint8, count=n * width, offset=column.offset * width)
    flat.flags.writeable = False  # a view of Arrow memory that others may share
    return flat.reshape(n, width)


def model_inputs(
    batch: pa.RecordBatch | pa.Table,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
    """(header (N, 128), payload (N, P), ok (N,)) of an encoded batch or table.

    The arrays are read-only views of the Arrow buffers where the column is one chunk
    (always for a batch); copy them before writing. Rows where ``ok`` is False have no
    vector: their bytes are meaningless and must not reach the model.
    """
    for name in ("header", "payload", "status"):
        if name not in batch.schema.names:
            raise SchemaMismatchError(f"encoded records lack the {name!r} column")
    payload_type = batch.schema.field("payload").type
    if not pa.types.is_fixed_size_binary(payload_type):
        raise SchemaMismatchError(f"payload column is {payload_type}, not fixed_size_binary")
    header = _fixed_width_matrix(batch.column("header"), HEADER_LEN)
    payload = _fixed_width_matrix(batch.column("payload"), payload_type.byte_width)
    ok = pc.fill_null(pc.equal(batch.column("status"), OK), False)
    mask = np.asarray(ok.to_numpy(zero_copy_only=False), dtype=np.bool_)
    return header, payload, mask
