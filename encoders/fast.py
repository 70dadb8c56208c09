"""Fast batch encoder: raw packet batches to encoded batches with vectorised numpy.

The rules are those of :mod:`amlhp.encoders.reference` (the oracle this module is tested
against, packet by packet); here they are applied to a whole batch at once. The captured
bytes of all packets sit in one Arrow buffer (:mod:`amlhp.encoders.packet_buffer`); each
rule turns into a boolean mask over the rows. IPv6's own rules (extension headers, the
aligned network slot) are in :mod:`amlhp.encoders.fast_ipv6`.

Nothing here raises on packet content; a batch without the raw schema's columns raises
:class:`SchemaMismatchError`.
"""

from __future__ import annotations

import functools
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from amlhp.encoders import linktypes as lt
from amlhp.encoders import reasons as r
from amlhp.encoders.exceptions import SchemaMismatchError
from amlhp.encoders.fast_ipv6 import Chain, ipv6_addresses, ipv6_chain, ipv6_slots
from amlhp.encoders.layout import (
    DEFAULT_CONFIG,
    HEADER_LEN,
    IP_SLOT_LEN,
    IP_SLOT_OFFSET,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV6_HEADER,
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
from amlhp.encoders.packet_buffer import OK, BoolArray, ByteArray, IntArray, Packets, reject
from amlhp.wire import encoded_schema, raw_schema

_OK: Final = OK
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
    pk: Packets, linktype: IntArray, status: npt.NDArray[np.int8]
) -> tuple[IntArray, IntArray]:
    """Rule 1: where the IP header starts and its version per row (4, 6; 0 for raw IP,
    where the version nibble decides); rejects set ``status``."""
    n = len(linktype)
    tables = _tables()
    known = np.minimum(linktype, len(tables.link_kind) - 1)  # the last entry is unknown
    kind = tables.link_kind.take(known)
    type_at = tables.link_type_at.take(known)
    next_at = tables.link_next_at.take(known)
    lens, starts = pk.lens, pk.starts
    status[kind == _K_UNKNOWN] = _CODE[r.UNKNOWN_LINKTYPE]
    version = np.where(kind == _K_IPV6, 6, np.where(kind == _K_IPV4, 4, 0))
    ip_off = np.zeros(n, np.int64)

    eth = kind == _K_ETHERTYPE
    if eth.any():
        status[eth & (lens < next_at)] = _CODE[r.TRUNCATED_LINK]
        ethertype = pk.be16(starts + type_at)
        active = eth & (status == _OK)
        for tags in range(lt.MAX_VLAN_TAGS + 1):
            vlan = active & tables.is_vlan_tpid[ethertype]
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
        open_ = eth & (status == _OK)
        status[open_ & (ethertype == lt.ETHERTYPE_ARP)] = _CODE[r.ARP]
        ip = (ethertype == lt.ETHERTYPE_IPV4) | (ethertype == lt.ETHERTYPE_IPV6)
        status[open_ & (ethertype != lt.ETHERTYPE_ARP) & ~ip] = _CODE[r.NON_IP]
        version = np.where(eth, np.where(ethertype == lt.ETHERTYPE_IPV6, 6, 4), version)
        ip_off = np.where(eth, next_at, ip_off)

    loop = kind == _K_LOOPBACK
    if loop.any():
        status[loop & (lens < lt.LOOPBACK_HEADER)] = _CODE[r.TRUNCATED_LINK]
        b = [pk.u8(starts + i) for i in range(4)]
        big = (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]
        little = (b[3] << 24) | (b[2] << 16) | (b[1] << 8) | b[0]
        inet = (big == lt.AF_INET) | (little == lt.AF_INET)
        families6 = np.array(sorted(lt.AF_INET6), np.int64)
        inet6 = ~inet & (np.isin(big, families6) | np.isin(little, families6))
        status[loop & (status == _OK) & ~inet & ~inet6] = _CODE[r.NON_IP]
        version = np.where(loop, np.where(inet6, 6, 4), version)
        ip_off = np.where(loop, lt.LOOPBACK_HEADER, ip_off)
    return ip_off, version


class _Tables(NamedTuple):
    """Lookup tables, built on first use (not at import) and kept."""

    is_vlan_tpid: BoolArray  # indexed by EtherType
    link_kind: IntArray  # link type -> its family (_K_*); the last entry: all types above
    link_type_at: IntArray  # link type -> its EtherType offset (EtherType links)
    link_next_at: IntArray  # link type -> the offset of what follows the link header
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
    link_kind = np.full(max(lt.SUPPORTED) + 2, _K_UNKNOWN, np.int64)
    link_type_at = np.zeros(len(link_kind), np.int64)
    link_next_at = np.zeros(len(link_kind), np.int64)
    for value, (type_offset, next_offset) in lt.ETHERTYPE_LINKS.items():
        link_kind[value] = _K_ETHERTYPE
        link_type_at[value], link_next_at[value] = type_offset, next_offset
    link_kind[sorted(lt.LOOPBACK_LINKS)] = _K_LOOPBACK
    link_kind[sorted(lt.RAW_LINKS)] = _K_RAW
    link_kind[lt.IPV4], link_kind[lt.IPV6] = _K_IPV4, _K_IPV6
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
        link_kind=link_kind,
        link_type_at=link_type_at,
        link_next_at=link_next_at,
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


class _Network(NamedTuple):
    """Rules 2-3 per row: what the transport rules and the network slot need."""

    header_len: IntArray  # IHL x 4, or 40 + the IPv6 extension headers
    total: IntArray  # total length (IPv6: 40 + payload length)
    proto: IntArray
    first_fragment: BoolArray
    more_fragments: BoolArray


def _network(
    pk: Packets, ip_start: IntArray, avail: IntArray, v6: BoolArray,
    status: npt.NDArray[np.int8],
) -> tuple[_Network, Chain | None]:  # fmt: skip
    """Rule 2 (after the version check) for both versions; the IPv6 chain where any."""
    first = pk.u8(ip_start)
    ihl4 = (first & 0x0F) * 4  # a fresh array: IPv6 rows' values are written into it
    v4 = ~v6
    reject(status, v4 & (avail < 20), r.TRUNCATED_IP_HEADER)
    reject(status, v4 & (ihl4 < 20), r.BAD_IHL)
    reject(status, v4 & (avail < ihl4), r.TRUNCATED_IP_HEADER)
    flags = pk.be16(ip_start + 6)
    net = _Network(
        header_len=ihl4,
        total=pk.be16(ip_start + 2),
        proto=pk.u8(ip_start + 9),
        first_fragment=(flags & 0x1FFF) == 0,
        more_fragments=(flags & 0x2000) != 0,
    )
    rows6 = np.flatnonzero(v6)
    if not len(rows6):
        return net, None
    short = rows6[avail[rows6] < IPV6_HEADER]
    status[short] = _CODE[r.TRUNCATED_IP_HEADER]
    chain = ipv6_chain(pk, ip_start, avail, rows6[status[rows6] == _OK], status)
    rows = chain.rows
    length = pk.be16(ip_start[rows] + 4)
    for array, values in (
        (net.header_len, chain.end),
        (net.total, np.where(length > 0, IPV6_HEADER + length, 0)),
        (net.proto, chain.upper),
        (net.first_fragment, ~chain.has_fragment | (chain.fragment_word >> 3 == 0)),
        (net.more_fragments, chain.has_fragment & ((chain.fragment_word & 1) == 1)),
    ):
        array[rows] = values
    return net, chain


def _mask(header: ByteArray, have: dict[str, BoolArray], fields: tuple[str, ...]) -> None:
    """Zero the masked fields where the rows have them (``have``: per slot, per column);
    the IPv6 network slots are masked as they are built (:func:`ipv6_slots`)."""
    for name in fields:
        slot, first_col, last_col = mask_columns(name)
        if first_col == last_col:
            continue
        slot_offset = SLOTS[slot][0]
        where = have[slot][:, first_col - slot_offset : last_col - slot_offset]
        np.copyto(header[:, first_col:last_col], 0, where=where)


def _arp_rows(
    pk: Packets, start: IntArray, avail: IntArray, arp: BoolArray, status: npt.NDArray[np.int8]
) -> BoolArray:
    """The ARP rows that are Ethernet/IPv4 ARP of 28 bytes (the others get ``bad_arp``)."""
    hardware = pk.be16(start)
    good = (
        (avail >= lt.ARP_BODY)
        & np.isin(hardware, lt.ARP_HARDWARE)
        & (pk.be16(start + 2) == lt.ETHERTYPE_IPV4)
        & (pk.u8(start + 4) == 6)
        & (pk.u8(start + 5) == 4)
    )
    status[arp & ~good] = _CODE[r.BAD_ARP]
    return arp & good


def _arp_columns(pk: Packets, start: IntArray, arp: BoolArray) -> list[pa.Array]:
    """``arp_op`` and ``arp_mac`` (the sender hardware address as ``aa:bb:..``)."""
    n = len(arp)
    if not arp.any():
        return [pa.nulls(n, pa.uint16()), pa.nulls(n, pa.string())]
    rows = np.flatnonzero(arp)
    macs: list[str | None] = [None] * n
    for row, mac in zip(rows.tolist(), pk.windows(start[rows] + 8, 6), strict=True):
        macs[row] = mac.tobytes().hex(":")
    op = pa.array(pk.be16(start + 6).astype(np.uint16), pa.uint16(), mask=~arp)
    return [op, pa.array(macs, pa.string())]


def encode_batch(raw: pa.RecordBatch, config: EncoderConfig = DEFAULT_CONFIG) -> pa.RecordBatch:
    """Encode a raw packet batch (raw schema) into an encoded batch (encoded schema).

    One output row per input row, in the same order; never raises on packet content.
    """
    _check_raw(raw)
    n = raw.num_rows
    pk = Packets(raw.column("data"))
    linktype_column = raw.column("linktype")
    if linktype_column.null_count:
        linktype_column = linktype_column.fill_null(lt.UNKNOWN)
    linktype = linktype_column.to_numpy().astype(np.int64)
    status = np.zeros(n, np.int8)
    ip_off, version = _link_layer(pk, linktype, status)

    lens = pk.lens
    avail = lens - ip_off
    ip_start = pk.starts + ip_off
    arp = status == _CODE[r.ARP]
    if arp.any():  # Rule 1 for ARP: Ethernet/IPv4 ARP of 28 bytes, else bad_arp
        arp = _arp_rows(pk, ip_start, avail, arp, status)

    # Rule 2: the IP header (raw IP: the version nibble says which).
    nibble = pk.u8(ip_start) >> 4
    reject(status, avail < 1, r.TRUNCATED_IP_HEADER)
    version = np.where(version == 0, np.where(nibble == 6, 6, 4), version)
    reject(status, nibble != version, r.BAD_IP_VERSION)
    v6 = (version == 6) & (status == _OK)
    net, chain = _network(pk, ip_start, avail, v6, status)
    ip_parsed = status == _OK
    ihl4 = net.header_len

    # Rule 3: the end of the IP packet.
    total = net.total
    l3_len = np.where(total >= ihl4, np.minimum(avail, total), avail)
    segment = l3_len - ihl4
    first_fragment, more_fragments, proto = net.first_fragment, net.more_fragments, net.proto

    # Rule 4: the transport header.
    t_start = ip_start + ihl4
    tcp = ip_parsed & first_fragment & (proto == IPPROTO_TCP)
    tcp_short = tcp & (segment < 20)
    reject(status, tcp_short & ~more_fragments, r.TRUNCATED_TRANSPORT)
    data_offset = pk.u8(t_start + 12) >> 4
    tcp_read = tcp & ~tcp_short
    reject(status, tcp_read & (data_offset < 5), r.BAD_TCP_OFFSET)
    is_tcp = tcp_read & (data_offset >= 5) & (data_offset * 4 <= segment)
    reject(status, tcp_read & ~is_tcp & ~more_fragments, r.TRUNCATED_TRANSPORT)
    udp = ip_parsed & first_fragment & (proto == IPPROTO_UDP)
    is_udp = udp & (segment >= UDP_HEADER)
    reject(status, udp & ~is_udp & ~more_fragments, r.TRUNCATED_TRANSPORT)
    ok = status == _OK
    is_tcp &= ok
    is_udp &= ok
    tcp_len = np.where(is_tcp, data_offset * 4, 0)
    udp_len = np.where(is_udp, UDP_HEADER, 0)
    ports = is_tcp | is_udp

    # Rule 5: h, slot by slot: the bytes present, PAD_BYTE elsewhere, masked fields zeroed.
    header = np.empty((n, HEADER_LEN), np.uint8)
    have = {
        "ip": _IP_COLS[None, :] < np.where(ok & ~v6, ihl4, 0)[:, None],
        "tcp": _TCP_COLS[None, :] < tcp_len[:, None],
        "udp": _UDP_COLS[None, :] < udp_len[:, None],
    }
    header[:, IP_SLOT_OFFSET:TCP_SLOT_OFFSET] = np.where(
        have["ip"], pk.windows(ip_start, IP_SLOT_LEN), PAD_BYTE
    )
    if chain is not None:
        keep = ok[chain.rows]
        if keep.any():
            slots = ipv6_slots(pk, ip_start, chain, keep, config.mask_fields)
            header[chain.rows[keep], IP_SLOT_OFFSET:TCP_SLOT_OFFSET] = slots
    if ports.any():
        transport = pk.windows(t_start, TCP_SLOT_LEN)
        header[:, TCP_SLOT_OFFSET:UDP_SLOT_OFFSET] = np.where(have["tcp"], transport, PAD_BYTE)
        header[:, UDP_SLOT_OFFSET:] = np.where(have["udp"], transport[:, :UDP_SLOT_LEN], PAD_BYTE)
    else:
        header[:, TCP_SLOT_OFFSET:] = PAD_BYTE
    _mask(header, have, config.mask_fields)

    # Rule 5: d.
    p = config.payload_bytes
    pay_start = t_start + tcp_len + udp_len
    pay_len = np.where(ok, np.minimum(segment - tcp_len - udp_len, p), 0)
    payload = pk.windows(pay_start, p)
    payload[np.arange(p)[None, :] >= pay_len[:, None]] = 0

    validity = None if ok.all() else pa.py_buffer(np.packbits(ok, bitorder="little"))
    columns = [raw.column(name) for name in IDENTITY_COLUMNS]
    # source and destination addresses in one pass: rows 0..n-1 and n..2n-1
    parsed4 = ip_parsed & ~v6
    if arp.any():  # an ARP frame's sender and target protocol addresses
        src_at = np.where(arp, ip_start + lt.ARP_SENDER_IP_AT, ip_start + 12)
        dst_at = np.where(arp, ip_start + lt.ARP_TARGET_IP_AT, ip_start + 16)
        addresses = np.concatenate([pk.windows(src_at, 4), pk.windows(dst_at, 4)])
        parsed4 = parsed4 | arp
    else:
        addresses = pk.windows(ip_start + 12, 8).reshape(n, 2, 4).transpose(1, 0, 2)
        addresses = addresses.reshape(2 * n, 4)
    quads = _dotted_quads(addresses, np.concatenate([parsed4, parsed4]))
    parsed6 = ip_parsed & v6
    if parsed6.any():  # IPv6 texts in place of the nulls (sources first, as in ``quads``)
        texts, index = ipv6_addresses(pk, ip_start, np.flatnonzero(parsed6))
        order = np.arange(2 * n)
        order[np.flatnonzero(np.concatenate([parsed6, parsed6]))] = 2 * n + index
        quads = pa.concat_arrays([quads, texts]).take(pa.array(order))
    src, dst = quads.slice(0, n), quads.slice(n, n)
    columns += [
        src,
        dst,
        pa.array(pk.be16(t_start).astype(np.uint16), mask=~ports),
        pa.array(pk.be16(t_start + 2).astype(np.uint16), mask=~ports),
        pa.array(proto.astype(np.uint8), mask=~ip_parsed),
        pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(HEADER_LEN), n, [validity, pa.py_buffer(header)]
        ),
        pa.FixedSizeBinaryArray.from_buffers(pa.binary(p), n, [validity, pa.py_buffer(payload)]),
        _status_strings(status),
        *_arp_columns(pk, ip_start, arp),
    ]
    schema = _encoded_schema(p, config.mask_fields)
    return pa.RecordBatch.from_arrays(columns, schema=schema)
