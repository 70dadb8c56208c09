"""The exact byte layout of the packet-wise header/payload representation (paper, sec. 3.2).

The paper describes the representation in prose; this module pins it down so that the fast
encoder, the reference encoder, the model and the documentation all agree on every byte.

Header vector ``h`` (``HEADER_LEN`` = 128 bytes)::

    bytes   0 ..  59  IPv4 header as captured (IHL x 4 bytes, options included)
    bytes  60 .. 119  TCP header as captured (data offset x 4 bytes, options included)
    bytes 120 .. 127  UDP header (8 bytes)

Every position the packet does not have is ``PAD_BYTE`` (0xff): a UDP packet has 0xff in the
whole TCP slot, a TCP packet in the UDP slot, a packet without IP options has 0xff from byte
20 to 59, and so on. The link layer is dropped.

Payload vector ``d`` (``payload_bytes`` = P bytes, default 64): the first P bytes after the
transport header, never reading past the IPv4 total length (so Ethernet padding and trailers
are not payload), zero-padded. For IPv4 packets whose transport is neither TCP nor UDP (ICMP,
IGMP, ...) and for non-first fragments both transport slots are 0xff and ``d`` starts right
after the IPv4 header.

Masking (``EncoderConfig.mask_fields``) overwrites the bytes of named fields with 0x00, but
only where the packet has them: masking ``tcp.sport`` leaves a UDP packet's 0xff padding
alone. The default masks the IPv4 addresses, as the paper did. Maskable fields:

=================  =====  ===================================================
name               bytes  meaning
=================  =====  ===================================================
``ip.tos``         1      DSCP/ECN
``ip.len``         2      total length
``ip.id``          2      identification
``ip.frag``        2      flags and fragment offset
``ip.ttl``         1      time to live (differs per network path)
``ip.proto``       1      protocol number
``ip.checksum``    2      header checksum (depends on addresses and TTL)
``ip.src``         4      source address (masked by default)
``ip.dst``         4      destination address (masked by default)
``ip.options``     0-40   IPv4 options, the bytes the packet has
``tcp.sport``      2      TCP source port
``tcp.dport``      2      TCP destination port
``tcp.seq``        4      sequence number
``tcp.ack``        4      acknowledgement number
``tcp.offset``     2      data offset, reserved bits and flags
``tcp.window``     2      receive window
``tcp.checksum``   2      checksum (covers the pseudo-header: addresses)
``tcp.urgent``     2      urgent pointer
``tcp.options``    0-40   TCP options (timestamps!), the bytes the packet has
``udp.sport``      2      UDP source port
``udp.dport``      2      UDP destination port
``udp.len``        2      UDP length
``udp.checksum``   2      UDP checksum
=================  =====  ===================================================

Groups expand to several fields: ``addresses`` (ip.src, ip.dst), ``ports`` (all four port
fields), ``checksums`` (ip, tcp and udp checksums), ``path`` (ip.ttl, ip.id, ip.checksum):
useful when a model is trained on one network and evaluated on another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import pyarrow as pa

from amlhp.encoders.exceptions import EncoderConfigError

# The wire's encoded schema needs these three; they are defined in the wire layer (which
# imports no stage) and re-exported here, where the layout they describe is documented.
from amlhp.wire.packets import DEFAULT_MASK_FIELDS as DEFAULT_MASK_FIELDS
from amlhp.wire.packets import HEADER_LEN as HEADER_LEN
from amlhp.wire.packets import LAYOUT_VERSION as LAYOUT_VERSION

PAD_BYTE: Final = 0xFF

IP_SLOT_OFFSET: Final = 0
IP_SLOT_LEN: Final = 60
TCP_SLOT_OFFSET: Final = 60
TCP_SLOT_LEN: Final = 60
UDP_SLOT_OFFSET: Final = 120
UDP_SLOT_LEN: Final = 8

IP_MIN_HEADER: Final = 20
TCP_MIN_HEADER: Final = 20
UDP_HEADER: Final = 8

DEFAULT_PAYLOAD_BYTES: Final = 64
MAX_PAYLOAD_BYTES: Final = 65535

IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17

#: slot name -> (offset of the slot in h, slot length)
SLOTS: Final[dict[str, tuple[int, int]]] = {
    "ip": (IP_SLOT_OFFSET, IP_SLOT_LEN),
    "tcp": (TCP_SLOT_OFFSET, TCP_SLOT_LEN),
    "udp": (UDP_SLOT_OFFSET, UDP_SLOT_LEN),
}

#: field name -> (slot, first byte within the slot, length in bytes)
MASKABLE_FIELDS: Final[dict[str, tuple[str, int, int]]] = {
    "ip.tos": ("ip", 1, 1),
    "ip.len": ("ip", 2, 2),
    "ip.id": ("ip", 4, 2),
    "ip.frag": ("ip", 6, 2),
    "ip.ttl": ("ip", 8, 1),
    "ip.proto": ("ip", 9, 1),
    "ip.checksum": ("ip", 10, 2),
    "ip.src": ("ip", 12, 4),
    "ip.dst": ("ip", 16, 4),
    "ip.options": ("ip", 20, 40),
    "tcp.sport": ("tcp", 0, 2),
    "tcp.dport": ("tcp", 2, 2),
    "tcp.seq": ("tcp", 4, 4),
    "tcp.ack": ("tcp", 8, 4),
    "tcp.offset": ("tcp", 12, 2),
    "tcp.window": ("tcp", 14, 2),
    "tcp.checksum": ("tcp", 16, 2),
    "tcp.urgent": ("tcp", 18, 2),
    "tcp.options": ("tcp", 20, 40),
    "udp.sport": ("udp", 0, 2),
    "udp.dport": ("udp", 2, 2),
    "udp.len": ("udp", 4, 2),
    "udp.checksum": ("udp", 6, 2),
}

#: shorthand -> the fields it stands for
MASK_GROUPS: Final[dict[str, tuple[str, ...]]] = {
    "addresses": ("ip.src", "ip.dst"),
    "ports": ("tcp.sport", "tcp.dport", "udp.sport", "udp.dport"),
    "checksums": ("ip.checksum", "tcp.checksum", "udp.checksum"),
    "path": ("ip.ttl", "ip.id", "ip.checksum"),
}


def expand_mask_fields(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Resolve groups, drop duplicates and sort, so equal masks compare equal.

    Raises :class:`EncoderConfigError` on an unknown name, listing the valid ones.
    """
    out: set[str] = set()
    for name in names:
        key = name.strip().lower()
        if key in MASK_GROUPS:
            out.update(MASK_GROUPS[key])
        elif key in MASKABLE_FIELDS:
            out.add(key)
        else:
            valid = ", ".join([*MASKABLE_FIELDS, *MASK_GROUPS])
            raise EncoderConfigError(f"unknown mask field {name!r}; valid: {valid}")
    return tuple(sorted(out))


def mask_columns(field_name: str) -> tuple[str, int, int]:
    """(slot, first column in h, one past the last column in h) of a maskable field."""
    slot, start, length = MASKABLE_FIELDS[field_name]
    slot_off, _ = SLOTS[slot]
    return slot, slot_off + start, slot_off + start + length


@dataclass(frozen=True)
class EncoderConfig:
    """What the encoder produces: payload length P and the header fields zeroed.

    Training and serving must use equal configs; encoded batches record theirs in the schema
    metadata (``payload_bytes``, ``mask_fields``) so a mismatch can be detected.
    ``mask_fields`` accepts field names and groups (see the module docstring); it is
    normalised to sorted field names.
    """

    payload_bytes: int = DEFAULT_PAYLOAD_BYTES
    mask_fields: tuple[str, ...] = field(default=DEFAULT_MASK_FIELDS)

    def __post_init__(self) -> None:
        if not isinstance(self.payload_bytes, int) or not (
            1 <= self.payload_bytes <= MAX_PAYLOAD_BYTES
        ):
            raise EncoderConfigError(
                f"payload_bytes must be an integer in 1..{MAX_PAYLOAD_BYTES}, "
                f"got {self.payload_bytes!r}"
            )
        object.__setattr__(self, "mask_fields", expand_mask_fields(tuple(self.mask_fields)))

    def mismatch(self, schema: pa.Schema) -> str | None:
        """How records of ``schema`` were encoded differently from this config (another
        layout, P or masking), or None when a model of this config may score them. Records
        that say nothing of an aspect (older writers) are not refused for it."""
        meta = schema.metadata or {}
        layout = meta.get(b"layout_version")
        if layout is not None and layout.decode() != LAYOUT_VERSION:
            return f"records use encoding layout {layout.decode()!r}, expected {LAYOUT_VERSION!r}"
        if "payload" in schema.names:
            width = schema.field("payload").type
            if pa.types.is_fixed_size_binary(width) and width.byte_width != self.payload_bytes:
                return (
                    f"records hold P={width.byte_width} payload bytes, "
                    f"the model P={self.payload_bytes}"
                )
        masks = meta.get(b"mask_fields")
        if masks is not None:
            got = tuple(sorted(m for m in masks.decode().split(",") if m))
            if got != tuple(sorted(self.mask_fields)):
                return (
                    f"records mask {list(got)}, the model was trained with {list(self.mask_fields)}"
                )
        return None


#: The paper's configuration (P = 64, addresses masked); the default everywhere.
DEFAULT_CONFIG: Final = EncoderConfig()
