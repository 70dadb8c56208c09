"""How much of a frame the encoder needs: the snap length rule for a sensor tap.

A tap that keeps only ``needed_prefix(linktype, frame, P)`` bytes of each frame sends less
over Kafka and loses nothing the encoder uses: encoding the prefix gives exactly the same
status, ``h``, ``d`` and 5-tuple as encoding the whole frame (a property test checks this).
The wire length travels separately, so it is not lost either.

For a fixed snap length (a capture filter cannot look at each packet) use
:func:`max_needed_prefix`, the bound over all packets of a link type.
"""

from __future__ import annotations

import struct

import pyarrow as pa

from amlhp.encoders import linktypes as lt
from amlhp.encoders.layout import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV6_AUTH,
    IPV6_EXTENSIONS,
    IPV6_FRAGMENT,
    IPV6_HEADER,
    MAX_IPV6_EXTENSION_BYTES,
    MAX_IPV6_EXTENSIONS,
    TCP_SLOT_LEN,
    UDP_HEADER,
)

_U16 = struct.Struct("!H")


def max_needed_prefix(linktype: int, payload_bytes: int) -> int:
    """A snap length that always suffices: longest link header + the longest network header
    walked (IPv6: 40 + 256 bytes of extension headers) + 60 + P."""
    network = IPV6_HEADER + MAX_IPV6_EXTENSION_BYTES
    return lt.max_link_header(linktype) + network + TCP_SLOT_LEN + payload_bytes


def _ip_offset(linktype: int, data: bytes) -> tuple[int, int] | None:
    """(where the IP header starts, its version: 4, 6, or 0 where the nibble decides);
    ``(-(k + 1), 0)`` when the link layer alone decides the status from the first ``k``
    bytes; ``None`` when the frame ends in the link header."""
    size = len(data)
    if linktype in lt.ETHERTYPE_LINKS:
        type_at, next_at = lt.ETHERTYPE_LINKS[linktype]
        if size < next_at:
            return None
        ethertype = _U16.unpack_from(data, type_at)[0]
        tags = 0
        while ethertype in lt.VLAN_TPIDS:
            if tags == lt.MAX_VLAN_TAGS or size < next_at + lt.VLAN_TAG_LEN:
                return -next_at - 1, 0
            ethertype = _U16.unpack_from(data, next_at + 2)[0]
            next_at += lt.VLAN_TAG_LEN
            tags += 1
        if ethertype in lt.ETHERTYPE_IP_VERSION:
            return next_at, lt.ETHERTYPE_IP_VERSION[ethertype]
        if ethertype == lt.ETHERTYPE_ARP:  # the 28-byte body: addresses, op, sender MAC
            return -min(size, next_at + lt.ARP_BODY) - 1, 0
        return -next_at - 1, 0
    if linktype in lt.LOOPBACK_LINKS:
        if size < lt.LOOPBACK_HEADER:
            return None
        big, little = struct.unpack_from(">I", data)[0], struct.unpack_from("<I", data)[0]
        if lt.AF_INET in (big, little):
            return lt.LOOPBACK_HEADER, 4
        if big in lt.AF_INET6 or little in lt.AF_INET6:
            return lt.LOOPBACK_HEADER, 6
        return -lt.LOOPBACK_HEADER - 1, 0
    if linktype in lt.RAW_LINKS:
        return 0, 0
    if linktype in (lt.IPV4, lt.IPV6):
        return 0, 4 if linktype == lt.IPV4 else 6
    return -1, 0  # unknown: decided without looking at any byte


def _ipv4(data: bytes, start: int) -> tuple[int, int, int, int, bool] | int:
    """(header length, total, protocol, fragment offset, MF) of an IPv4 header, or the
    prefix where the header alone decides a reason."""
    size, avail = len(data), len(data) - start
    if avail < 20:
        return size
    ihl4 = (data[start] & 0x0F) * 4
    if ihl4 < 20:
        return start + 20
    if avail < ihl4:
        return size
    flags = _U16.unpack_from(data, start + 6)[0]
    total = _U16.unpack_from(data, start + 2)[0]
    return ihl4, total, data[start + 9], flags & 0x1FFF, bool(flags & 0x2000)


def _ipv6(data: bytes, start: int) -> tuple[int, int, int, int, bool] | int:
    """:func:`_ipv4` for IPv6: the base header and the extension headers walked."""
    size, avail = len(data), len(data) - start
    if avail < IPV6_HEADER:
        return size
    nxt, pos, word = data[start + 6], IPV6_HEADER, 0
    for count in range(MAX_IPV6_EXTENSIONS + 1):
        if nxt not in IPV6_EXTENSIONS:
            break
        if count == MAX_IPV6_EXTENSIONS:
            return start + pos
        if avail < pos + 8:
            return size
        unit = data[start + pos + 1]
        length = (
            8 if nxt == IPV6_FRAGMENT else (unit + 2) * 4 if nxt == IPV6_AUTH else (unit + 1) * 8
        )
        if pos + length > IPV6_HEADER + MAX_IPV6_EXTENSION_BYTES:
            return start + pos + 8
        if avail < pos + length:
            return size
        if nxt == IPV6_FRAGMENT:
            word = _U16.unpack_from(data, start + pos + 2)[0]
        nxt, pos = data[start + pos], pos + length
    length = _U16.unpack_from(data, start + 4)[0]
    total = IPV6_HEADER + length if length else 0
    return pos, total, nxt, word >> 3, bool(word & 1)


def needed_prefix(linktype: int, data: bytes, payload_bytes: int) -> int:
    """Bytes of ``data`` the encoder needs: link + IP header + transport header + P.

    Never more than ``len(data)``. For packets that get a reason code, the bytes needed to
    reach the same reason (the whole frame where the reason is a truncation).
    """
    size = len(data)
    found = _ip_offset(linktype, data)
    if found is None:
        return size
    start, version = found
    if start < 0:
        return min(size, -start - 1)
    avail = size - start
    if avail < 1:
        return size
    nibble = data[start] >> 4
    version = version or (6 if nibble == 6 else 4)
    if nibble != version:
        return start + 1
    network = _ipv4(data, start) if version == 4 else _ipv6(data, start)
    if isinstance(network, int):
        return min(size, network)
    header_len, total, proto, fragment_offset, more_fragments = network
    ip_end = min(avail, total) if total >= header_len else avail
    segment = ip_end - header_len
    transport = 0
    if fragment_offset == 0 and proto == IPPROTO_TCP:
        if segment < 20:
            if not more_fragments:
                return size
        else:
            offset = data[start + header_len + 12] >> 4
            if offset < 5:
                return start + header_len + 20
            if offset * 4 <= segment:
                transport = offset * 4
            elif not more_fragments:
                return size
    elif fragment_offset == 0 and proto == IPPROTO_UDP:
        if segment >= UDP_HEADER:
            transport = UDP_HEADER
        elif not more_fragments:
            return size
    return min(size, start + header_len + transport + payload_bytes)


def tapped(raw: pa.RecordBatch, payload_bytes: int) -> pa.RecordBatch:
    """A raw batch as a sensor tap with ``payload_bytes`` would have sent it: each frame
    cut to :func:`needed_prefix` (frames already shorter are kept as they are). Offline
    readers of captures use it so that they see what the stream sees."""
    data = raw.column("data").to_pylist()
    links = raw.column("linktype").to_pylist()
    cut = [d[: needed_prefix(lt_, d, payload_bytes)] for d, lt_ in zip(data, links, strict=True)]
    index = raw.schema.get_field_index("data")
    return raw.set_column(index, raw.schema.field(index), pa.array(cut, pa.binary()))
