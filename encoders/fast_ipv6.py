"""The fast encoder's IPv6 rules: the extension header walk, the aligned network slot and
the address text, over the IPv6 rows of a batch (:mod:`amlhp.encoders.fast` calls them
only when a batch has any, so IPv4-only batches pay nothing).

The rules are those of :func:`amlhp.encoders.reference._ipv6`; the layout is written out in
:mod:`amlhp.encoders.layout`.
"""

from __future__ import annotations

import functools
import socket
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from amlhp.encoders import reasons as r
from amlhp.encoders.layout import (
    IP_SLOT_LEN,
    IPV6_AUTH,
    IPV6_EXT_BYTES_AT,
    IPV6_EXT_FLAGS_AT,
    IPV6_EXTENSIONS,
    IPV6_FLOW_AT,
    IPV6_FRAGMENT,
    IPV6_HEADER,
    MAX_IPV6_EXTENSION_BYTES,
    MAX_IPV6_EXTENSIONS,
    PAD_BYTE,
    mask_columns_v6,
)
from amlhp.encoders.packet_buffer import BoolArray, ByteArray, IntArray, Packets


@functools.cache
def _extension_bits() -> IntArray:
    """Next-header value -> its bit in byte 47 (0: not an extension header walked)."""
    bits = np.zeros(256, np.int64)
    for value, bit in IPV6_EXTENSIONS.items():
        bits[value] = bit
    return bits


class Chain(NamedTuple):
    """The IPv6 extension headers walked, one entry per row of ``rows`` (rule 2)."""

    rows: IntArray  # the batch rows these entries are of
    end: IntArray  # network header length: 40 + extension headers
    upper: IntArray  # the next header after them
    present: IntArray  # byte 47's bits
    has_fragment: BoolArray
    fragment_word: IntArray  # offset << 3 | M, from the fragment header
    fragment_id: IntArray  # the identification's low 16 bits


def ipv6_chain(
    pk: Packets, ip_start: IntArray, avail: IntArray, rows: IntArray,
    status: npt.NDArray[np.int8],
) -> Chain:  # fmt: skip
    """Rule 2 for the IPv6 rows ``rows``: walk the extension headers, one step for all of
    them at a time; rejects set ``status`` (of the whole batch)."""
    m = len(rows)
    start, room = ip_start[rows], avail[rows]
    end = np.full(m, IPV6_HEADER, np.int64)
    upper = pk.u8(start + 6)
    present = np.zeros(m, np.int64)
    has_fragment = np.zeros(m, np.bool_)
    word = np.zeros(m, np.int64)
    ident = np.zeros(m, np.int64)
    bits = _extension_bits()
    active = np.ones(m, np.bool_)
    for count in range(MAX_IPV6_EXTENSIONS + 1):
        ext = active & bits.take(upper, mode="clip").astype(np.bool_)
        if not ext.any():
            break
        if count == MAX_IPV6_EXTENSIONS:
            status[rows[ext]] = r.REASON_CODES[r.LONG_IPV6_EXTENSIONS]
            break
        cut = ext & (room < end + 8)
        status[rows[cut]] = r.REASON_CODES[r.TRUNCATED_IP_HEADER]
        ext &= ~cut
        size = pk.u8(start + end + 1)
        length = np.where(
            upper == IPV6_FRAGMENT,
            8,
            np.where(upper == IPV6_AUTH, (size + 2) * 4, (size + 1) * 8),
        )
        long = ext & (end + length > IPV6_HEADER + MAX_IPV6_EXTENSION_BYTES)
        status[rows[long]] = r.REASON_CODES[r.LONG_IPV6_EXTENSIONS]
        cut = ext & ~long & (room < end + length)
        status[rows[cut]] = r.REASON_CODES[r.TRUNCATED_IP_HEADER]
        ext &= ~long & ~cut
        fragment = ext & (upper == IPV6_FRAGMENT)
        if fragment.any():
            word = np.where(fragment, pk.be16(start + end + 2), word)
            ident = np.where(fragment, pk.be16(start + end + 6), ident)
            has_fragment |= fragment
        present |= np.where(ext, bits.take(upper, mode="clip"), 0)
        upper = np.where(ext, pk.u8(start + end), upper)
        end = np.where(ext, end + length, end)
        active = ext
    return Chain(rows, end, upper, present, has_fragment, word, ident)


#: network-slot column -> the column of (base header + 12 extension bytes) copied into it
_COPIED: Final = {
    8: 7,  # hop limit
    **{12 + i: 8 + i for i in range(32)},  # addresses
    IPV6_FLOW_AT + 1: 2,  # flow label, low 16 bits
    IPV6_FLOW_AT + 2: 3,
    **{IPV6_EXT_BYTES_AT + i: IPV6_HEADER + i for i in range(IP_SLOT_LEN - IPV6_EXT_BYTES_AT)},
}
#: the columns :func:`ipv6_slots` computes, after the copied ones; the first eight are
#: three big-endian 16-bit words after byte 0 and byte 1 (see ``_SOURCE`` below)
_WIDTH: Final = IP_SLOT_LEN - IPV6_EXT_BYTES_AT
_COMPUTED: Final = {
    0: 0,  # 0x60 | header length / 4
    1: 1,  # traffic class
    2: 2, 3: 3,  # total length
    4: 4, 5: 5,  # fragment id, low 16 bits
    6: 6, 7: 7,  # MF | offset
    9: 8,  # upper-layer protocol
    IPV6_FLOW_AT: 9,  # flow label, high nibble
    IPV6_EXT_FLAGS_AT: 10,  # extension-header bits
}  # fmt: skip
_SOURCE: Final = IPV6_HEADER + _WIDTH  # bytes read from the packet per row
_PAD_AT: Final = _SOURCE + 11  # a column of PAD_BYTE
_ZERO_AT: Final = _PAD_AT + 1  # a column of 0


@functools.cache
def _slot_columns(mask_fields: tuple[str, ...]) -> IntArray:
    """Network-slot column -> the column of ``ipv6_slots``' work array it takes: copied,
    computed, padding (the checksum), or zero where a fixed field is masked; masked
    extension bytes are zeroed only where the packet has them, so they stay copied here."""
    columns = np.full(IP_SLOT_LEN, _PAD_AT, np.int64)
    for to, source in _COPIED.items():
        columns[to] = source
    for to, computed in _COMPUTED.items():
        columns[to] = _SOURCE + computed
    for name in mask_fields:
        slot, lo, hi = mask_columns_v6(name)
        if slot == "ip":  # the transport slots are masked with the IPv4 rows
            columns[lo : min(hi, IPV6_EXT_BYTES_AT)] = _ZERO_AT
    return columns


@functools.cache
def _masked_extension_bytes(mask_fields: tuple[str, ...]) -> BoolArray:
    """Which of the extension-byte columns a mask in ``mask_fields`` covers."""
    masked = np.zeros(_WIDTH, np.bool_)
    for name in mask_fields:
        slot, lo, hi = mask_columns_v6(name)
        if slot == "ip" and hi > IPV6_EXT_BYTES_AT:
            masked[max(lo, IPV6_EXT_BYTES_AT) - IPV6_EXT_BYTES_AT : hi - IPV6_EXT_BYTES_AT] = True
    return masked


def ipv6_slots(
    pk: Packets, ip_start: IntArray, chain: Chain, keep: BoolArray, mask_fields: tuple[str, ...]
) -> ByteArray:
    """The aligned network slots (:mod:`amlhp.encoders.layout`) of the chain's rows where
    ``keep`` (one flag per chain entry), masked fields zeroed where the packet has them.

    The packet's bytes and the computed fields go side by side into one work array, and
    one gather (its column map cached per mask) lays out the slot; only the extension
    bytes, which a packet may lack, are settled row by row afterwards."""
    rows, end = chain.rows[keep], chain.end[keep]
    has_fragment, word = chain.has_fragment[keep], chain.fragment_word[keep]
    m = len(rows)
    work = np.empty((m, _ZERO_AT + 1), np.uint8)
    source = work[:, :_SOURCE]
    source[:] = pk.windows(ip_start[rows], _SOURCE)
    first, second = source[:, 0], source[:, 1]
    computed = work[:, _SOURCE:_PAD_AT]
    computed[:, 0] = 0x60 | np.minimum(end, IP_SLOT_LEN) // 4
    computed[:, 1] = (first << 4) | (second >> 4)
    words = computed[:, 2:8].view(">u2")
    length = source[:, 4:6].view(">u2")[:, 0].astype(np.int64)
    words[:, 0] = np.minimum(IPV6_HEADER + length, 0xFFFF)
    words[:, 1] = np.where(has_fragment, chain.fragment_id[keep], 0)
    words[:, 2] = np.where(has_fragment, ((word & 1) << 13) | (word >> 3), 0)
    computed[:, 8] = chain.upper[keep]
    computed[:, 9] = second & 0x0F
    computed[:, 10] = chain.present[keep]
    work[:, _PAD_AT] = PAD_BYTE
    work[:, _ZERO_AT] = 0
    out = work[:, _slot_columns(mask_fields)]
    kept = np.arange(_WIDTH)[None, :] < (end - IPV6_HEADER)[:, None]
    extension = out[:, IPV6_EXT_BYTES_AT:]
    masked = _masked_extension_bytes(mask_fields)
    extension[kept & masked[None, :]] = 0
    extension[~kept] = PAD_BYTE
    return out


#: 16 address bytes -> their text; bounded (cleared when full), reused across batches
_TEXTS: dict[bytes, str] = {}
_MAX_TEXTS: Final = 65_536
#: multiplier of the 64-bit hash that finds a batch's distinct addresses (golden ratio)
_MIX: Final = np.uint64(0x9E3779B97F4A7C15)


def ipv6_addresses(pk: Packets, ip_start: IntArray, rows: IntArray) -> tuple[pa.Array, IntArray]:
    """Source then destination addresses of the IPv6 rows as text (``inet_ntop``, as the
    reference does): the distinct addresses' texts and, per address, its index there.

    A network has few addresses, so only the distinct ones are converted (and remembered
    across batches). They are found by sorting a 64-bit hash of the 16 bytes; a collision
    is caught by comparing every address with its representative's bytes, and then the
    exact (slower) sort of the bytes themselves decides."""
    pairs = pk.windows(ip_start[rows] + 8, 32)
    keys = np.ascontiguousarray(pairs.reshape(len(rows), 2, 16).transpose(1, 0, 2))
    words = keys.view(np.uint64).reshape(-1, 2)
    _, first, inverse = np.unique(
        (words[:, 0] * _MIX) ^ words[:, 1], return_index=True, return_inverse=True
    )
    if not (words[first][inverse] == words).all():  # a hash collision: exact, once
        _, first, inverse = np.unique(keys.reshape(-1, 16), axis=0, return_index=True,
                                      return_inverse=True)  # fmt: skip
    if len(_TEXTS) > _MAX_TEXTS:
        _TEXTS.clear()
    texts = []
    for key in keys.reshape(-1, 16)[first]:
        data = key.tobytes()
        text = _TEXTS.get(data)
        if text is None:
            text = _TEXTS[data] = socket.inet_ntop(socket.AF_INET6, data)
        texts.append(text)
    return pa.array(texts, pa.string()), inverse.reshape(-1)


def ipv6_twin_slots(slots: ByteArray, flow: IntArray, mask_fields: tuple[str, ...]) -> ByteArray:
    """The IPv6 network slots of the twins of IPv4 packets: for each IPv4 slot (20-byte
    header, not a fragment; the caller picks such rows) the slot this encoder gives the
    same packet sent over IPv6 with no extension header: TOS as traffic class, TTL as hop
    limit, the same upper protocol and payload length, the addresses IPv4-mapped
    (``::ffff:a.b.c.d``) and ``flow`` as flow label, then ``mask_fields`` applied.

    Training uses it (:mod:`amlhp.model.augment`) so that a model learns IPv6 packets
    from the IPv4 ones it has; the slot comes from :func:`ipv6_slots` itself, so training
    and serving cannot disagree on the layout."""
    m = len(slots)
    raw = np.zeros((m, IPV6_HEADER), np.uint8)
    tos = slots[:, 1].astype(np.int64)
    raw[:, 0] = 0x60 | (tos >> 4)
    raw[:, 1] = ((tos & 0x0F) << 4) | ((flow >> 16) & 0x0F)
    raw[:, 2] = (flow >> 8) & 0xFF
    raw[:, 3] = flow & 0xFF
    total = (slots[:, 2].astype(np.int64) << 8) | slots[:, 3]
    length = np.maximum(total - 20, 0)
    raw[:, 4], raw[:, 5] = length >> 8, length & 0xFF
    raw[:, 6], raw[:, 7] = slots[:, 9], slots[:, 8]
    for at, source in ((8, 12), (24, 16)):  # ::ffff: + the IPv4 address
        raw[:, at + 10 : at + 12] = 0xFF
        raw[:, at + 12 : at + 16] = slots[:, source : source + 4]
    data = pa.Array.from_buffers(
        pa.binary(), m,
        [None, pa.py_buffer(np.arange(m + 1, dtype=np.int32) * IPV6_HEADER),
         pa.py_buffer(raw.tobytes())],
    )  # fmt: skip
    rows = np.arange(m, dtype=np.int64)
    none = np.zeros(m, np.int64)
    chain = Chain(rows, np.full(m, IPV6_HEADER, np.int64), slots[:, 9].astype(np.int64), none,
                  np.zeros(m, np.bool_), none, none)  # fmt: skip
    pk = Packets(data)
    return ipv6_slots(pk, pk.starts, chain, np.ones(m, np.bool_), mask_fields)
