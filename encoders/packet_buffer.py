"""The captured bytes of a packet batch, read with numpy: one flat buffer, a start and a
length per packet, and the reason codes rules give to rows.

Shared by the fast encoder's rules (:mod:`amlhp.encoders.fast`,
:mod:`amlhp.encoders.fast_ipv6`): every field is read with ``np.take`` at computed offsets
(``mode="clip"`` keeps any index inside the buffer); a value read beyond a packet's own
bytes is never used, because every read is guarded by the length check of its rule.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from amlhp.encoders import reasons as r
from amlhp.encoders.exceptions import SchemaMismatchError

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ByteArray = npt.NDArray[np.uint8]

OK: Final = r.REASON_CODES[r.OK]


def _rows_view(buf: ByteArray, width: int) -> ByteArray:
    """Read-only (len - width + 1, width) view: row i is ``buf[i : i + width]``, no copy.

    Built directly (not with ``sliding_window_view``, whose checks cost more than the copy).
    """
    return np.ndarray((buf.size - width + 1, width), np.uint8, buffer=buf, strides=(1, 1))


class Packets:
    """The captured bytes of a batch as one flat buffer plus per-packet start and length."""

    def __init__(self, column: pa.Array) -> None:
        n = len(column)
        offset_dtype: np.dtype[Any]
        if pa.types.is_large_binary(column.type):
            offset_dtype = np.dtype(np.int64)
        elif pa.types.is_binary(column.type):
            offset_dtype = np.dtype(np.int32)
        else:
            raise SchemaMismatchError(f"raw column 'data' is {column.type}, not binary")
        buffers = column.buffers()
        if n:
            offsets = np.frombuffer(
                buffers[1],
                dtype=offset_dtype,
                count=n + 1,
                offset=column.offset * offset_dtype.itemsize,
            ).astype(np.int64)
        else:
            offsets = np.zeros(1, np.int64)
        data = buffers[2]
        buf = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
        # np.take cannot clip into an empty array; one spare byte is never read as data.
        self.buf: ByteArray = buf if buf.size else np.zeros(1, np.uint8)
        self.starts: IntArray = offsets[:-1]
        self.lens: IntArray = np.diff(offsets)
        if column.null_count:
            self.lens[np.asarray(column.is_null())] = 0

    def u8(self, index: npt.NDArray[np.int64]) -> IntArray:
        """Bytes at absolute buffer positions, as int64 (clipped into the buffer)."""
        return self.buf.take(index, mode="clip").astype(np.int64)

    def be16(self, index: IntArray) -> IntArray:
        return (self.u8(index) << 8) | self.u8(index + 1)

    def windows(self, starts: IntArray, width: int) -> ByteArray:
        """``width`` consecutive buffer bytes from each start: an (N, width) copy.

        Rows are copied whole through a sliding-window view, which is several times faster
        than gathering byte by byte. Bytes past the end of the buffer read as 0; like every
        read here, bytes past a packet's own end are masked by the caller.
        """
        size = self.buf.size
        starts = np.minimum(starts, size)  # starts are never negative
        low = size - width
        if low >= 0 and (len(starts) == 0 or starts.max() <= low):
            return _rows_view(self.buf, width)[starts]
        if low >= 0:  # rows starting in the last ``width`` bytes need padding
            tail = np.flatnonzero(starts > low)
            out = _rows_view(self.buf, width)[np.minimum(starts, low)]
        else:  # the whole buffer is shorter than one row
            low = 0
            tail = np.arange(len(starts))
            out = np.empty((len(starts), width), np.uint8)
        padded = np.zeros(size - low + width, np.uint8)
        padded[: size - low] = self.buf[low:]
        out[tail] = _rows_view(padded, width)[starts[tail] - low]
        return out


def reject(status: npt.NDArray[np.int8], rows: BoolArray, reason: str) -> None:
    """Give ``reason`` to the rows of ``rows`` that have no reason yet (first rule wins)."""
    status[rows & (status == OK)] = r.REASON_CODES[reason]
