"""One packet into the behaviour tallies of the host that started its conversation.

Called by the engine for every verdict in tap order (the hot loop of the alert stage), so
it is plain Python over plain values: the per-batch columns are lists, the sets are
capped, and nothing here allocates per packet beyond a set entry.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from amlhp.alerts.profile import MODBUS_DIAGNOSTICS, MODBUS_WRITES, Profile, Tally, beacon

SYN, RST, ACK = 0x02, 0x04, 0x10
ICMP, ICMP_UNREACHABLE = 1, 3
ICMPV6, ICMPV6_UNREACHABLE = 58, 1
#: ICMPv6 types that keep the link working, not conversations between hosts: MLD (130-132,
#: 143) and neighbour discovery (133-137). A router's neighbour advertisement to a scanner
#: must not make the router the initiator of the scanner's probes, as ARP would not.
LINK_CONTROL_ICMPV6: Final = frozenset({130, 131, 132, 133, 134, 135, 136, 137, 143})
MODBUS_PORT: Final = 502
DNS_CUT: Final = "..."


@lru_cache(maxsize=65536)
def address_class(address: str) -> int:
    """0: unicast public, 1: unicast private (a LAN peer), 2: multicast or broadcast (no
    one's victim, nobody's scan target)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return 2
    if ip.is_multicast or address.endswith(".255") or ip.is_unspecified:
        return 2
    return 1 if ip.is_private else 0


def link_control(proto: int, icmp_type: int) -> bool:
    """Whether a packet is IPv6 neighbour discovery or MLD (:data:`LINK_CONTROL_ICMPV6`)."""
    return proto == ICMPV6 and icmp_type in LINK_CONTROL_ICMPV6


def entropy(text: str) -> float:
    """Shannon entropy of ``text`` in bits per character."""
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values()) if n else 0.0


def base_domain(name: str) -> str:
    """The last two labels of a complete name (a cut name: its last whole label)."""
    labels = name.split(".")
    if name.endswith(DNS_CUT):
        return labels[-2] if len(labels) > 1 else ""
    return ".".join(labels[-2:])


@dataclass
class Packet:
    """The fields of one verdict the tallies read (one object reused over a batch)."""

    ts: int = 0
    peer: str = ""
    dport: int = -1
    proto: int = -1
    flags: int = -1  # TCP flags, -1 without TCP
    icmp_type: int = -1
    qname: str | None = None
    modbus_fc: int = -1
    new_pair: bool = False  # the first packet seen between the two addresses


def outgoing(
    prof: Profile, pkt: Packet, *, field_device: bool, cap: int, beacons: int,
    long_label: int, min_entropy: float,
) -> None:  # fmt: skip
    """A packet the host sent in a conversation it started."""
    t = prof.seconds
    _touch(t, pkt.ts)
    t.out += 1
    kind = address_class(pkt.peer)
    if kind != 2:
        t.note("dsts", pkt.peer, cap)
        if kind == 1:
            t.note("lan", pkt.peer, cap)
    t.note("ports", str(pkt.dport) if pkt.dport >= 0 else f"p{pkt.proto}", cap)
    flags = pkt.flags
    if flags >= 0 and flags & SYN and not flags & ACK:
        t.syn += 1
        service = f"{pkt.peer} {pkt.dport}"
        if service in t.services:
            t.services[service] += 1
        elif len(t.services) < 8:
            t.services[service] = 1
        beacon(prof.hour.beacons, service, pkt.ts, beacons)
        opens = True
    else:
        opens = pkt.new_pair
    if opens and field_device and pkt.dport != MODBUS_PORT and kind != 2:
        t.field_lateral += 1  # a field device opens a conversation, not Modbus
    if pkt.qname is not None:
        _dns(t, pkt.qname, cap, long_label, min_entropy)
    if pkt.modbus_fc >= 0 and pkt.dport == MODBUS_PORT:
        t.modbus_requests += 1
        if pkt.modbus_fc in MODBUS_WRITES:
            t.modbus_writes += 1
        elif pkt.modbus_fc in MODBUS_DIAGNOSTICS:
            t.modbus_diag += 1
        if field_device:
            t.field_requests += 1


def answer(prof: Profile, pkt: Packet) -> None:
    """A packet the host got back in a conversation it started."""
    t = prof.seconds
    _touch(t, pkt.ts)
    t.inn += 1
    flags = pkt.flags
    if flags >= 0:
        if flags & SYN and flags & ACK:
            t.synack += 1
        elif flags & RST:
            t.refused += 1
    elif (pkt.proto, pkt.icmp_type) in ((ICMP, ICMP_UNREACHABLE), (ICMPV6, ICMPV6_UNREACHABLE)):
        t.refused += 1
    if pkt.modbus_fc >= 0x80:
        t.modbus_exceptions += 1


def unsolicited(prof: Profile, sender: str, pkt: Packet, cap: int) -> None:
    """A packet the host received in a conversation the sender started."""
    t = prof.seconds
    _touch(t, pkt.ts)
    t.recv += 1
    t.note("senders", sender, cap)
    if pkt.flags >= 0 and pkt.flags & SYN and pkt.flags & ACK:
        t.recv_synack += 1


def _touch(t: Tally, ts: int) -> None:
    if not t.first_ns:
        t.first_ns = ts
    if ts > t.last_ns:
        t.last_ns = ts


def _dns(t: Tally, name: str, cap: int, long_label: int, min_entropy: float) -> None:
    t.dns += 1
    t.note("names", name, cap)
    labels = name.removesuffix(DNS_CUT).split(".")
    first = labels[0] if labels else ""
    t.dns_entropy += entropy(first)
    longest = max(labels, key=len) if labels else ""
    if len(longest) >= long_label and entropy(longest) >= min_entropy:
        t.dns_long += 1
    domain = base_domain(name)
    if domain in t.domains:
        t.domains[domain] += 1
    elif len(t.domains) < 4:
        t.domains[domain] = 1
