"""Link-layer types the encoder reads (pcap LINKTYPE_* / DLT_* numbers) and their headers.

Only the part in front of the IP header matters: the link layer is dropped from ``h``.
"""

from __future__ import annotations

from typing import Final

NULL: Final = 0  # BSD loopback, 4-byte address family in the capturing host's byte order
ETHERNET: Final = 1
RAW_DLT12: Final = 12  # DLT_RAW on most BSDs / Linux
RAW_DLT14: Final = 14  # DLT_RAW on OpenBSD
RAW: Final = 101  # LINKTYPE_RAW: starts with the IP header, version nibble tells v4/v6
LOOP: Final = 108  # OpenBSD loopback, family in network byte order (both orders accepted)
LINUX_SLL: Final = 113  # Linux cooked capture v1, 16-byte header
IPV4: Final = 228  # LINKTYPE_IPV4: always IPv4
IPV6: Final = 229  # LINKTYPE_IPV6: always IPv6
LINUX_SLL2: Final = 276  # Linux cooked capture v2, 20-byte header

#: A pcapng packet that refers to an interface the file never described.
UNKNOWN: Final = 0xFFFF

ETHERTYPE_IPV4: Final = 0x0800
ETHERTYPE_IPV6: Final = 0x86DD
ETHERTYPE_ARP: Final = 0x0806
#: the IP version each IP EtherType carries
ETHERTYPE_IP_VERSION: Final[dict[int, int]] = {ETHERTYPE_IPV4: 4, ETHERTYPE_IPV6: 6}
#: Ethernet/IPv4 ARP (RFC 826): the hardware types read (Ethernet, IEEE 802), the body's
#: length, and where its sender and target protocol addresses start
ARP_HARDWARE: Final = (1, 6)
ARP_BODY: Final = 28
ARP_SENDER_IP_AT: Final = 14
ARP_TARGET_IP_AT: Final = 24
#: 802.1Q, 802.1ad (QinQ S-tag) and the legacy QinQ TPIDs
VLAN_TPIDS: Final = frozenset({0x8100, 0x88A8, 0x9100, 0x9200})
MAX_VLAN_TAGS: Final = 4
VLAN_TAG_LEN: Final = 4

AF_INET: Final = 2
#: AF_INET6 as BSD loopback captures write it: Linux, NetBSD/OpenBSD, FreeBSD, macOS
AF_INET6: Final = frozenset({10, 24, 28, 30})

#: link types with an EtherType: linktype -> (EtherType offset, offset of what follows)
ETHERTYPE_LINKS: Final[dict[int, tuple[int, int]]] = {
    ETHERNET: (12, 14),
    LINUX_SLL: (14, 16),
    LINUX_SLL2: (0, 20),
}
LOOPBACK_LINKS: Final = frozenset({NULL, LOOP})
LOOPBACK_HEADER: Final = 4
#: raw IP: version nibble 4 is IPv4, 6 is IPv6, anything else bad_ip_version
RAW_LINKS: Final = frozenset({RAW_DLT12, RAW_DLT14, RAW})

SUPPORTED: Final = frozenset(
    {*ETHERTYPE_LINKS, *LOOPBACK_LINKS, *RAW_LINKS, IPV4, IPV6},
)

NAMES: Final[dict[int, str]] = {
    NULL: "NULL",
    ETHERNET: "ETHERNET",
    RAW_DLT12: "RAW(12)",
    RAW_DLT14: "RAW(14)",
    RAW: "RAW",
    LOOP: "LOOP",
    LINUX_SLL: "LINUX_SLL",
    IPV4: "IPV4",
    IPV6: "IPV6",
    LINUX_SLL2: "LINUX_SLL2",
}


def describe(linktype: int) -> str:
    """A name for messages: ``ETHERNET (1)`` or ``unknown (147)``."""
    return f"{NAMES.get(linktype, 'unknown')} ({linktype})"


def max_link_header(linktype: int) -> int:
    """The longest link-layer header the encoder reads for this link type (VLAN tags incl.)."""
    if linktype in ETHERTYPE_LINKS:
        return ETHERTYPE_LINKS[linktype][1] + MAX_VLAN_TAGS * VLAN_TAG_LEN
    if linktype in LOOPBACK_LINKS:
        return LOOPBACK_HEADER
    return 0
