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
``ip.flow``        3      IPv6 flow label (IPv4 has none)
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

IPv6 (beyond the paper, which encodes IPv4 only). An IPv6 packet fills the same three slots;
its network slot is not the header as captured but the IPv6 fields laid out where IPv4 keeps
the fields that mean the same, so that what the model learnt of TTLs, lengths, protocols and
fragments carries over, and the behaviour facts (:mod:`amlhp.encoders.facts`) read both
versions alike::

    byte   0      0x60 | N: version 6, N = network header bytes / 4 (40 + extension
                  headers, at most 60: the IHL of IPv4)
    byte   1      traffic class (IPv4's DSCP/ECN byte)
    bytes  2..3   40 + payload length, at most 65535 (IPv4's total length)
    bytes  4..5   fragment header identification, low 16 bits (0 without one)
    bytes  6..7   MF << 13 | fragment offset, as in IPv4 (0 without a fragment header)
    byte   8      hop limit (IPv4's TTL)
    byte   9      upper-layer protocol: the next header after the extension headers
    bytes 10..11  0xff: IPv6 has no header checksum
    bytes 12..27  source address (masked by default)
    bytes 28..43  destination address (masked by default)
    bytes 44..46  flow label (20 bits, right-aligned)
    byte  47      extension headers present: 0x01 hop-by-hop, 0x02 routing, 0x04 fragment,
                  0x08 destination options, 0x10 authentication
    bytes 48..59  the extension headers as captured, their first 12 bytes (0xff after)

The TCP and UDP slots and ``d`` follow the IPv4 rules; ICMPv6, like ICMP, has no transport
slot and ``d`` starts at its type byte. The same mask names apply (``ip.src`` zeroes the
16 address bytes, ``ip.options`` byte 47 and the extension bytes present, ``ip.checksum``
nothing); ``ip.flow`` (bytes 44..46) exists in IPv6 only.

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
IPPROTO_ICMPV6: Final = 58

IPV6_HEADER: Final = 40
#: extension headers the encoder walks: next-header value -> its bit in byte 47
IPV6_EXTENSIONS: Final[dict[int, int]] = {0: 0x01, 43: 0x02, 44: 0x04, 60: 0x08, 51: 0x10}
IPV6_FRAGMENT: Final = 44
IPV6_AUTH: Final = 51
#: a longer chain is refused (``long_ipv6_extensions``), which bounds a tap's snap length
MAX_IPV6_EXTENSIONS: Final = 8
MAX_IPV6_EXTENSION_BYTES: Final = 256
IPV6_FLOW_AT: Final = 44
IPV6_EXT_FLAGS_AT: Final = 47
IPV6_EXT_BYTES_AT: Final = 48
IPV6_CHECKSUM: Final = (10, 12)  # IPv4's checksum columns: absent (0xff) in IPv6

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

#: where the ``ip.*`` fields sit in an IPv6 packet's network slot: name -> (first byte, length);
#: those not listed (``ip.checksum``) it does not have
IPV6_FIELDS: Final[dict[str, tuple[int, int]]] = {
    "ip.tos": (1, 1),
    "ip.len": (2, 2),
    "ip.id": (4, 2),
    "ip.frag": (6, 2),
    "ip.ttl": (8, 1),
    "ip.proto": (9, 1),
    "ip.src": (12, 16),
    "ip.dst": (28, 16),
    "ip.flow": (IPV6_FLOW_AT, 3),
    "ip.options": (IPV6_EXT_FLAGS_AT, IP_SLOT_LEN - IPV6_EXT_FLAGS_AT),
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
        elif key in MASKABLE_FIELDS or key in IPV6_FIELDS:
            out.add(key)
        else:
            valid = ", ".join([*MASKABLE_FIELDS, "ip.flow", *MASK_GROUPS])
            raise EncoderConfigError(f"unknown mask field {name!r}; valid: {valid}")
    return tuple(sorted(out))


def mask_columns(field_name: str) -> tuple[str, int, int]:
    """(slot, first column in h, one past the last column in h) of a maskable field in an
    IPv4 packet (``ip.flow``, which IPv4 lacks: an empty range)."""
    if field_name not in MASKABLE_FIELDS:
        return "ip", 0, 0
    slot, start, length = MASKABLE_FIELDS[field_name]
    slot_off, _ = SLOTS[slot]
    return slot, slot_off + start, slot_off + start + length


def mask_columns_v6(field_name: str) -> tuple[str, int, int]:
    """:func:`mask_columns` for an IPv6 packet (``ip.checksum``: an empty range)."""
    if not field_name.startswith("ip."):
        return mask_columns(field_name)
    start, length = IPV6_FIELDS.get(field_name, (0, 0))
    return "ip", IP_SLOT_OFFSET + start, IP_SLOT_OFFSET + start + length


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
