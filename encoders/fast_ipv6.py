"""The fast encoder's IPv6 rules: the extension header walk, the aligned network slot and
the address text, over the IPv6 rows of a batch (:mod:`amlhp.encoders.fast` calls them
only when a batch has any, so IPv4-only batches pay nothing).

The rules are those of :func:`amlhp.encoders.reference._ipv6`; the layout is written out in
:mod:`amlhp.encoders.layout`.
"""

from __future__ import annotations

import functools
import socket
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from amlhp.encoders import reasons as r
from amlhp.encoders.layout import (
    IP_SLOT_LEN,
    IPV6_AUTH,
    IPV6_CHECKSUM,
    IPV6_EXT_BYTES_AT,
    IPV6_EXT_FLAGS_AT,
    IPV6_EXTENSIONS,
    IPV6_FLOW_AT,
    IPV6_FRAGMENT,
    IPV6_HEADER,
    MAX_IPV6_EXTENSION_BYTES,
    MAX_IPV6_EXTENSIONS,
    PAD_BYTE,
)
from amlhp.encoders.packet_buffer import OK, BoolArray, ByteArray, IntArray, Packets, reject

_IP_COLS = np.arange(IP_SLOT_LEN, dtype=np.int64)


@functools.cache
def _extension_bits() -> IntArray:
    """Next-header value -> its bit in byte 47 (0: not an extension header walked)."""
    bits = np.zeros(256, np.int64)
    for value, bit in IPV6_EXTENSIONS.items():
        bits[value] = bit
    return bits


class Chain(NamedTuple):
    """The IPv6 extension headers walked per row (rule 2)."""

    end: IntArray  # network header length: 40 + extension headers
    upper: IntArray  # the next header after them
    present: IntArray  # byte 47's bits
    has_fragment: BoolArray
    fragment_word: IntArray  # offset << 3 | M, from the fragment header
    fragment_id: IntArray  # the identification's low 16 bits


def ipv6_chain(
    pk: Packets, ip_start: IntArray, avail: IntArray, rows: BoolArray,
    status: npt.NDArray[np.int8],
) -> Chain:  # fmt: skip
    """Rule 2 for IPv6 rows: walk the extension headers, one step for all rows at a time."""
    n = len(rows)
    end = np.full(n, IPV6_HEADER, np.int64)
    upper = pk.u8(ip_start + 6)
    present = np.zeros(n, np.int64)
    has_fragment = np.zeros(n, np.bool_)
    word = np.zeros(n, np.int64)
    ident = np.zeros(n, np.int64)
    bits = _extension_bits()
    active = rows.copy()
    for count in range(MAX_IPV6_EXTENSIONS + 1):
        ext = active & bits.take(upper, mode="clip").astype(np.bool_)
        if not ext.any():
            break
        if count == MAX_IPV6_EXTENSIONS:
            reject(status, ext, r.LONG_IPV6_EXTENSIONS)
            break
        reject(status, ext & (avail < end + 8), r.TRUNCATED_IP_HEADER)
        ext &= status == OK
        size = pk.u8(ip_start + end + 1)
        length = np.where(
            upper == IPV6_FRAGMENT,
            8,
            np.where(upper == IPV6_AUTH, (size + 2) * 4, (size + 1) * 8),
        )
        reject(status, ext & (end + length > IPV6_HEADER + MAX_IPV6_EXTENSION_BYTES),
                r.LONG_IPV6_EXTENSIONS)  # fmt: skip
        reject(status, ext & (avail < end + length), r.TRUNCATED_IP_HEADER)
        ext &= status == OK
        fragment = ext & (upper == IPV6_FRAGMENT)
        if fragment.any():
            word = np.where(fragment, pk.be16(ip_start + end + 2), word)
            ident = np.where(fragment, pk.be16(ip_start + end + 6), ident)
            has_fragment |= fragment
        present |= np.where(ext, bits.take(upper, mode="clip"), 0)
        upper = np.where(ext, pk.u8(ip_start + end), upper)
        end = np.where(ext, end + length, end)
        active = ext
    return Chain(end, upper, present, has_fragment, word, ident)


def ipv6_slots(pk: Packets, ip_start: IntArray, chain: Chain, rows: IntArray) -> ByteArray:
    """The aligned network slot (:mod:`amlhp.encoders.layout`) of the IPv6 rows ``rows``."""
    base = pk.windows(ip_start[rows], IPV6_HEADER).astype(np.int64)
    end = chain.end[rows]
    out = np.full((len(rows), IP_SLOT_LEN), PAD_BYTE, np.int64)
    out[:, 0] = 0x60 | np.minimum(end, IP_SLOT_LEN) // 4
    out[:, 1] = ((base[:, 0] & 0x0F) << 4) | (base[:, 1] >> 4)
    total = np.minimum(IPV6_HEADER + ((base[:, 4] << 8) | base[:, 5]), 0xFFFF)
    ident = np.where(chain.has_fragment[rows], chain.fragment_id[rows], 0)
    word = chain.fragment_word[rows]
    frag = np.where(chain.has_fragment[rows], ((word & 1) << 13) | (word >> 3), 0)
    for at, value in ((2, total), (4, ident), (6, frag)):
        out[:, at], out[:, at + 1] = value >> 8, value & 0xFF
    out[:, 8] = base[:, 7]
    out[:, 9] = chain.upper[rows]
    out[:, 12:44] = base[:, 8:40]
    out[:, IPV6_FLOW_AT] = base[:, 1] & 0x0F
    out[:, IPV6_FLOW_AT + 1 : IPV6_FLOW_AT + 3] = base[:, 2:4]
    out[:, IPV6_EXT_FLAGS_AT] = chain.present[rows]
    width = IP_SLOT_LEN - IPV6_EXT_BYTES_AT
    extensions = pk.windows(ip_start[rows] + IPV6_HEADER, width)
    kept = np.arange(width)[None, :] < (end - IPV6_HEADER)[:, None]
    out[:, IPV6_EXT_BYTES_AT:] = np.where(kept, extensions, PAD_BYTE)
    return out.astype(np.uint8)


def ipv6_present(chain: Chain, rows: BoolArray) -> BoolArray:
    """Which network-slot columns an IPv6 row has (for masking): the layout's filled bytes
    up to its extension bytes, without the checksum columns."""
    filled = IPV6_EXT_BYTES_AT + np.minimum(
        chain.end - IPV6_HEADER, IP_SLOT_LEN - IPV6_EXT_BYTES_AT
    )
    have = _IP_COLS[None, :] < np.where(rows, filled, 0)[:, None]
    have[:, IPV6_CHECKSUM[0] : IPV6_CHECKSUM[1]] = False
    return have


def ipv6_addresses(pk: Packets, ip_start: IntArray, rows: IntArray) -> list[str]:
    """Source then destination addresses of the IPv6 rows as text (``inet_ntop``, as the
    reference does), each distinct address converted once."""
    raw = pk.windows(ip_start[rows] + 8, 32).reshape(len(rows), 2, 16).transpose(1, 0, 2)
    flat = np.ascontiguousarray(raw.reshape(2 * len(rows), 16)).view(np.dtype((np.void, 16)))
    distinct, inverse = np.unique(flat.ravel(), return_inverse=True)
    texts = [socket.inet_ntop(socket.AF_INET6, bytes(value)) for value in distinct]
    return [texts[i] for i in inverse.ravel().tolist()]
