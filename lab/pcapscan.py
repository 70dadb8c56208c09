"""A minimal reader of the lab's own captures: IPv4 addresses of each packet, read as it grows.

tcpdump writes classic pcap (``-U``: one packet at a time) on ``lo``, whose link type is
Ethernet. The lab only needs each packet's addresses (to count packets per class while a
scenario runs, and to check labels afterwards), so this reader parses exactly that, from
where it stopped last time, and leaves a record that is still being written for the next
call. The pipeline's full reader is :mod:`amlhp.encoders.readers`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from amlhp.lab.exceptions import LabError

DLT_EN10MB: Final = 1
DLT_RAW: Final = 101
DLT_LINUX_SLL: Final = 113
_MAGICS: Final = {
    b"\xd4\xc3\xb2\xa1": "<",
    b"\xa1\xb2\xc3\xd4": ">",
    b"\x4d\x3c\xb2\xa1": "<",
    b"\xa1\xb2\x3c\x4d": ">",
}
#: (network-layer offset, offset of the 2-byte protocol field or -1) per link type
_LINK: Final = {DLT_EN10MB: (14, 12), DLT_LINUX_SLL: (16, 14), DLT_RAW: (0, -1)}
NON_IPV4: Final = -1


class PcapTail:
    """Incremental reader yielding ``(ts_ns, src, dst, wire_len)`` per packet.

    ``src``/``dst`` are IPv4 addresses as integers, or :data:`NON_IPV4` for a frame that
    does not carry IPv4.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._endian = "<"
        self._nano = False
        self._link: tuple[int, int] | None = None
        self.packets = 0

    def _header(self, data: bytes) -> bool:
        if len(data) < 24:
            return False
        magic = data[:4]
        if magic not in _MAGICS:
            raise LabError(f"{self.path} is not a classic pcap file")
        self._endian = _MAGICS[magic]
        self._nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
        (linktype,) = struct.unpack(self._endian + "I", data[20:24])
        linktype &= 0x0FFFFFFF
        if linktype not in _LINK:
            raise LabError(f"{self.path}: link type {linktype} is not one the lab writes")
        self._link = _LINK[linktype]
        self.offset = 24
        return True

    def read(self) -> Iterator[tuple[int, int, int, int]]:
        """Packets appended since the last call (a record still being written waits)."""
        try:
            with self.path.open("rb") as fh:
                if self._link is None and not self._header(fh.read(24)):
                    return
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return
        yield from self._parse(data)

    def _parse(self, data: bytes) -> Iterator[tuple[int, int, int, int]]:
        assert self._link is not None
        net_off, proto_off = self._link
        rec = struct.Struct(self._endian + "IIII")
        scale = 1 if self._nano else 1000
        pos, end = 0, len(data)
        while pos + 16 <= end:
            sec, frac, incl, orig = rec.unpack_from(data, pos)
            if pos + 16 + incl > end:
                break
            frame = data[pos + 16 : pos + 16 + incl]
            pos += 16 + incl
            self.packets += 1
            ts_ns = sec * 1_000_000_000 + frac * scale
            is_ip = proto_off < 0 or frame[proto_off : proto_off + 2] == b"\x08\x00"
            ip = frame[net_off : net_off + 20]
            if is_ip and len(ip) >= 20 and ip[0] >> 4 == 4:
                src = int.from_bytes(ip[12:16], "big")
                dst = int.from_bytes(ip[16:20], "big")
                yield ts_ns, src, dst, orig
            else:
                yield ts_ns, NON_IPV4, NON_IPV4, orig
        self.offset += pos


def scan(path: Path) -> Iterator[tuple[int, int, int, int]]:
    """All packets of a finished capture: ``(ts_ns, src, dst, wire_len)``."""
    yield from PcapTail(path).read()
