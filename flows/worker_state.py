"""The flow worker's table entries: their keys, and the bytes of histories and watermarks
(layout in :mod:`amlhp.flows.worker`'s docstring)."""

from __future__ import annotations

import struct
from collections.abc import Iterable

from amlhp.flows.exceptions import FlowStateError
from amlhp.flows.record import FlowKey, FlowState

WATERMARK = struct.Struct("<iqqq")
#: the watermark entry before flow_seq (a changelog written by an older worker)
WATERMARK_V1 = struct.Struct("<iqq")


def flow_key(key: FlowKey) -> bytes:
    return b"f|" + key.text().encode()


def history_key(gateway: str, device: str) -> bytes:
    return f"h|{gateway}|{device}".encode()


def watermark_key(gateway: str) -> bytes:
    return f"w|{gateway}".encode()


def device_key(gateway: str, host: str) -> bytes:
    return f"d|{gateway}|{host}".encode()


def encode_history(flows: list[FlowState]) -> bytes:
    parts = [struct.pack("<B", len(flows))]
    for f in flows:
        blob = f.to_bytes()
        parts.append(struct.pack("<I", len(blob)) + blob)
    return b"".join(parts)


def decode_history(data: bytes) -> list[FlowState]:
    try:
        (n,) = struct.unpack_from("<B", data, 0)
        pos, out = 1, []
        for _ in range(n):
            (length,) = struct.unpack_from("<I", data, pos)
            pos += 4
            out.append(FlowState.from_bytes(data[pos : pos + length]))
            pos += length
    except struct.error as exc:
        raise FlowStateError(f"not a flow history: {exc}") from exc
    return out


def unpack_watermark(value: bytes) -> tuple[int, int, int, int]:
    """(partition, seq, clock, flow verdicts so far) of a watermark entry, either layout."""
    if len(value) == WATERMARK_V1.size:
        partition, seq, clock = WATERMARK_V1.unpack(value)
        return partition, seq, clock, 0
    try:
        partition, seq, clock, emitted = WATERMARK.unpack(value)
    except struct.error as exc:
        raise FlowStateError(f"not a watermark entry ({len(value)} bytes): {exc}") from exc
    return partition, seq, clock, emitted


def known_gateways(items: Iterable[tuple[bytes, bytes]]) -> dict[str, int]:
    """Gateways with durable state and their partitions (from the watermark entries)."""
    out = {}
    for key, value in items:
        if key.startswith(b"w|") and value:
            out[key[2:].decode()] = unpack_watermark(value)[0]
    return out
