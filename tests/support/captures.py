"""Small captures cut from the committed ones, for tests that run whole pipelines."""

from __future__ import annotations

import struct
from pathlib import Path

#: where the lab demo capture's stealth and OS scans are (half the packets come from there)
SCANS_FROM = 4_000


def head_of_capture(src: Path, dst: Path, packets: int, *, skip: int = 0) -> Path:
    """The first ``packets`` records of a classic little-endian pcap, as a new pcap; with
    ``skip``, half of them from the start and half from after the first ``skip`` records
    (where the lab demo's scans and floods are)."""
    data = src.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1", "the demo capture is a little-endian pcap"
    offsets = [24]
    while offsets[-1] < len(data):
        (length,) = struct.unpack_from("<I", data, offsets[-1] + 8)
        offsets.append(offsets[-1] + 16 + length)
    if not skip:
        dst.write_bytes(data[: offsets[packets]])
        return dst
    half = packets // 2
    tail = packets - half
    dst.write_bytes(data[: offsets[half]] + data[offsets[skip] : offsets[skip + tail]])
    return dst
