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
_TO: Final = np.array(sorted(_COPIED), np.int64)
_FROM: Final = np.array([_COPIED[c] for c in sorted(_COPIED)], np.int64)


def ipv6_slots(
    pk: Packets, ip_start: IntArray, chain: Chain, keep: BoolArray, mask_fields: tuple[str, ...]
) -> ByteArray:
    """The aligned network slots (:mod:`amlhp.encoders.layout`) of the chain's rows where
    ``keep`` (one flag per chain entry), masked fields zeroed where the packet has them.

    The bytes copied as they are (hop limit, addresses, flow label, extension bytes) move
    in one gather; the fields computed or moved within a byte are written one by one."""
    rows, end = chain.rows[keep], chain.end[keep]
    has_fragment, word = chain.has_fragment[keep], chain.fragment_word[keep]
    width = IP_SLOT_LEN - IPV6_EXT_BYTES_AT
    source = pk.windows(ip_start[rows], IPV6_HEADER + width)
    out = np.full((len(rows), IP_SLOT_LEN), PAD_BYTE, np.uint8)
    out[:, _TO] = source[:, _FROM]
    first, second = source[:, 0].astype(np.int64), source[:, 1].astype(np.int64)
    total = np.minimum(IPV6_HEADER + ((source[:, 4].astype(np.int64) << 8) | source[:, 5]), 0xFFFF)
    ident = np.where(has_fragment, chain.fragment_id[keep], 0)
    frag = np.where(has_fragment, ((word & 1) << 13) | (word >> 3), 0)
    fields = np.stack(
        [
            0x60 | np.minimum(end, IP_SLOT_LEN) // 4,
            ((first & 0x0F) << 4) | (second >> 4),
            total >> 8, total & 0xFF, ident >> 8, ident & 0xFF, frag >> 8, frag & 0xFF,
        ],
        axis=1,
    )  # fmt: skip
    out[:, :8] = fields
    out[:, 9] = chain.upper[keep]
    out[:, IPV6_FLOW_AT] = second & 0x0F
    out[:, IPV6_EXT_FLAGS_AT] = chain.present[keep]
    kept = np.arange(width)[None, :] < (end - IPV6_HEADER)[:, None]
    out[:, IPV6_EXT_BYTES_AT:][~kept] = PAD_BYTE
    for name in mask_fields:
        slot, lo, hi = mask_columns_v6(name)
        if slot != "ip" or lo == hi:
            continue  # the transport slots are masked with the IPv4 rows
        have = np.ones((len(rows), hi - lo), np.bool_)  # fixed fields: always there
        if hi > IPV6_EXT_BYTES_AT:  # extension bytes: those the packet has
            at = max(lo, IPV6_EXT_BYTES_AT)
            have[:, at - lo :] = kept[:, at - IPV6_EXT_BYTES_AT : hi - IPV6_EXT_BYTES_AT]
        out[:, lo:hi][have] = 0
    return out


#: 16 address bytes -> their text; bounded (cleared when full), reused across batches
_TEXTS: dict[bytes, str] = {}
_MAX_TEXTS: Final = 65_536


def ipv6_addresses(pk: Packets, ip_start: IntArray, rows: IntArray) -> list[str]:
    """Source then destination addresses of the IPv6 rows as text (``inet_ntop``, as the
    reference does); a network's few addresses are converted once and remembered."""
    pairs = pk.windows(ip_start[rows] + 8, 32)
    data = np.ascontiguousarray(pairs.reshape(len(rows), 2, 16).transpose(1, 0, 2)).tobytes()
    if len(_TEXTS) > _MAX_TEXTS:
        _TEXTS.clear()
    texts = _TEXTS
    out = []
    for i in range(0, len(data), 16):
        key = data[i : i + 16]
        text = texts.get(key)
        if text is None:
            text = texts[key] = socket.inet_ntop(socket.AF_INET6, key)
        out.append(text)
    return out
