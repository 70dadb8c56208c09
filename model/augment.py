"""Training-time rewrites of the header fields that identify a network rather than a behaviour.

A model trained on a few networks learns their fingerprints: the TCP window sizes of their
operating systems, the ephemeral port ranges of their stacks, the payload lengths of their
capture setups. On a network it never saw those differ, and a benign device whose stack
happens to look like an attack tool's is flagged. Masking zeroes such fields for good
(addresses, TTL, IP ID, checksums: :mod:`amlhp.encoders.layout`); the fields rewritten here
still carry behaviour (a SYN flood's window, a scan's ports), so they are only *perturbed*
during training, each packet with probability ``p`` per rewrite:

* the TCP window gets a random value;
* an ephemeral port (>= 32768, either direction, TCP or UDP) gets another ephemeral value;
* the payload is cut after a random length, as a short capture snap length would.

Serving never augments; the scorer sees packets as they are.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from amlhp.encoders.fast_ipv6 import ipv6_twin_slots
from amlhp.encoders.layout import (
    IP_SLOT_LEN,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TCP_SLOT_OFFSET,
    UDP_SLOT_OFFSET,
)

_PROTO_COL = 9  # ip.proto within the IPv4 slot
_EPHEMERAL = 32768


def _rewrite_u16(header: Tensor, col: int, rows: Tensor, values: Tensor) -> None:
    header[rows, col] = (values >> 8).to(torch.uint8)
    header[rows, col + 1] = (values & 0xFF).to(torch.uint8)


def _u16(header: Tensor, col: int) -> Tensor:
    return header[:, col].to(torch.int64) * 256 + header[:, col + 1].to(torch.int64)


def augment_batch(
    header: Tensor, payload: Tensor, p: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Copies of one training batch's (N, 128) header and (N, P) payload, rewritten."""
    if p <= 0.0:
        return header, payload
    header, payload = header.clone(), payload.clone()
    n = header.shape[0]
    proto = header[:, _PROTO_COL]
    tcp, udp = proto == IPPROTO_TCP, proto == IPPROTO_UDP

    def chosen(mask: Tensor) -> Tensor:
        return torch.nonzero(mask & (torch.rand(n, generator=generator) < p)).flatten()

    def randint(low: int, high: int, size: int) -> Tensor:
        return torch.randint(low, high, (size,), generator=generator)

    window = chosen(tcp)
    _rewrite_u16(header, TCP_SLOT_OFFSET + 14, window, randint(0, 65536, window.numel()))
    for slot, present in ((TCP_SLOT_OFFSET, tcp), (UDP_SLOT_OFFSET, udp)):
        for col in (slot, slot + 2):  # source port, destination port
            rows = chosen(present & (_u16(header, col) >= _EPHEMERAL))
            _rewrite_u16(header, col, rows, randint(_EPHEMERAL, 65536, rows.numel()))
    cut = chosen(torch.ones(n, dtype=torch.bool))
    if cut.numel() and payload.shape[1]:
        lengths = randint(0, payload.shape[1], cut.numel())
        cols = torch.arange(payload.shape[1])
        payload[cut] = torch.where(cols[None, :] < lengths[:, None], payload[cut], 0)
    return header, payload


def ipv6_twins(
    header: Tensor, p: float, mask_fields: tuple[str, ...], generator: torch.Generator
) -> Tensor:
    """A copy of a training batch's (N, 128) headers in which each IPv4 TCP or UDP packet
    with a 20-byte header, not a fragment, becomes its IPv6 twin with probability ``p``:
    the network slot the encoder gives the same packet sent over IPv6
    (:func:`amlhp.encoders.fast_ipv6.ipv6_twin_slots`); transport slots and payload stay.

    Why: IPv6 fills the network slot differently (addresses of 16 bytes, a flow label, no
    checksum), and the captures hold few IPv6 packets, so a model trained on them calls
    benign IPv6 traffic an attack (the lab's twin runs: docs/results.md). The flow label
    is random for half the twins and 0 for the others: kernels label connected sockets'
    flows (RFC 6437), raw-packet tools mostly leave 0."""
    if p <= 0.0:
        return header
    n = header.shape[0]
    version_ihl, proto = header[:, 0], header[:, _PROTO_COL]
    offset = (header[:, 6].to(torch.int64) & 0x1F) * 256 + header[:, 7].to(torch.int64)
    more = (header[:, 6] & 0x20) != 0
    eligible = (version_ihl == 0x45) & ((proto == IPPROTO_TCP) | (proto == IPPROTO_UDP))
    eligible &= (offset == 0) & ~more
    rows = torch.nonzero(eligible & (torch.rand(n, generator=generator) < p)).flatten()
    if not rows.numel():
        return header
    labelled = torch.rand(rows.numel(), generator=generator) < 0.5
    flow = torch.where(labelled, torch.randint(1, 1 << 20, (rows.numel(),), generator=generator), 0)
    slots = header[rows, :IP_SLOT_LEN].numpy()
    twins = ipv6_twin_slots(slots, flow.numpy().astype(np.int64), mask_fields)
    header = header.clone()
    header[rows, :IP_SLOT_LEN] = torch.from_numpy(twins)
    return header
