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
NON_IP: Final = "non_ip"
ARP: Final = "arp"
BAD_ARP: Final = "bad_arp"
BAD_IP_VERSION: Final = "bad_ip_version"
TRUNCATED_IP_HEADER: Final = "truncated_ip_header"
BAD_IHL: Final = "bad_ihl"
LONG_IPV6_EXTENSIONS: Final = "long_ipv6_extensions"
TRUNCATED_TRANSPORT: Final = "truncated_transport"
BAD_TCP_OFFSET: Final = "bad_tcp_offset"

#: name -> meaning, in the order the rules are applied; the index is the numeric code.
REASONS: Final[dict[str, str]] = {
    OK: "encoded: h and d are filled",
    UNKNOWN_LINKTYPE: "the capture's link type is not one the encoder reads",
    TRUNCATED_LINK: "the frame ends inside its link-layer header or a VLAN tag",
    TOO_MANY_VLAN_TAGS: "more VLAN tags than MAX_VLAN_TAGS (4) are stacked",
    NON_IP: "the link layer carries neither IP nor ARP: LLDP, 802.3/LLC, EAPOL, ...",
    ARP: "an ARP frame: read by the behaviour detectors, not scored by the model",
    BAD_ARP: "an ARP frame that is not Ethernet/IPv4 ARP or is cut before its 28 bytes",
    BAD_IP_VERSION: "the link layer says IPv4 (IPv6) but the version nibble is not 4 (6)",
    TRUNCATED_IP_HEADER: "fewer bytes captured than 20 or than IHL x 4 (IPv4), or than the "
    "40-byte header and its extension headers (IPv6)",
    BAD_IHL: "IHL below 5 (an IPv4 header is at least 20 bytes)",
    LONG_IPV6_EXTENSIONS: "more than 8 IPv6 extension headers, or more than 256 bytes of them",
    TRUNCATED_TRANSPORT: "the TCP/UDP header does not fit in the IP packet as captured",
    BAD_TCP_OFFSET: "TCP data offset below 5",
}

REASON_NAMES: Final[tuple[str, ...]] = tuple(REASONS)
REASON_CODES: Final[dict[str, int]] = {name: i for i, name in enumerate(REASON_NAMES)}

#: statuses whose IPv4 or IPv6 header was valid: addresses and protocol are known
IP_PARSED: Final = frozenset({OK, TRUNCATED_TRANSPORT, BAD_TCP_OFFSET})
#: statuses with addresses: the IP ones, and ARP frames (sender and target addresses)
ADDRESSED: Final = IP_PARSED | {ARP}
#: statuses that become verdicts (the rest are dead letters): scored packets and ARP
#: frames, which the behaviour detectors read
VERDICT_STATUSES: Final = frozenset({OK, ARP})
