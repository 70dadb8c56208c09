"""Status codes: why a packet got no vector.

Every input packet comes out of the encoder either with ``status == "ok"`` (``h`` and ``d``
filled) or with one of these reason codes and no vector. The code travels with the packet
in the ``status`` column so that nothing is silently lost and the counts add up.

The numeric codes are internal (the fast encoder works on ``int8`` arrays); only the names
appear in records. The exact rules, and the order they are checked in, are written out once,
readably, in :func:`amlhp.encoders.reference.encode_packet`.
"""

from __future__ import annotations

from typing import Final

OK: Final = "ok"
UNKNOWN_LINKTYPE: Final = "unknown_linktype"
TRUNCATED_LINK: Final = "truncated_link"
TOO_MANY_VLAN_TAGS: Final = "too_many_vlan_tags"
NON_IPV4: Final = "non_ipv4"
BAD_IP_VERSION: Final = "bad_ip_version"
TRUNCATED_IP_HEADER: Final = "truncated_ip_header"
BAD_IHL: Final = "bad_ihl"
TRUNCATED_TRANSPORT: Final = "truncated_transport"
BAD_TCP_OFFSET: Final = "bad_tcp_offset"

#: name -> meaning, in the order the rules are applied; the index is the numeric code.
REASONS: Final[dict[str, str]] = {
    OK: "encoded: h and d are filled",
    UNKNOWN_LINKTYPE: "the capture's link type is not one the encoder reads",
    TRUNCATED_LINK: "the frame ends inside its link-layer header or a VLAN tag",
    TOO_MANY_VLAN_TAGS: "more VLAN tags than MAX_VLAN_TAGS (4) are stacked",
    NON_IPV4: "the link layer carries something else: IPv6, ARP, LLDP, 802.3/LLC, ...",
    BAD_IP_VERSION: "the link layer says IPv4 but the version nibble is not 4",
    TRUNCATED_IP_HEADER: "fewer bytes captured than 20 or than IHL x 4",
    BAD_IHL: "IHL below 5 (an IPv4 header is at least 20 bytes)",
    TRUNCATED_TRANSPORT: "the TCP/UDP header does not fit in the IP packet as captured",
    BAD_TCP_OFFSET: "TCP data offset below 5",
}

REASON_NAMES: Final[tuple[str, ...]] = tuple(REASONS)
REASON_CODES: Final[dict[str, int]] = {name: i for i, name in enumerate(REASON_NAMES)}

#: statuses whose IPv4 header was valid: addresses and protocol are known
IP_PARSED: Final = frozenset({OK, TRUNCATED_TRANSPORT, BAD_TCP_OFFSET})
