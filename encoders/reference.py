"""Reference encoder: one packet at a time, written to be obviously right.

This is the test oracle for :mod:`amlhp.encoders.fast` and the single written statement of
the encoding rules. Header fields are read through dpkt's named header fields (``ip.hl``,
``ip.len``, ``tcp.off``, ...), decoding only the fixed header of each layer: dpkt's own
inner-layer guessing (which silently leaves what it cannot parse as raw bytes, strips Cisco
ISL tags, decodes LLC, ...) is never used, so every decision below is visible here.

The rules, in the order they are applied (the first that fails gives the reason):

1. Link layer. Ethernet (1), Linux SLL (113) and SLL2 (276) carry an EtherType; up to
   ``MAX_VLAN_TAGS`` 802.1Q/802.1ad/QinQ tags are skipped; 0x0800 is IPv4, 0x86dd IPv6,
   0x0806 ARP: status ``arp`` with its sender and target protocol addresses, operation and
   sender hardware address when it is Ethernet/IPv4 ARP of 28 bytes, else ``bad_arp``.
   NULL (0) and LOOP (108) carry a 4-byte address family, AF_INET (2)
   or one of the AF_INET6 values (10, 24, 28, 30), in either byte order. Raw IP (12, 14,
   101) starts with the IP header, whose version nibble decides (4 or 6; anything else
   ``bad_ip_version``); IPv4 (228) is always IPv4, IPv6 (229) always IPv6. Anything else:
   ``unknown_linktype``. A frame ending inside its link header or a tag:
   ``truncated_link``; a fifth stacked tag: ``too_many_vlan_tags``; another EtherType or
   family: ``non_ip``.
2. IPv4 header. No byte left: ``truncated_ip_header``. Version nibble not 4:
   ``bad_ip_version``. Fewer than 20 bytes: ``truncated_ip_header``. IHL < 5: ``bad_ihl``.
   Fewer than IHL x 4 bytes: ``truncated_ip_header``.
   IPv6 header. No byte left: ``truncated_ip_header``; version nibble not 6:
   ``bad_ip_version``; fewer than 40 bytes: ``truncated_ip_header``. Then the extension
   headers (hop-by-hop, routing, fragment, destination options, authentication) are
   walked: a ninth, or one ending more than 256 bytes after the base header,
   ``long_ipv6_extensions``; one not captured whole (8 bytes to read its length first),
   ``truncated_ip_header``. The network header is the base header and the extension
   headers; the upper-layer protocol is the next header after them.
3. The IP packet ends at ``min(captured, total length)`` (IPv6: 40 + payload length); when
   the total length is smaller than the network header (0 under TCP segmentation offload;
   an IPv6 payload length of 0, which a jumbogram or offload writes) the captured bytes
   are used.
4. Transport, only for fragment offset 0 and protocol TCP (6) or UDP (17): the TCP header
   needs 20 bytes, a data offset >= 5 (else ``bad_tcp_offset``) and offset x 4 bytes; the
   UDP header 8 bytes. A header that does not fit in the IP packet is ``truncated_transport``,
   except in a first fragment (MF set), which is then encoded like any other fragment.
   Fragments with offset > 0 and other protocols have no transport header.
5. ``h``: the network slot 0..59 (IPv4: its header as captured; IPv6: the aligned layout of
   :mod:`amlhp.encoders.layout`), TCP header in 60..119 or UDP header in 120..127, 0xff
   everywhere else; masked fields zeroed where present. ``d``: the bytes after the
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
    IP_SLOT_LEN,
    IPPROTO_TCP,
    IPPROTO_UDP,
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
    SLOTS,
    TCP_MIN_HEADER,
    UDP_HEADER,
    EncoderConfig,
    mask_columns,
    mask_columns_v6,
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
    arp_op: int | None = None
    arp_mac: str | None = None


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


class _Extension(dpkt.Packet):
    """The first two bytes of every IPv6 extension header: next header and length."""

    __hdr__ = (("nxt", "B", 0), ("len", "B", 0))


class _Fragment(dpkt.Packet):
    """IPv6 fragment header (RFC 8200 4.5)."""

    __hdr__ = (("nxt", "B", 0), ("res", "B", 0), ("frag_off", "H", 0), ("id", "I", 0))


_ARP = -1  # "version" of an ARP frame


def _arp(body: bytes) -> EncodedPacket:
    """An ARP frame's addresses and operation, when it is Ethernet/IPv4 ARP (RFC 826)."""
    if len(body) < lt.ARP_BODY:
        return EncodedPacket(status=r.BAD_ARP)
    arp = _header(dpkt.arp.ARP, body)
    ethernet_ipv4 = arp.hrd in lt.ARP_HARDWARE and arp.pro == lt.ETHERTYPE_IPV4
    if not ethernet_ipv4 or (arp.hln, arp.pln) != (6, 4):
        return EncodedPacket(status=r.BAD_ARP)
    return EncodedPacket(
        status=r.ARP,
        src_ip=socket.inet_ntoa(arp.spa),
        dst_ip=socket.inet_ntoa(arp.tpa),
        arp_op=arp.op,
        arp_mac=arp.sha.hex(":"),
    )


def _ip_offset(linktype: int, frame: bytes) -> tuple[int, int]:
    """Step 1: where the IP header (or ARP body) starts in the frame, and its version (4
    or 6; 0: the version nibble decides; -1: ARP)."""
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
        if ethertype == lt.ETHERTYPE_ARP:
            return next_at, _ARP
        if ethertype not in lt.ETHERTYPE_IP_VERSION:
            raise _Reject(r.NON_IP)
        return next_at, lt.ETHERTYPE_IP_VERSION[ethertype]
    if linktype in lt.LOOPBACK_LINKS:
        if len(frame) < lt.LOOPBACK_HEADER:
            raise _Reject(r.TRUNCATED_LINK)
        family = _header(_Family, frame).family
        swapped = struct.unpack("<I", struct.pack(">I", family))[0]
        if lt.AF_INET in (family, swapped):
            return lt.LOOPBACK_HEADER, 4
        if family in lt.AF_INET6 or swapped in lt.AF_INET6:
            return lt.LOOPBACK_HEADER, 6
        raise _Reject(r.NON_IP)
    if linktype in lt.RAW_LINKS:
        return 0, 0
    if linktype == lt.IPV4:
        return 0, 4
    if linktype == lt.IPV6:
        return 0, 6
    raise _Reject(r.UNKNOWN_LINKTYPE)


@dataclass(frozen=True)
class _Network:
    """What steps 2-3 learnt of the IP header, for step 4 and the network slot."""

    header_len: int  # IHL x 4, or 40 + the extension headers
    total: int  # the total length field (IPv6: 40 + payload length)
    proto: int  # IPv4 protocol, or IPv6's upper-layer protocol
    fragment_offset: int
    more_fragments: bool
    slot: bytes  # the network slot's content (before masking), at most 60 bytes
    src_ip: str
    dst_ip: str


def _ipv4(packet: bytes) -> _Network:
    """Step 2 for IPv4."""
    if len(packet) < 20:
        raise _Reject(r.TRUNCATED_IP_HEADER)
    ip = _header(dpkt.ip.IP, packet)
    if ip.hl < 5:
        raise _Reject(r.BAD_IHL)
    if len(packet) < ip.hl * 4:
        raise _Reject(r.TRUNCATED_IP_HEADER)
    return _Network(
        header_len=ip.hl * 4,
        total=ip.len,
        proto=ip.p,
        fragment_offset=ip.offset,
        more_fragments=bool(ip.mf),
        slot=packet[: ip.hl * 4],
        src_ip=socket.inet_ntoa(ip.src),
        dst_ip=socket.inet_ntoa(ip.dst),
    )


def _ipv6(packet: bytes) -> _Network:
    """Step 2 for IPv6: the base header, the extension headers, the aligned slot."""
    if len(packet) < IPV6_HEADER:
        raise _Reject(r.TRUNCATED_IP_HEADER)
    ip6 = _header(dpkt.ip6.IP6, packet)
    nxt, pos, present = ip6.nxt, IPV6_HEADER, 0
    fragment: Any = None
    for count in range(MAX_IPV6_EXTENSIONS + 1):
        if nxt not in IPV6_EXTENSIONS:
            break
        if count == MAX_IPV6_EXTENSIONS:
            raise _Reject(r.LONG_IPV6_EXTENSIONS)
        if len(packet) < pos + 8:
            raise _Reject(r.TRUNCATED_IP_HEADER)
        ext = _header(_Extension, packet[pos:])
        if nxt == IPV6_FRAGMENT:
            length = 8
        elif nxt == IPV6_AUTH:
            length = (ext.len + 2) * 4
        else:
            length = (ext.len + 1) * 8
        if pos + length > IPV6_HEADER + MAX_IPV6_EXTENSION_BYTES:
            raise _Reject(r.LONG_IPV6_EXTENSIONS)
        if len(packet) < pos + length:
            raise _Reject(r.TRUNCATED_IP_HEADER)
        if nxt == IPV6_FRAGMENT:
            fragment = _header(_Fragment, packet[pos:])
        present |= IPV6_EXTENSIONS[nxt]
        nxt, pos = ext.nxt, pos + length
    offset = fragment.frag_off >> 3 if fragment is not None else 0
    more = bool(fragment.frag_off & 1) if fragment is not None else False
    slot = bytearray([PAD_BYTE]) * IP_SLOT_LEN
    slot[0] = 0x60 | min(pos, IP_SLOT_LEN) // 4
    slot[1] = ip6.fc
    slot[2:4] = struct.pack("!H", min(IPV6_HEADER + ip6.plen, 0xFFFF))
    slot[4:6] = struct.pack("!H", fragment.id & 0xFFFF if fragment is not None else 0)
    slot[6:8] = struct.pack("!H", (0x2000 if more else 0) | offset)
    slot[8] = ip6.hlim
    slot[9] = nxt
    slot[12:28] = ip6.src
    slot[28:44] = ip6.dst
    slot[IPV6_FLOW_AT : IPV6_FLOW_AT + 3] = struct.pack("!I", ip6.flow)[1:]
    slot[IPV6_EXT_FLAGS_AT] = present
    extensions = packet[IPV6_HEADER:pos][: IP_SLOT_LEN - IPV6_EXT_BYTES_AT]
    slot[IPV6_EXT_BYTES_AT : IPV6_EXT_BYTES_AT + len(extensions)] = extensions
    assert slot[IPV6_CHECKSUM[0] : IPV6_CHECKSUM[1]] == b"\xff\xff"
    return _Network(
        header_len=pos,
        total=IPV6_HEADER + ip6.plen if ip6.plen else 0,
        proto=nxt,
        fragment_offset=offset,
        more_fragments=more,
        slot=bytes(slot[: IPV6_EXT_BYTES_AT + len(extensions)]),
        src_ip=socket.inet_ntop(socket.AF_INET6, ip6.src),
        dst_ip=socket.inet_ntop(socket.AF_INET6, ip6.dst),
    )


def encode_packet(
    linktype: int, data: bytes, config: EncoderConfig = DEFAULT_CONFIG
) -> EncodedPacket:
    """Encode one captured frame; never raises on packet content."""
    try:
        start, version = _ip_offset(linktype, data)
        packet = data[start:]
        if version == _ARP:
            return _arp(packet)
        # Step 2: the IP header.
        if len(packet) < 1:
            raise _Reject(r.TRUNCATED_IP_HEADER)
        if version == 0:  # raw IP: the nibble decides
            version = packet[0] >> 4 if packet[0] >> 4 in (4, 6) else 4
        if packet[0] >> 4 != version:
            raise _Reject(r.BAD_IP_VERSION)
        net = _ipv4(packet) if version == 4 else _ipv6(packet)
    except _Reject as reject:
        return EncodedPacket(status=reject.reason)
    addresses: dict[str, Any] = {"src_ip": net.src_ip, "dst_ip": net.dst_ip, "proto": net.proto}

    # Step 3: where the IP packet ends (never past the total length: Ethernet padding).
    ip_end = min(len(packet), net.total) if net.total >= net.header_len else len(packet)
    segment = packet[net.header_len : ip_end]

    # Step 4: the transport header, if this packet has one.
    tcp_header = b""
    udp_header = b""
    ports: dict[str, Any] = {}
    if net.fragment_offset == 0 and net.proto == IPPROTO_TCP:
        if len(segment) < TCP_MIN_HEADER:
            if not net.more_fragments:
                return EncodedPacket(status=r.TRUNCATED_TRANSPORT, **addresses)
        else:
            tcp = _header(dpkt.tcp.TCP, segment)
            if tcp.off < 5:
                return EncodedPacket(status=r.BAD_TCP_OFFSET, **addresses)
            if len(segment) >= tcp.off * 4:
                tcp_header = segment[: tcp.off * 4]
                ports = {"src_port": tcp.sport, "dst_port": tcp.dport}
            elif not net.more_fragments:
                return EncodedPacket(status=r.TRUNCATED_TRANSPORT, **addresses)
    elif net.fragment_offset == 0 and net.proto == IPPROTO_UDP:
        if len(segment) >= UDP_HEADER:
            udp = _header(dpkt.udp.UDP, segment)
            udp_header = segment[:UDP_HEADER]
            ports = {"src_port": udp.sport, "dst_port": udp.dport}
        elif not net.more_fragments:
            return EncodedPacket(status=r.TRUNCATED_TRANSPORT, **addresses)
    transport_len = len(tcp_header) + len(udp_header)

    # Step 5: assemble h and d.
    slots = {"ip": net.slot, "tcp": tcp_header, "udp": udp_header}
    header = bytearray([PAD_BYTE]) * HEADER_LEN
    for slot, content in slots.items():
        offset, _ = SLOTS[slot]
        header[offset : offset + len(content)] = content
    columns = mask_columns if version == 4 else mask_columns_v6
    for name in config.mask_fields:
        slot, first, last = columns(name)
        present_end = SLOTS[slot][0] + len(slots[slot])
        for i in range(first, min(last, present_end)):
            header[i] = 0
    body = segment[transport_len:][: config.payload_bytes]
    payload = body + bytes(config.payload_bytes - len(body))
    return EncodedPacket(status=r.OK, header=bytes(header), payload=payload, **addresses, **ports)
