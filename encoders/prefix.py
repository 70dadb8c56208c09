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
    IP_SLOT_LEN,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TCP_SLOT_LEN,
    UDP_HEADER,
)

_U16 = struct.Struct("!H")


def max_needed_prefix(linktype: int, payload_bytes: int) -> int:
    """A snap length that always suffices: longest link header + 60 + 60 + P."""
    return lt.max_link_header(linktype) + IP_SLOT_LEN + TCP_SLOT_LEN + payload_bytes


def _ip_offset(linktype: int, data: bytes) -> int | None:
    """Where the IPv4 header starts (>= 0); ``-(k + 1)`` when the link layer alone decides
    the status from the first ``k`` bytes; ``None`` when the frame ends in the link header.
    """
    size = len(data)
    if linktype in lt.ETHERTYPE_LINKS:
        type_at, next_at = lt.ETHERTYPE_LINKS[linktype]
        if size < next_at:
            return None
        ethertype = _U16.unpack_from(data, type_at)[0]
        tags = 0
        while ethertype in lt.VLAN_TPIDS:
            if tags == lt.MAX_VLAN_TAGS or size < next_at + lt.VLAN_TAG_LEN:
                return -next_at - 1
            ethertype = _U16.unpack_from(data, next_at + 2)[0]
            next_at += lt.VLAN_TAG_LEN
            tags += 1
        return next_at if ethertype == lt.ETHERTYPE_IPV4 else -next_at - 1
    if linktype in lt.LOOPBACK_LINKS:
        if size < lt.LOOPBACK_HEADER:
            return None
        big, little = struct.unpack_from(">I", data)[0], struct.unpack_from("<I", data)[0]
        if lt.AF_INET in (big, little):
            return lt.LOOPBACK_HEADER
        return -lt.LOOPBACK_HEADER - 1
    if linktype in lt.RAW_LINKS or linktype == lt.IPV4:
        return 0
    return -1  # IPv6 or unknown: decided without looking at any byte


def needed_prefix(linktype: int, data: bytes, payload_bytes: int) -> int:
    """Bytes of ``data`` the encoder needs: link + IP header + transport header + P.

    Never more than ``len(data)``. For packets that get a reason code, the bytes needed to
    reach the same reason (the whole frame where the reason is a truncation).
    """
    size = len(data)
    start = _ip_offset(linktype, data)
    if start is None:
        return size
    if start < 0:
        return min(size, -start - 1)
    avail = size - start
    if avail < 1:
        return size
    first = data[start]
    if first >> 4 != 4:
        return start + 1
    if avail < 20:
        return size
    ihl4 = (first & 0x0F) * 4
    if ihl4 < 20:
        return start + 20
    if avail < ihl4:
        return size
    total = _U16.unpack_from(data, start + 2)[0]
    ip_end = min(avail, total) if total >= ihl4 else avail
    segment = ip_end - ihl4
    flags = _U16.unpack_from(data, start + 6)[0]
    proto = data[start + 9]
    more_fragments = bool(flags & 0x2000)
    transport = 0
    if flags & 0x1FFF == 0 and proto == IPPROTO_TCP:
        if segment < 20:
            if not more_fragments:
                return size
        else:
            offset = data[start + ihl4 + 12] >> 4
            if offset < 5:
                return start + ihl4 + 20
            if offset * 4 <= segment:
                transport = offset * 4
            elif not more_fragments:
                return size
    elif flags & 0x1FFF == 0 and proto == IPPROTO_UDP:
        if segment >= UDP_HEADER:
            transport = UDP_HEADER
        elif not more_fragments:
            return size
    return min(size, start + ihl4 + transport + payload_bytes)


def tapped(raw: pa.RecordBatch, payload_bytes: int) -> pa.RecordBatch:
    """A raw batch as a sensor tap with ``payload_bytes`` would have sent it: each frame
    cut to :func:`needed_prefix` (frames already shorter are kept as they are). Offline
    readers of captures use it so that they see what the stream sees."""
    data = raw.column("data").to_pylist()
    links = raw.column("linktype").to_pylist()
    cut = [d[: needed_prefix(lt_, d, payload_bytes)] for d, lt_ in zip(data, links, strict=True)]
    index = raw.schema.get_field_index("data")
    return raw.set_column(index, raw.schema.field(index), pa.array(cut, pa.binary()))
