"""Hand-built packets and capture files, byte by byte, for the tests (not installed).

Every builder writes the wire format with ``struct`` and takes any field as a keyword, so
that malformed packets (bad IHL, TCP data offset 4, wrong total length, ...) are as easy to
build as good ones. Nothing here reads packets; the encoders never import this module.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from amlhp.encoders import linktypes as lt
from amlhp.wire import raw_schema

ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_ARP = 0x0806


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(
    payload: bytes,
    proto: int,
    src: str = "192.168.1.10",
    dst: str = "10.0.0.1",
    *,
    options: bytes = b"",
    tos: int = 0,
    ident: int = 0x1234,
    flags: int = 0x2,
    frag_offset: int = 0,
    ttl: int = 64,
    version: int = 4,
    ihl: int | None = None,
    total_length: int | None = None,
    header_checksum: int | None = None,
) -> bytes:
    """An IPv4 packet; ``flags`` is the 3-bit field (0x2 = DF, 0x1 = MF), offset in 8-byte units."""
    if len(options) % 4:
        options += b"\x00" * (4 - len(options) % 4)
    ihl = ihl if ihl is not None else 5 + len(options) // 4
    length = total_length if total_length is not None else 20 + len(options) + len(payload)
    header = (
        struct.pack(
            "!BBHHHBBH4s4s",
            (version << 4) | ihl,
            tos,
            length & 0xFFFF,
            ident,
            (flags << 13) | frag_offset,
            ttl,
            proto,
            0,
            socket.inet_aton(src),
            socket.inet_aton(dst),
        )
        + options
    )
    value = header_checksum if header_checksum is not None else checksum(header)
    return header[:10] + struct.pack("!H", value) + header[12:] + payload


def ipv6(
    payload: bytes,
    nxt: int,
    src: str = "fd00::10",
    dst: str = "fd00::1",
    *,
    extensions: bytes = b"",
    traffic_class: int = 0,
    flow: int = 0,
    hop_limit: int = 64,
    version: int = 6,
    payload_length: int | None = None,
) -> bytes:
    """An IPv6 packet; ``nxt`` is the base header's next header (the first extension's type
    when ``extensions``, built with :func:`ipv6_extension`, are given)."""
    length = payload_length if payload_length is not None else len(extensions) + len(payload)
    first = (version << 28) | (traffic_class << 20) | flow
    header = struct.pack(
        "!IHBB16s16s",
        first,
        length & 0xFFFF,
        nxt,
        hop_limit,
        socket.inet_pton(socket.AF_INET6, src),
        socket.inet_pton(socket.AF_INET6, dst),
    )
    return header + extensions + payload


def ipv6_extension(kind: int, nxt: int, body: bytes = b"", *, offset: int = 0, more: bool = False,
                   ident: int = 0x01020304) -> bytes:  # fmt: skip
    """One extension header: hop-by-hop (0), routing (43), destination options (60) and
    authentication (51) with ``body`` padded to their length unit, or fragment (44)."""
    if kind == 44:
        return struct.pack("!BBHI", nxt, 0, (offset << 3) | int(more), ident)
    unit = 4 if kind == 51 else 8
    if kind == 51:
        body = body.ljust(10, b"\x00")  # at least SPI and sequence number
    body += b"\x00" * (-(len(body) + 2) % unit)
    units = (len(body) + 2) // unit
    return struct.pack("!BB", nxt, units - 2 if kind == 51 else units - 1) + body


def arp(
    op: int = 1,
    sender_mac: str = "02:00:00:00:00:0a",
    sender_ip: str = "192.168.1.10",
    target_mac: str = "00:00:00:00:00:00",
    target_ip: str = "192.168.1.1",
    *,
    hardware: int = 1,
    protocol: int = 0x0800,
) -> bytes:
    """An Ethernet/IPv4 ARP body (RFC 826), 28 bytes: put it in :func:`ethernet` with
    :data:`ETHERTYPE_ARP`."""
    return struct.pack(
        "!HHBBH6s4s6s4s",
        hardware,
        protocol,
        6,
        4,
        op,
        bytes.fromhex(sender_mac.replace(":", "")),
        socket.inet_aton(sender_ip),
        bytes.fromhex(target_mac.replace(":", "")),
        socket.inet_aton(target_ip),
    )


def icmpv6(kind: int = 128, code: int = 0, body: bytes = b"\x00\x07\x00\x01ping") -> bytes:
    """An ICMPv6 message (default: echo request); checksum left 0."""
    return struct.pack("!BBH", kind, code, 0) + body


def tcp(
    payload: bytes = b"",
    sport: int = 49152,
    dport: int = 1883,
    *,
    seq: int = 1000,
    ack: int = 0,
    flags: int = 0x18,
    window: int = 64240,
    options: bytes = b"",
    data_offset: int | None = None,
    tcp_checksum: int = 0xABCD,
    urgent: int = 0,
) -> bytes:
    """A TCP segment (checksum given, not computed: the encoder never checks it)."""
    if len(options) % 4:
        options += b"\x01" * (4 - len(options) % 4)  # NOP padding
    offset = data_offset if data_offset is not None else 5 + len(options) // 4
    return (
        struct.pack(
            "!HHIIBBHHH",
            sport,
            dport,
            seq,
            ack,
            offset << 4,
            flags,
            window,
            tcp_checksum,
            urgent,
        )
        + options
        + payload
    )


def udp(
    payload: bytes = b"",
    sport: int = 5353,
    dport: int = 53,
    *,
    length: int | None = None,
    udp_checksum: int = 0x1111,
) -> bytes:
    """A UDP datagram."""
    size = length if length is not None else 8 + len(payload)
    return struct.pack("!HHHH", sport, dport, size & 0xFFFF, udp_checksum) + payload


def icmp_echo(payload: bytes = b"ping", ident: int = 7, seq: int = 1) -> bytes:
    """An ICMP echo request."""
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
    return body[:2] + struct.pack("!H", checksum(body)) + body[4:]


def ethernet(
    payload: bytes,
    ethertype: int = lt.ETHERTYPE_IPV4,
    *,
    vlans: Sequence[tuple[int, int]] = (),
    dst: bytes = b"\x00\x11\x22\x33\x44\x55",
    src: bytes = b"\x66\x77\x88\x99\xaa\xbb",
) -> bytes:
    """An Ethernet II frame; ``vlans`` = outermost-first (TPID, TCI) tags."""
    tags = b""
    types = [tpid for tpid, _ in vlans] + [ethertype]
    for (_, tci), inner in zip(vlans, types[1:], strict=True):
        tags += struct.pack("!HH", tci, inner)
    return dst + src + struct.pack("!H", types[0]) + tags + payload


def sll(payload: bytes, ethertype: int = lt.ETHERTYPE_IPV4) -> bytes:
    """Linux cooked capture v1 header (packet sent to us, Ethernet ARPHRD, 6-byte address)."""
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x00\x11\x22\x33\x44\x55\x00\x00", ethertype) + payload


def sll2(payload: bytes, ethertype: int = lt.ETHERTYPE_IPV4) -> bytes:
    """Linux cooked capture v2 header."""
    return (
        struct.pack("!HHIHBB8s", ethertype, 0, 3, 1, 0, 6, b"\x00\x11\x22\x33\x44\x55\x00\x00")
        + payload
    )


def loopback(payload: bytes, family: int = lt.AF_INET, byteorder: str = "little") -> bytes:
    """BSD NULL/LOOP header: the address family as a 4-byte integer."""
    return family.to_bytes(4, "little" if byteorder == "little" else "big") + payload


def raw_batch(
    frames: Sequence[tuple[int, bytes]], gateway: str = "test", start_seq: int = 0
) -> pa.RecordBatch:
    """A raw-schema batch of (linktype, frame) pairs, timestamps 1 ms apart."""
    n = len(frames)
    return pa.RecordBatch.from_arrays(
        [
            pa.array([gateway] * n, pa.string()),
            pa.array([1_700_000_000_000_000_000 + i * 1_000_000 for i in range(n)], pa.int64()),
            pa.array(range(start_seq, start_seq + n), pa.uint64()),
            pa.array([linktype for linktype, _ in frames], pa.uint16()),
            pa.array([len(frame) for _, frame in frames], pa.uint32()),
            pa.array([frame for _, frame in frames], pa.binary()),
        ],
        schema=raw_schema(),
    )


@dataclass(frozen=True)
class Record:
    """One packet to write into a capture file."""

    data: bytes
    ts_ns: int = 1_700_000_000_123_456_000
    wire_len: int | None = None
    interface: int = 0


def write_pcap(
    path: Path,
    records: Iterable[Record],
    linktype: int = lt.ETHERNET,
    *,
    nanosecond: bool = False,
    big_endian: bool = False,
    snaplen: int = 65535,
) -> Path:
    """A classic pcap file (micro- or nanosecond timestamps, either byte order)."""
    order = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for rec in records:
        sec, frac = divmod(rec.ts_ns, 1_000_000_000)
        frac = frac if nanosecond else frac // 1000
        wire = rec.wire_len if rec.wire_len is not None else len(rec.data)
        out.append(struct.pack(order + "IIII", sec, frac, len(rec.data), wire) + rec.data)
    path.write_bytes(b"".join(out))
    return path


def pcapng_block(order: str, block_type: int, body: bytes) -> bytes:
    """One pcapng block: type, length, body padded to 4 bytes, length again."""
    body += b"\x00" * (-len(body) % 4)
    length = len(body) + 12
    return struct.pack(order + "II", block_type, length) + body + struct.pack(order + "I", length)


def _option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


@dataclass(frozen=True)
class Interface:
    """A pcapng interface: link type, ``if_tsresol`` byte, ``if_tsoffset`` seconds."""

    linktype: int
    tsresol: int | None = None
    tsoffset: int = 0
    snaplen: int = 0


def pcapng_section(
    interfaces: Sequence[Interface],
    records: Iterable[Record],
    *,
    big_endian: bool = False,
    ticks: Iterable[int] | None = None,
) -> bytes:
    """One pcapng section: SHB, IDBs, one EPB per record (timestamps in interface units).

    Timestamps are converted to each interface's units unless ``ticks`` gives them raw.
    """
    order = ">" if big_endian else "<"
    out = [pcapng_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for iface in interfaces:
        opts = b""
        if iface.tsresol is not None:
            opts += _option(order, 9, bytes([iface.tsresol]))
        if iface.tsoffset:
            opts += _option(order, 14, struct.pack(order + "q", iface.tsoffset))
        if opts:
            opts += _option(order, 0, b"")
        body = struct.pack(order + "HHI", iface.linktype, 0, iface.snaplen) + opts
        out.append(pcapng_block(order, 1, body))
    tick_list = list(ticks) if ticks is not None else None
    for i, rec in enumerate(records):
        iface = interfaces[rec.interface] if rec.interface < len(interfaces) else Interface(0)
        if tick_list is not None:
            value = tick_list[i]
        else:
            resol = 6 if iface.tsresol is None else iface.tsresol
            ns = rec.ts_ns - iface.tsoffset * 1_000_000_000
            if resol & 0x80:
                value = (ns << (resol & 0x7F)) // 1_000_000_000
            else:
                value = ns * 10 ** (resol & 0x7F) // 1_000_000_000
        wire = rec.wire_len if rec.wire_len is not None else len(rec.data)
        body = (
            struct.pack(
                order + "IIIII", rec.interface, value >> 32, value & 0xFFFFFFFF, len(rec.data), wire
            )
            + rec.data
        )
        out.append(pcapng_block(order, 6, body))
    return b"".join(out)


def write_pcapng(
    path: Path,
    interfaces: Sequence[Interface],
    records: Iterable[Record],
    *,
    big_endian: bool = False,
) -> Path:
    """A one-section pcapng file (see :func:`pcapng_section`)."""
    path.write_bytes(pcapng_section(interfaces, records, big_endian=big_endian))
    return path
