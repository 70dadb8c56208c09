"""Capture file readers: pcap and pcapng files to raw packet batches.

Both formats are read with their own small parsers (the record layouts come from dpkt's
header classes), because dpkt's ``pcapng.Reader`` only knows the first interface of a file
and both dpkt readers drop the wire length and round timestamps to float seconds. What is
kept per packet: link type (per interface in pcapng), capture time in integer nanoseconds,
wire length and the captured bytes.

* pcap: microsecond and nanosecond magics in both byte orders, and the "modified" pcap
  variant with 24-byte record headers. The FCS bits of the link-type word are ignored.
* pcapng: any number of sections (each with its own byte order and interfaces) and
  interfaces; Enhanced, Simple and obsolete Packet Blocks; ``if_tsresol`` (powers of 10 and
  of 2) and ``if_tsoffset``. Other blocks are skipped.

The format is told by the magic number, not the file name (some ``.pcap`` files here are
pcapng). A file that is neither raises :class:`CaptureError`. Damage inside a readable file
never raises: the packets read so far are kept and a counted :class:`CaptureWarning` goes
into the file's :class:`CaptureInfo`. An unknown link type is reported once per file (one
warning with its number and packet count, logged once); its packets still come out, and
the encoder gives them the reason ``unknown_linktype``.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pyarrow as pa

from amlhp.encoders import linktypes as lt
from amlhp.encoders.exceptions import CaptureError
from amlhp.wire import raw_schema

log = logging.getLogger(__name__)

PCAP_MAGIC_US: Final = 0xA1B2C3D4
PCAP_MAGIC_NS: Final = 0xA1B23C4D
PCAP_MAGIC_MODIFIED: Final = 0xA1B2CD34
PCAPNG_SHB: Final = 0x0A0D0D0A
PCAPNG_BOM: Final = 0x1A2B3C4D
PCAPNG_IDB: Final = 1
PCAPNG_PB: Final = 2
PCAPNG_SPB: Final = 3
PCAPNG_EPB: Final = 6
OPT_END: Final = 0
OPT_TSRESOL: Final = 9
OPT_TSOFFSET: Final = 14

#: records claiming more than this many captured bytes are corrupt (libpcap's own limit)
MAX_RECORD: Final = 262144 * 4
DEFAULT_BATCH_SIZE: Final = 1000
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


@dataclass
class CaptureWarning:
    """Something wrong inside a capture, counted instead of repeated."""

    code: str
    message: str
    count: int = 1
    linktype: int | None = None


@dataclass
class CaptureInfo:
    """What reading one capture found: format, packets per link type, warnings.

    Warnings are keyed by code (and link type): ``unknown_linktype`` (one per link-type
    number, counting its packets), ``truncated_record`` (the last record is cut short, its
    bytes are kept), ``truncated_file`` (the file ends inside a record header or block),
    ``bad_record`` / ``bad_block`` (a length that cannot be right; reading stops there),
    ``unknown_interface`` (a pcapng packet names an interface never described; its link type
    becomes 0xffff), ``no_section`` (pcapng data before any section header),
    ``bad_timestamp`` (a pcapng timestamp beyond the int64 nanosecond range, clamped).
    """

    path: str
    format: str = ""
    packets: int = 0
    bytes_read: int = 0
    size: int = 0
    linktypes: Counter[int] = field(default_factory=Counter)
    warnings: dict[tuple[str, int | None], CaptureWarning] = field(default_factory=dict)

    def warn(self, code: str, message: str, linktype: int | None = None) -> None:
        """Count a warning; log only its first occurrence in this file."""
        key = (code, linktype)
        if key in self.warnings:
            self.warnings[key].count += 1
            return
        self.warnings[key] = CaptureWarning(code, message, 1, linktype)
        log.warning("%s: %s", self.path, message)

    @property
    def unknown_linktypes(self) -> dict[int, int]:
        """Unknown link-type number -> packets carrying it."""
        return {
            w.linktype: w.count
            for w in self.warnings.values()
            if w.code == "unknown_linktype" and w.linktype is not None
        }

    def _count(self, linktype: int) -> None:
        self.packets += 1
        self.linktypes[linktype] += 1
        if linktype not in lt.SUPPORTED:
            self.warn(
                "unknown_linktype",
                f"link type {lt.describe(linktype)} is not supported; "
                "its packets are kept with status unknown_linktype",
                linktype,
            )


@dataclass(frozen=True)
class Packet:
    """One captured packet as read from a file."""

    ts_ns: int
    linktype: int
    wire_len: int
    data: bytes


def _open(path: Path) -> tuple[bytes | mmap.mmap, int]:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            if size == 0:
                return b"", 0
            return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ), size
    except OSError as exc:
        raise CaptureError(f"cannot read {path}: {exc.strerror or exc}") from exc


def iter_packets(path: str | Path, info: CaptureInfo | None = None) -> Iterator[Packet]:
    """Yield the packets of a pcap or pcapng file in file order.

    ``info`` (created if not given) is filled while reading. Raises :class:`CaptureError`
    only before the first packet, when the file cannot be opened or is not a capture.
    """
    path = Path(path)
    info = info if info is not None else CaptureInfo(str(path))
    buf, size = _open(path)
    info.size = size
    try:
        if size < 4:
            raise CaptureError(f"{path}: not a pcap or pcapng file (only {size} bytes)")
        magic_le = struct.unpack_from("<I", buf, 0)[0]
        magic_be = struct.unpack_from(">I", buf, 0)[0]
        if magic_le == PCAPNG_SHB:
            info.format = "pcapng"
            yield from _pcapng(buf, size, info)
        elif (
            PCAP_MAGIC_US in (magic_le, magic_be)
            or PCAP_MAGIC_NS in (magic_le, magic_be)
            or (PCAP_MAGIC_MODIFIED in (magic_le, magic_be))
        ):
            info.format = "pcap"
            yield from _pcap(buf, size, info)
        else:
            raise CaptureError(f"{path}: not a pcap or pcapng file (magic {magic_le:#010x})")
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()


def _pcap(buf: bytes | mmap.mmap, size: int, info: CaptureInfo) -> Iterator[Packet]:
    """Classic libpcap format."""
    endian = (
        "<"
        if struct.unpack_from("<I", buf, 0)[0]
        in (
            PCAP_MAGIC_US,
            PCAP_MAGIC_NS,
            PCAP_MAGIC_MODIFIED,
        )
        else ">"
    )
    magic = struct.unpack_from(endian + "I", buf, 0)[0]
    if size < 24:
        raise CaptureError(f"{info.path}: pcap file header cut short ({size} bytes)")
    linktype = struct.unpack_from(endian + "I", buf, 20)[0] & 0xFFFF
    frac_ns = 1 if magic == PCAP_MAGIC_NS else 1000
    record = struct.Struct(endian + "IIII")
    record_len = 24 if magic == PCAP_MAGIC_MODIFIED else 16
    pos = 24
    while pos < size:
        if pos + record_len > size:
            info.warn("truncated_file", f"file ends inside a record header at byte {pos}")
            break
        sec, frac, caplen, wire_len = record.unpack_from(buf, pos)
        if caplen > MAX_RECORD:
            info.warn("bad_record", f"record at byte {pos} claims {caplen} bytes; stopped")
            break
        start = pos + record_len
        end = start + caplen
        if end > size:
            info.warn("truncated_record", f"last record cut short at byte {size}")
            end = size
        info._count(linktype)
        yield Packet(
            sec * 1_000_000_000 + frac * frac_ns, linktype, wire_len, bytes(buf[start:end])
        )
        pos = end
        info.bytes_read = pos
    info.bytes_read = min(pos, size)


@dataclass
class _Interface:
    linktype: int
    snaplen: int
    tsresol: int = 6  # the if_tsresol byte: 10**-6 s
    tsoffset: int = 0  # seconds

    def to_ns(self, ticks: int) -> int:
        """Timestamp ticks to ns since the epoch, in exact integer arithmetic."""
        exponent = self.tsresol & 0x7F
        if self.tsresol & 0x80:
            ns = (ticks * 1_000_000_000) >> exponent
        elif exponent <= 9:
            ns = ticks * 10 ** (9 - exponent)
        else:
            ns = ticks // 10 ** (exponent - 9)
        return ns + self.tsoffset * 1_000_000_000


def _idb_options(
    buf: bytes | mmap.mmap, pos: int, end: int, endian: str, iface: _Interface
) -> None:
    while pos + 4 <= end:
        code, length = struct.unpack_from(endian + "HH", buf, pos)
        pos += 4
        if code == OPT_END or pos + length > end:
            return
        if code == OPT_TSRESOL and length >= 1:
            iface.tsresol = buf[pos]
        elif code == OPT_TSOFFSET and length >= 8:
            iface.tsoffset = struct.unpack_from(endian + "q", buf, pos)[0]
        pos += (length + 3) & ~3


def _pcapng(buf: bytes | mmap.mmap, size: int, info: CaptureInfo) -> Iterator[Packet]:
    """pcapng: sections, interfaces and packet blocks."""
    endian: str | None = None
    interfaces: list[_Interface] = []
    pos = 0
    while pos < size:
        if pos + 12 > size:
            info.warn("truncated_file", f"file ends inside a block header at byte {pos}")
            break
        if struct.unpack_from("<I", buf, pos)[0] == PCAPNG_SHB:
            bom = struct.unpack_from("<I", buf, pos + 8)[0]
            if bom == PCAPNG_BOM:
                endian = "<"
            elif struct.unpack_from(">I", buf, pos + 8)[0] == PCAPNG_BOM:
                endian = ">"
            else:
                info.warn("bad_block", f"section header at byte {pos} has no byte-order magic")
                break
            interfaces = []
        if endian is None:
            info.warn("no_section", "pcapng data before any section header; stopped")
            break
        block_type, block_len = struct.unpack_from(endian + "II", buf, pos)
        if block_len < 12 or block_len % 4:
            info.warn("bad_block", f"block at byte {pos} has length {block_len}; stopped")
            break
        end = pos + block_len
        if end > size:
            info.warn("truncated_file", f"last block (type {block_type}) cut short")
            end = size
        body = pos + 8
        body_end = end - 4
        if block_type == PCAPNG_IDB:
            if body + 8 <= body_end:
                linktype, _, snaplen = struct.unpack_from(endian + "HHI", buf, body)
                iface = _Interface(linktype, snaplen)
                _idb_options(buf, body + 8, body_end, endian, iface)
                interfaces.append(iface)
            else:
                info.warn("bad_block", f"interface description at byte {pos} is too short")
        elif block_type in (PCAPNG_EPB, PCAPNG_PB):
            if body + 20 <= body_end:
                if block_type == PCAPNG_EPB:
                    if_id, ts_hi, ts_lo, caplen, wire_len = struct.unpack_from(
                        endian + "IIIII", buf, body
                    )
                else:
                    if_id, _, ts_hi, ts_lo, caplen, wire_len = struct.unpack_from(
                        endian + "HHIIII", buf, body
                    )
                data_start = body + 20
                data_end = min(data_start + caplen, body_end)
                if data_start + caplen > body_end:
                    info.warn("truncated_record", f"packet block at byte {pos} cut short")
                yield _packet_of(
                    info,
                    interfaces,
                    if_id,
                    (ts_hi << 32) | ts_lo,
                    wire_len,
                    bytes(buf[data_start:data_end]),
                )
            else:
                info.warn("bad_block", f"packet block at byte {pos} is too short")
        elif block_type == PCAPNG_SPB:
            if body + 4 <= body_end:
                wire_len = struct.unpack_from(endian + "I", buf, body)[0]
                caplen = wire_len
                if interfaces and interfaces[0].snaplen:
                    caplen = min(caplen, interfaces[0].snaplen)
                data = bytes(buf[body + 4 : min(body + 4 + caplen, body_end)])
                yield _packet_of(info, interfaces, 0, None, wire_len, data)
            else:
                info.warn("bad_block", f"simple packet block at byte {pos} is too short")
        pos = pos + block_len
        info.bytes_read = min(pos, size)


def _packet_of(
    info: CaptureInfo,
    interfaces: list[_Interface],
    if_id: int,
    ticks: int | None,
    wire_len: int,
    data: bytes,
) -> Packet:
    if if_id < len(interfaces):
        iface = interfaces[if_id]
        linktype = iface.linktype
        ts_ns = iface.to_ns(ticks) if ticks is not None else 0
    else:
        info.warn("unknown_interface", f"packet names interface {if_id}, never described")
        linktype = lt.UNKNOWN
        ts_ns = ticks * 1000 if ticks is not None else 0
    if not INT64_MIN <= ts_ns <= INT64_MAX:
        info.warn("bad_timestamp", "timestamp outside the int64 nanosecond range; clamped")
        ts_ns = max(INT64_MIN, min(INT64_MAX, ts_ns))
    info._count(linktype)
    return Packet(ts_ns, linktype, wire_len, data)


def _batch(gateway: str, seq0: int, packets: list[Packet], snaplen: int | None) -> pa.RecordBatch:
    n = len(packets)
    datas = [p.data for p in packets] if snaplen is None else [p.data[:snaplen] for p in packets]
    return pa.RecordBatch.from_arrays(
        [
            pa.array([gateway] * n, pa.string()),
            pa.array([p.ts_ns for p in packets], pa.int64()),
            pa.array(range(seq0, seq0 + n), pa.uint64()),
            pa.array([p.linktype for p in packets], pa.uint16()),
            pa.array([min(p.wire_len, 0xFFFFFFFF) for p in packets], pa.uint32()),
            pa.array(datas, pa.binary()),
        ],
        schema=raw_schema(),
    )


def iter_raw_batches(
    path: str | Path,
    gateway: str = "offline",
    batch_size: int = DEFAULT_BATCH_SIZE,
    start_seq: int = 0,
    snaplen: int | None = None,
    info: CaptureInfo | None = None,
) -> Iterator[pa.RecordBatch]:
    """Read a capture as raw-schema batches of up to ``batch_size`` packets.

    ``seq`` counts from ``start_seq`` in file order; ``snaplen`` truncates the captured
    bytes (the wire length is kept), as a tap with that snap length would. Pass ``info`` to
    learn about warnings (unknown link types, damage) after or during iteration.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    pending: list[Packet] = []
    seq = start_seq
    for packet in iter_packets(path, info):
        pending.append(packet)
        if len(pending) == batch_size:
            yield _batch(gateway, seq, pending, snaplen)
            seq += len(pending)
            pending = []
    if pending:
        yield _batch(gateway, seq, pending, snaplen)


def read_capture_info(path: str | Path) -> CaptureInfo:
    """Scan a whole capture: format, packet count per link type, counted warnings."""
    info = CaptureInfo(str(path))
    for _ in iter_packets(path, info):
        pass
    return info
