"""Reference encoder: one packet at a time, written to be obviously right.

This is the test oracle for :mod:`amlhp.encoders.fast` and the single written statement of
the encoding rules. Header fields are read through dpkt's named header fields (``ip.hl``,
``ip.len``, ``tcp.off``, ...), decoding only the fixed header of each layer: dpkt's own
inner-layer guessing (which silently leaves what it cannot parse as raw bytes, strips Cisco
ISL tags, decodes LLC, ...) is never used, so every decision below is visible here.

The rules, in the order they are applied (the first that fails gives the reason):

1. Link layer. Ethernet (1), Linux SLL (113) and SLL2 (276) carry an EtherType; up to
   ``MAX_VLAN_TAGS`` 802.1Q/802.1ad/QinQ tags are skipped. NULL (0) and LOOP (108) carry a
   4-byte address family, accepted as AF_INET (2) in either byte order. Raw IP (12, 14, 101)
   starts with the IP header; IPv4 (228) always, IPv6 (229) never. Anything else:
   ``unknown_linktype``. A frame ending inside its link header or a tag: ``truncated_link``;
   a fifth stacked tag: ``too_many_vlan_tags``; another EtherType or family: ``non_ipv4``.
2. IPv4 header. No byte left: ``truncated_ip_header``. Version nibble not 4:
   ``bad_ip_version`` (``non_ipv4`` for version 6 on raw links). Fewer than 20 bytes:
   ``truncated_ip_header``. IHL < 5: ``bad_ihl``. Fewer than IHL x 4 bytes:
   ``truncated_ip_header``.
3. The IP packet ends at ``min(captured, total length)``; when the total length is smaller
   than the header itself (0 under TCP segmentation offload) the captured bytes are used.
4. Transport, only for fragment offset 0 and protocol TCP (6) or UDP (17): the TCP header
   needs 20 bytes, a data offset >= 5 (else ``bad_tcp_offset``) and offset x 4 bytes; the
   UDP header 8 bytes. A header that does not fit in the IP packet is ``truncated_transport``,
   except in a first fragment (MF set), which is then encoded like any other fragment.
   Fragments with offset > 0 and other protocols have no transport header.
5. ``h``: IP header bytes in slot 0..59, TCP header in 60..119 or UDP header in 120..127,
   0xff everywhere else; masked fields zeroed where present. ``d``: the bytes after the
   transport header up to the end of the IP packet (step 3), first P, zero-padded.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

import dpkt

from amlhp.encoders import linktypes as lt
from amlhp.encoders import reasons as r
from amlhp.encoders.layout import (
    DEFAULT_CONFIG,
    HEADER_LEN,
    IPPROTO_TCP,
    IPPROTO_UDP,
    PAD_BYTE,
    SLOTS,
    TCP_MIN_HEADER,
    UDP_HEADER,
    EncoderConfig,
    mask_columns,
)


@dataclass(frozen=True)
class EncodedPacket:
    """One packet's encoding: ``header``/``payload`` are set exactly when status is ok."""

    status: str
    header: bytes | None = None
    payload: bytes | None = None
    src_ip: str | None = None
    dst_ip: str | None = None
    src_port: int | None = None
    dst_port: int | None = None
    proto: int | None = None


class _Reject(Exception):
    """Internal: the packet gets this reason and no vector."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _header(cls: Any, buf: bytes) -> Any:
    """Decode only the fixed header of dpkt class ``cls`` from ``buf`` (length checked by the
    caller): named fields without dpkt's inner-layer guessing."""
    pkt = cls.__new__(cls)
    dpkt.Packet.unpack(pkt, buf)
    return pkt


class _VlanTag(dpkt.Packet):
    """802.1Q tag control information followed by the inner EtherType."""

    __hdr__ = (("tci", "H", 0), ("type", "H", 0))


class _Family(dpkt.Packet):
    """BSD loopback header: the address family, read as a big-endian number."""

    __hdr__ = (("family", "I", 0),)


def _ip_offset(linktype: int, frame: bytes) -> int:
    """Step 1: where the IPv4 header starts in the frame."""
    if linktype in lt.ETHERTYPE_LINKS:
        type_at, next_at = lt.ETHERTYPE_LINKS[linktype]
        if len(frame) < next_at:
            raise _Reject(r.TRUNCATED_LINK)
        if linktype == lt.ETHERNET:
            ethertype = _header(dpkt.ethernet.Ethernet, frame).type
        elif linktype == lt.LINUX_SLL:
            ethertype = _header(dpkt.sll.SLL, frame).ethtype
        else:
            ethertype = _header(dpkt.sll2.SLL2, frame).ethtype
        assert frame[type_at : type_at + 2] == struct.pack("!H", ethertype)
        tags = 0
        while ethertype in lt.VLAN_TPIDS:
            if tags == lt.MAX_VLAN_TAGS:
                raise _Reject(r.TOO_MANY_VLAN_TAGS)
            if len(frame) < next_at + lt.VLAN_TAG_LEN:
                raise _Reject(r.TRUNCATED_LINK)
            ethertype = _header(_VlanTag, frame[next_at:]).type
            next_at += lt.VLAN_TAG_LEN
            tags += 1
        if ethertype != lt.ETHERTYPE_IPV4:
            raise _Reject(r.NON_IPV4)
        return next_at
    if linktype in lt.LOOPBACK_LINKS:
        if len(frame) < lt.LOOPBACK_HEADER:
            raise _Reject(r.TRUNCATED_LINK)
        family = _header(_Family, frame).family
        swapped = struct.unpack("<I", struct.pack(">I", family))[0]
        if lt.AF_INET not in (family, swapped):
            raise _Reject(r.NON_IPV4)
        return lt.LOOPBACK_HEADER
    if linktype in lt.RAW_LINKS or linktype == lt.IPV4:
        return 0
    if linktype == lt.IPV6:
        raise _Reject(r.NON_IPV4)
    raise _Reject(r.UNKNOWN_LINKTYPE)


def encode_packet(
    linktype: int, data: bytes, config: EncoderConfig = DEFAULT_CONFIG
) -> EncodedPacket:
    """Encode one captured frame; never raises on packet content."""
    try:
        start = _ip_offset(linktype, data)
    except _Reject as reject:
        return EncodedPacket(status=reject.reason)
    packet = data[start:]

    # Step 2: the IPv4 header.
    if len(packet) < 1:
        return EncodedPacket(status=r.TRUNCATED_IP_HEADER)
    version = packet[0] >> 4
    if version != 4:
        raw_v6 = linktype in lt.RAW_LINKS and version == 6
        return EncodedPacket(status=r.NON_IPV4 if raw_v6 else r.BAD_IP_VERSION)
    if len(packet) < 20:
        return EncodedPacket(status=r.TRUNCATED_IP_HEADER)
    ip = _header(dpkt.ip.IP, packet)
    ip_header_len = ip.hl * 4
    if ip.hl < 5:
        return EncodedPacket(status=r.BAD_IHL)
    if len(packet) < ip_header_len:
        return EncodedPacket(status=r.TRUNCATED_IP_HEADER)
    addresses: dict[str, Any] = {
        "src_ip": socket.inet_ntoa(ip.src),
        "dst_ip": socket.inet_ntoa(ip.dst),
        "proto": ip.p,
    }

    # Step 3: where the IP packet ends (never past the total length: Ethernet padding).
    ip_end = min(len(packet), ip.len) if ip.len >= ip_header_len else len(packet)
    segment = packet[ip_header_len:ip_end]

    # Step 4: the transport header, if this packet has one.
    tcp_header = b""
    udp_header = b""
    ports: dict[str, Any] = {}
    if ip.offset == 0 and ip.p == IPPROTO_TCP:
        if len(segment) < TCP_MIN_HEADER:
            if not ip.mf:
                return EncodedPacket(status=r.TRUNCATED_TRANSPORT, **addresses)
        else:
            tcp = _header(dpkt.tcp.TCP, segment)
            if tcp.off < 5:
                return EncodedPacket(status=r.BAD_TCP_OFFSET, **addresses)
            if len(segment) >= tcp.off * 4:
                tcp_header = segment[: tcp.off * 4]
                ports = {"src_port": tcp.sport, "dst_port": tcp.dport}
            elif not ip.mf:
                return EncodedPacket(status=r.TRUNCATED_TRANSPORT, **addresses)
    elif ip.offset == 0 and ip.p == IPPROTO_UDP:
        if len(segment) >= UDP_HEADER:
            udp = _header(dpkt.udp.UDP, segment)
            udp_header = segment[:UDP_HEADER]
            ports = {"src_port": udp.sport, "dst_port": udp.dport}
        elif not ip.mf:
            return EncodedPacket(status=r.TRUNCATED_TRANSPORT, **addresses)
    transport_len = len(tcp_header) + len(udp_header)

    # Step 5: assemble h and d.
    slots = {
        "ip": packet[:ip_header_len],
        "tcp": tcp_header,
        "udp": udp_header,
    }
    header = bytearray([PAD_BYTE]) * HEADER_LEN
    for slot, content in slots.items():
        offset, _ = SLOTS[slot]
        header[offset : offset + len(content)] = content
    for name in config.mask_fields:
        slot, first, last = mask_columns(name)
        present_end = SLOTS[slot][0] + len(slots[slot])
        for i in range(first, min(last, present_end)):
            header[i] = 0
    body = segment[transport_len:][: config.payload_bytes]
    payload = body + bytes(config.payload_bytes - len(body))
    return EncodedPacket(status=r.OK, header=bytes(header), payload=payload, **addresses, **ports)
