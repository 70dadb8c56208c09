"""The baselines' input, "the first n bytes of the packet", rebuilt from the encoded vectors.

Deep Packet and SAM read a packet's bytes from the IPv4 header on. Rather than parse packets
a second time, this module re-assembles those bytes from the encoder's aligned layout
(:mod:`amlhp.encoders.layout`): the IPv4 slot holds the header as captured (IHL x 4 bytes),
the TCP slot the TCP header (data offset x 4 bytes) or the UDP slot the 8-byte UDP header,
and the payload vector the bytes after it. So the baselines see exactly the packets the
model sees, with the same masked fields (the addresses are zeroed, as the baselines' papers
also did), and a longer payload vector (P >= n) gives them the whole first n bytes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from amlhp.encoders.layout import (
    HEADER_LEN,
    IP_MIN_HEADER,
    PAD_BYTE,
    TCP_MIN_HEADER,
    TCP_SLOT_OFFSET,
    UDP_HEADER,
    UDP_SLOT_OFFSET,
)

ByteMatrix = npt.NDArray[np.uint8]


def _slot_present(header: ByteMatrix, start: int, length: int) -> npt.NDArray[np.bool_]:
    """A slot the packet has: not all padding (a real header is never all 0xff)."""
    return np.any(header[:, start : start + length] != PAD_BYTE, axis=1)


def packet_bytes(header: ByteMatrix, payload: ByteMatrix, length: int) -> ByteMatrix:
    """(N, length) bytes: IPv4 header, transport header and payload, zero-padded.

    ``header`` is (N, 128) and ``payload`` (N, P) as from ``model_inputs``. A masked header
    length field (IHL or TCP data offset zeroed) falls back to the minimum header size.
    """
    if header.ndim != 2 or header.shape[1] != HEADER_LEN:
        raise ValueError(f"header must be (N, {HEADER_LEN}), got {header.shape}")
    n = header.shape[0]
    ihl = (header[:, 0] & 0x0F).astype(np.int64) * 4
    ip_len = np.where(ihl >= IP_MIN_HEADER, ihl, IP_MIN_HEADER)
    has_tcp = _slot_present(header, TCP_SLOT_OFFSET, TCP_MIN_HEADER)
    has_udp = ~has_tcp & _slot_present(header, UDP_SLOT_OFFSET, UDP_HEADER)
    doff = (header[:, TCP_SLOT_OFFSET + 12] >> 4).astype(np.int64) * 4
    tcp_len = np.where(doff >= TCP_MIN_HEADER, doff, TCP_MIN_HEADER)
    l4_len = np.where(has_tcp, tcp_len, np.where(has_udp, UDP_HEADER, 0))
    l4_start = np.where(has_tcp, TCP_SLOT_OFFSET, UDP_SLOT_OFFSET)

    # One source row per packet: [header | payload | a zero], then gather by column index.
    source = np.concatenate([header, payload, np.zeros((n, 1), np.uint8)], axis=1)
    zero_col = source.shape[1] - 1
    col = np.arange(length, dtype=np.int64)[None, :]
    ip_end = ip_len[:, None]
    l4_end = (ip_len + l4_len)[:, None]
    index = np.where(
        col < ip_end,
        col,
        np.where(
            col < l4_end,
            l4_start[:, None] + col - ip_end,
            HEADER_LEN + col - l4_end,
        ),
    )
    index = np.where(index < zero_col, index, zero_col)
    # Past the payload vector: zeros (index beyond the payload columns maps to zero_col).
    beyond = (col >= l4_end) & (col - l4_end >= payload.shape[1])
    index = np.where(beyond, zero_col, index)
    return np.take_along_axis(source, index, axis=1)
