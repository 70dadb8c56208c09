"""Small captures cut from the committed ones, for tests that run whole pipelines."""

from __future__ import annotations

import struct
from pathlib import Path

#: where the lab demo capture's stealth and OS scans are (half the packets come from there)
SCANS_FROM = 4_000


def head_of_capture(
    src: Path, dst: Path, packets: int, *, skip: int = 0, later: tuple[int, int] = (0, 0)
) -> Path:
    """The first ``packets`` records of a classic little-endian pcap, as a new pcap; with
    ``skip``, half of them from the start and half from after the first ``skip`` records
    (where the lab demo's scans and floods are); ``later`` = (from, count) appends
    ``count`` records from record ``from`` on (a minute or more on, when the flows of the
    first part have ended: :mod:`amlhp.alerts.flow_evidence` applies a flow once a packet
    leaves the window it ends in)."""
    data = src.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1", "the demo capture is a little-endian pcap"
    offsets = [24]
    while offsets[-1] < len(data):
        (length,) = struct.unpack_from("<I", data, offsets[-1] + 8)
        offsets.append(offsets[-1] + 16 + length)
    start, count = later
    extra = data[offsets[start] : offsets[start + count]] if count else b""
    if not skip:
        dst.write_bytes(data[: offsets[packets]] + extra)
        return dst
    half = packets // 2
    tail = packets - half
    dst.write_bytes(data[: offsets[half]] + data[offsets[skip] : offsets[skip + tail]] + extra)
    return dst
