"""ARP frames into the behaviour tallies: who claims which address, who asks for whom.

An ARP frame is not scored by the model; its verdict row (status ``arp``) carries the
sender and target protocol addresses (``src_ip``, ``dst_ip``), the operation and the
sender's hardware address (:mod:`amlhp.encoders.reference`). Every ARP frame from a
sender with an address (a probe's 0.0.0.0 is none) claims "address S is at MAC M", and
hosts update their caches from requests as from replies (RFC 826), so both count.

The gateway keeps the **binding** of each address: the MAC that claimed it first, and
when that MAC last claimed it. A claim of a bound address by another MAC while the owner
was heard within ``arp_rebind_s`` is a **conflict** (the spoofer's forged replies keep
conflicting as long as the real owner talks); an owner silent for longer hands the address
on (DHCP gave it to another device). A MAC's **own address** is the first it claimed
without conflict; its conflicts are counted on that host (the spoofer), or on the claimed
address when the MAC never claimed one of its own. Requests for other addresses are
counted as the requester's ``arp_targets`` (an ARP sweep). Both tables are bounded
(``max_arp``, oldest dropped first).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from amlhp.alerts.columns import Rows
from amlhp.alerts.policy import AlertPolicy
from amlhp.alerts.profile import Profile
from amlhp.alerts.state import GatewayState

REQUEST = 1
UNSPECIFIED = "0.0.0.0"


def observe_arp(
    gw: GatewayState, profile: Callable[[str], Profile], policy: AlertPolicy, rows: Rows, i: int
) -> tuple[str, Profile] | None:
    """Row ``i`` of ``rows``, an ARP frame: update the gateway's bindings and the tally of
    the host it speaks for; returns (that host, its profile), or None for a probe that
    claims nothing and for a row that is not ARP."""
    ts, op, mac = rows.ts[i], rows.arp_op[i], rows.arp_mac[i] or ""
    sender, target = rows.src[i] or UNSPECIFIED, rows.dst[i] or UNSPECIFIED
    if op < 0 or sender == UNSPECIFIED:  # not ARP (neighbour discovery), or a probe
        return None
    binding = gw.arp.get(sender)
    conflict = False
    if binding is None or binding[0] == mac:
        _bind(gw.arp, sender, mac, ts, policy.max_arp)
    elif ts - int(binding[1]) <= int(policy.arp_rebind_s * 1e9):
        conflict = True
    else:  # the owner has been silent: the address moved
        _bind(gw.arp, sender, mac, ts, policy.max_arp)
    if not conflict and mac not in gw.arp_own:
        _bind(gw.arp_own, mac, sender, None, policy.max_arp)
    host = gw.arp_own.get(mac, sender)
    prof = profile(host)
    t = prof.seconds
    if not t.first_ns:
        t.first_ns = ts
    t.last_ns = max(t.last_ns, ts)
    if conflict:
        t.arp_conflicts += 1
        t.arp_mac, t.arp_claimed = mac, sender
    if op == REQUEST and target not in (sender, UNSPECIFIED):
        t.arp_requests += 1
        t.note("arp_targets", target, policy.max_tracked)
    return host, prof


def _bind(table: dict[str, Any], key: str, value: str, ts: int | None, cap: int) -> None:
    """Set ``table[key]`` (as [value, ts] when ``ts`` is given), most recent last, and
    drop the oldest entry past ``cap``."""
    table.pop(key, None)
    table[key] = value if ts is None else [value, ts]
    if len(table) > cap:
        del table[next(iter(table))]
