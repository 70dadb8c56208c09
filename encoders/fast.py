"""Fast batch encoder: raw packet batches to encoded batches with vectorised numpy.

The rules are those of :mod:`amlhp.encoders.reference` (the oracle this module is tested
against, packet by packet); here they are applied to a whole batch at once. The captured
bytes of all packets sit in one Arrow buffer; every field is read with ``np.take`` at
computed offsets (``mode="clip"`` keeps any index inside the buffer), and each rule turns
into a boolean mask. A value read beyond a packet's own bytes is never used: every read is
guarded by the length check of the rule that needs it, exactly as in the reference.

Nothing here raises on packet content; a batch without the raw schema's columns raises
:class:`SchemaMismatchError`.
"""

from __future__ import annotations

import functools
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from amlhp.encoders import linktypes as lt
from amlhp.encoders import reasons as r
from amlhp.encoders.exceptions import SchemaMismatchError
from amlhp.encoders.layout import (
    DEFAULT_CONFIG,
    HEADER_LEN,
    IP_SLOT_LEN,
    IP_SLOT_OFFSET,
    IPPROTO_TCP,
    IPPROTO_UDP,
    PAD_BYTE,
    SLOTS,
    TCP_SLOT_LEN,
    TCP_SLOT_OFFSET,
    UDP_HEADER,
    UDP_SLOT_LEN,
    UDP_SLOT_OFFSET,
    EncoderConfig,
    mask_columns,
)
from amlhp.wire import encoded_schema, raw_schema

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ByteArray = npt.NDArray[np.uint8]

_OK: Final = r.REASON_CODES[r.OK]
_CODE = r.REASON_CODES

# link-type families, per row
_K_UNKNOWN: Final = 0
_K_ETHERTYPE: Final = 1
_K_LOOPBACK: Final = 2
_K_RAW: Final = 3
_K_IPV4: Final = 4
_K_IPV6: Final = 5

_IP_COLS: Final = np.arange(IP_SLOT_LEN, dtype=np.int64)
_TCP_COLS: Final = np.arange(TCP_SLOT_LEN, dtype=np.int64)
_UDP_COLS: Final = np.arange(UDP_SLOT_LEN, dtype=np.int64)

RAW_COLUMNS: Final = ("gateway", "ts_ns", "seq", "linktype", "wire_len", "data")
IDENTITY_COLUMNS: Final = ("gateway", "ts_ns", "seq", "wire_len", "linktype")


def _rows_view(buf: ByteArray, width: int) -> ByteArray:
    """Read-only (len - width + 1, width) view: row i is ``buf[i : i + width]``, no copy.

    Built directly (not with ``sliding_window_view``, whose checks cost more than the copy).
    """
    return np.ndarray((buf.size - width + 1, width), np.uint8, buffer=buf, strides=(1, 1))


class _Packets:
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


_encoded_schema = functools.lru_cache(maxsize=64)(encoded_schema)
_raw_schema = functools.cache(raw_schema)


def _check_raw(raw: pa.RecordBatch) -> None:
    """The raw columns must be there with the raw schema's types (``data`` may be large)."""
    want = _raw_schema()
    for name in RAW_COLUMNS:
        if name not in raw.schema.names:
            raise SchemaMismatchError(f"raw batch lacks column {name!r}")
        got = raw.schema.field(name).type
        expected = want.field(name).type
        if got != expected and not (name == "data" and pa.types.is_large_binary(got)):
            raise SchemaMismatchError(f"raw column {name!r} is {got}, expected {expected}")


def _link_layer(
    pk: _Packets, linktype: IntArray, status: npt.NDArray[np.int8]
) -> tuple[IntArray, IntArray]:
    """Rule 1: where the IPv4 header starts; rejects set ``status``. Returns (ip_off, kind)."""
    n = len(linktype)
    kind = np.zeros(n, np.int64)
    type_at = np.zeros(n, np.int64)
    next_at = np.zeros(n, np.int64)
    uniform = n > 0 and bool((linktype == linktype[0]).all())
    values = [int(linktype[0])] if uniform else np.unique(linktype).tolist()
    for value in values:
        rows = linktype == value
        if value in lt.ETHERTYPE_LINKS:
            kind[rows] = _K_ETHERTYPE
            type_at[rows], next_at[rows] = lt.ETHERTYPE_LINKS[value]
        elif value in lt.LOOPBACK_LINKS:
            kind[rows] = _K_LOOPBACK
        elif value in lt.RAW_LINKS:
            kind[rows] = _K_RAW
        elif value == lt.IPV4:
            kind[rows] = _K_IPV4
        elif value == lt.IPV6:
            kind[rows] = _K_IPV6
    lens, starts = pk.lens, pk.starts
    status[kind == _K_UNKNOWN] = _CODE[r.UNKNOWN_LINKTYPE]
    status[kind == _K_IPV6] = _CODE[r.NON_IPV4]
    ip_off = np.zeros(n, np.int64)

    eth = kind == _K_ETHERTYPE
    if eth.any():
        status[eth & (lens < next_at)] = _CODE[r.TRUNCATED_LINK]
        ethertype = pk.be16(starts + type_at)
        active = eth & (status == _OK)
        for tags in range(lt.MAX_VLAN_TAGS + 1):
            vlan = active & _tables().is_vlan_tpid[ethertype]
            if not vlan.any():
                break
            if tags == lt.MAX_VLAN_TAGS:
                status[vlan] = _CODE[r.TOO_MANY_VLAN_TAGS]
                break
            short = vlan & (lens < next_at + lt.VLAN_TAG_LEN)
            status[short] = _CODE[r.TRUNCATED_LINK]
            vlan &= ~short
            ethertype = np.where(vlan, pk.be16(starts + next_at + 2), ethertype)
            next_at = np.where(vlan, next_at + lt.VLAN_TAG_LEN, next_at)
            active = vlan
        status[eth & (status == _OK) & (ethertype != lt.ETHERTYPE_IPV4)] = _CODE[r.NON_IPV4]
        ip_off = np.where(eth, next_at, ip_off)

    loop = kind == _K_LOOPBACK
    if loop.any():
        status[loop & (lens < lt.LOOPBACK_HEADER)] = _CODE[r.TRUNCATED_LINK]
        b = [pk.u8(starts + i) for i in range(4)]
        big = (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]
        little = (b[3] << 24) | (b[2] << 16) | (b[1] << 8) | b[0]
        inet = (big == lt.AF_INET) | (little == lt.AF_INET)
        status[loop & (status == _OK) & ~inet] = _CODE[r.NON_IPV4]
        ip_off = np.where(loop, lt.LOOPBACK_HEADER, ip_off)
    return ip_off, kind


def _reject(status: npt.NDArray[np.int8], rows: BoolArray, reason: str) -> None:
    """Give ``reason`` to the rows of ``rows`` that have no reason yet (first rule wins)."""
    status[rows & (status == _OK)] = _CODE[reason]


class _Tables(NamedTuple):
    """Lookup tables, built on first use (not at import) and kept."""

    is_vlan_tpid: BoolArray  # indexed by EtherType
    quad_chars: npt.NDArray[np.uint32]  # octet value -> its digits and a dot, in 4 bytes
    quad_keep: npt.NDArray[np.uint32]  # octet value -> 0x01 per byte to keep (digits + dot)
    quad_keep_last: npt.NDArray[np.uint32]  # the same without the dot, for the last octet
    quad_digits: IntArray  # octet value -> number of digits
    name_chars: ByteArray  # status code -> its name, left-aligned
    name_keep: BoolArray  # status code -> which bytes of the row are the name
    name_lengths: IntArray  # status code -> length of its name


@functools.cache
def _tables() -> _Tables:
    is_vlan_tpid = np.zeros(0x10000, np.bool_)
    is_vlan_tpid[sorted(lt.VLAN_TPIDS)] = True
    chars = np.zeros((256, 4), np.uint8)
    keep = np.zeros((256, 4), np.uint8)
    keep_last = np.zeros((256, 4), np.uint8)
    digits = np.zeros(256, np.int64)
    for value in range(256):
        text = str(value).encode()
        chars[value, : len(text) + 1] = np.frombuffer(text + b".", np.uint8)
        keep[value, : len(text) + 1] = 1
        keep_last[value, : len(text)] = 1
        digits[value] = len(text)
    width = max(len(name) for name in r.REASON_NAMES)
    name_chars = np.zeros((len(r.REASON_NAMES), width), np.uint8)
    name_keep = np.zeros((len(r.REASON_NAMES), width), np.bool_)
    for code, name in enumerate(r.REASON_NAMES):
        name_chars[code, : len(name)] = np.frombuffer(name.encode(), np.uint8)
        name_keep[code, : len(name)] = True
    return _Tables(
        is_vlan_tpid=is_vlan_tpid,
        quad_chars=chars.view(np.uint32).ravel(),
        quad_keep=keep.view(np.uint32).ravel(),
        quad_keep_last=keep_last.view(np.uint32).ravel(),
        quad_digits=digits,
        name_chars=name_chars,
        name_keep=name_keep,
        name_lengths=np.array([len(name) for name in r.REASON_NAMES], np.int64),
    )


def _dotted_quads(octets: ByteArray, valid: BoolArray) -> pa.Array:
    """(N, 4) address bytes to dotted-quad strings, null where not ``valid``.

    Vectorised: each row is laid out as four ``digits.`` groups of 4 bytes with the unused
    positions flagged, then the flagged positions are dropped in one pass (row order is
    kept), which leaves the characters of all strings back to back, as Arrow stores them.
    """
    n = len(octets)
    tables = _tables()
    chars = np.empty((n, 4), np.uint32)
    keep = np.empty((n, 4), np.uint32)
    lengths = np.full(n, 3, np.int64)
    for i in range(4):
        value = octets[:, i]
        chars[:, i] = tables.quad_chars[value]
        keep[:, i] = (tables.quad_keep if i < 3 else tables.quad_keep_last)[value]
        lengths += tables.quad_digits[value]
    validity = None
    if not valid.all():
        keep[~valid] = 0
        lengths[~valid] = 0
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    text = chars.view(np.uint8)[keep.view(np.bool_)]
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text), validity)


def _status_strings(status: npt.NDArray[np.int8]) -> pa.Array:
    """Status codes to their names as an Arrow string array (same trick as the addresses)."""
    tables = _tables()
    offsets = np.zeros(len(status) + 1, np.int32)
    np.cumsum(tables.name_lengths[status], out=offsets[1:])
    if len(status) and not status.any():  # all ok: the common case
        text = np.tile(tables.name_chars[_OK, : tables.name_lengths[_OK]], len(status))
    else:
        text = tables.name_chars[status][tables.name_keep[status]]
    return pa.StringArray.from_buffers(len(status), pa.py_buffer(offsets), pa.py_buffer(text))


def encode_batch(raw: pa.RecordBatch, config: EncoderConfig = DEFAULT_CONFIG) -> pa.RecordBatch:
    """Encode a raw packet batch (raw schema) into an encoded batch (encoded schema).

    One output row per input row, in the same order; never raises on packet content.
    """
    _check_raw(raw)
    n = raw.num_rows
    pk = _Packets(raw.column("data"))
    linktype_column = raw.column("linktype")
    if linktype_column.null_count:
        linktype_column = linktype_column.fill_null(lt.UNKNOWN)
    linktype = linktype_column.to_numpy().astype(np.int64)
    status = np.zeros(n, np.int8)
    ip_off, kind = _link_layer(pk, linktype, status)

    # Rule 2: the IPv4 header.
    lens = pk.lens
    avail = lens - ip_off
    ip_start = pk.starts + ip_off
    first = pk.u8(ip_start)
    version = first >> 4
    ihl4 = (first & 0x0F) * 4
    _reject(status, avail < 1, r.TRUNCATED_IP_HEADER)
    bad_version = version != 4
    _reject(status, bad_version & (kind == _K_RAW) & (version == 6), r.NON_IPV4)
    _reject(status, bad_version, r.BAD_IP_VERSION)
    _reject(status, avail < 20, r.TRUNCATED_IP_HEADER)
    _reject(status, ihl4 < 20, r.BAD_IHL)
    _reject(status, avail < ihl4, r.TRUNCATED_IP_HEADER)
    ip_parsed = status == _OK

    # Rule 3: the end of the IP packet.
    total = pk.be16(ip_start + 2)
    l3_len = np.where(total >= ihl4, np.minimum(avail, total), avail)
    segment = l3_len - ihl4
    flags = pk.be16(ip_start + 6)
    first_fragment = (flags & 0x1FFF) == 0
    more_fragments = (flags & 0x2000) != 0
    proto = pk.u8(ip_start + 9)

    # Rule 4: the transport header.
    t_start = ip_start + ihl4
    tcp = ip_parsed & first_fragment & (proto == IPPROTO_TCP)
    tcp_short = tcp & (segment < 20)
    _reject(status, tcp_short & ~more_fragments, r.TRUNCATED_TRANSPORT)
    data_offset = pk.u8(t_start + 12) >> 4
    tcp_read = tcp & ~tcp_short
    _reject(status, tcp_read & (data_offset < 5), r.BAD_TCP_OFFSET)
    is_tcp = tcp_read & (data_offset >= 5) & (data_offset * 4 <= segment)
    _reject(status, tcp_read & ~is_tcp & ~more_fragments, r.TRUNCATED_TRANSPORT)
    udp = ip_parsed & first_fragment & (proto == IPPROTO_UDP)
    is_udp = udp & (segment >= UDP_HEADER)
    _reject(status, udp & ~is_udp & ~more_fragments, r.TRUNCATED_TRANSPORT)
    ok = status == _OK
    is_tcp &= ok
    is_udp &= ok
    tcp_len = np.where(is_tcp, data_offset * 4, 0)
    udp_len = np.where(is_udp, UDP_HEADER, 0)
    ports = is_tcp | is_udp

    # Rule 5: h, slot by slot: the bytes present, PAD_BYTE elsewhere, masked fields zeroed.
    header = np.empty((n, HEADER_LEN), np.uint8)
    have = {
        "ip": _IP_COLS[None, :] < np.where(ok, ihl4, 0)[:, None],
        "tcp": _TCP_COLS[None, :] < tcp_len[:, None],
        "udp": _UDP_COLS[None, :] < udp_len[:, None],
    }
    header[:, IP_SLOT_OFFSET:TCP_SLOT_OFFSET] = np.where(
        have["ip"], pk.windows(ip_start, IP_SLOT_LEN), PAD_BYTE
    )
    if ports.any():
        transport = pk.windows(t_start, TCP_SLOT_LEN)
        header[:, TCP_SLOT_OFFSET:UDP_SLOT_OFFSET] = np.where(have["tcp"], transport, PAD_BYTE)
        header[:, UDP_SLOT_OFFSET:] = np.where(have["udp"], transport[:, :UDP_SLOT_LEN], PAD_BYTE)
    else:
        header[:, TCP_SLOT_OFFSET:] = PAD_BYTE
    for name in config.mask_fields:
        slot, first_col, last_col = mask_columns(name)
        slot_offset = SLOTS[slot][0]
        where = have[slot][:, first_col - slot_offset : last_col - slot_offset]
        np.copyto(header[:, first_col:last_col], 0, where=where)

    # Rule 5: d.
    p = config.payload_bytes
    pay_start = t_start + tcp_len + udp_len
    pay_len = np.where(ok, np.minimum(segment - tcp_len - udp_len, p), 0)
    payload = pk.windows(pay_start, p)
    payload[np.arange(p)[None, :] >= pay_len[:, None]] = 0

    validity = None if ok.all() else pa.py_buffer(np.packbits(ok, bitorder="little"))
    columns = [raw.column(name) for name in IDENTITY_COLUMNS]
    # source and destination addresses in one pass: rows 0..n-1 and n..2n-1
    addresses = pk.windows(ip_start + 12, 8).reshape(n, 2, 4).transpose(1, 0, 2).reshape(2 * n, 4)
    quads = _dotted_quads(addresses, np.concatenate([ip_parsed, ip_parsed]))
    columns += [
        quads.slice(0, n),
        quads.slice(n, n),
        pa.array(pk.be16(t_start).astype(np.uint16), mask=~ports),
        pa.array(pk.be16(t_start + 2).astype(np.uint16), mask=~ports),
        pa.array(proto.astype(np.uint8), mask=~ip_parsed),
        pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(HEADER_LEN), n, [validity, pa.py_buffer(header)]
        ),
        pa.FixedSizeBinaryArray.from_buffers(pa.binary(p), n, [validity, pa.py_buffer(payload)]),
        _status_strings(status),
    ]
    schema = _encoded_schema(p, config.mask_fields)
    return pa.RecordBatch.from_arrays(columns, schema=schema)
