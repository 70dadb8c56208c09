"""Behaviour detectors: small named functions of one host's tally at one time scale.

Each detector reads a :class:`~amlhp.alerts.profile.Tally` (what the host did in the
current window of a scale) and the thresholds of that scale, and returns
:class:`Finding` s: a kind of attack, a **strength** (the measured behaviour over its
threshold: 1.0 is exactly at the threshold, so a detector at strength >= 1 raises an
incident by itself; weaker findings add up in :mod:`amlhp.alerts.fusion`) and the facts
it measured, which the incident lists as its evidence. The anchors are Zeek's notices
(address and port scans, ``SSH::Password_Guessing``), Suricata's ``detection_filter``
(track by source, count in seconds), RITA's beacon score and the DNS tunnelling
heuristics of the literature (long, high-entropy names).

The thresholds are :class:`~amlhp.alerts.policy.AlertPolicy` fields (``AMLHP_ALERT_*``),
one value per scale where the scale matters (``(seconds, minutes, hour)`` tuples).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from amlhp.alerts.kinds import BRUTE_FORCE, C2, DOS, ICS, MITM, SCAN
from amlhp.alerts.policy import SCALES
from amlhp.alerts.profile import Tally

if TYPE_CHECKING:
    from amlhp.alerts.policy import AlertPolicy

#: strength beyond which one detector counts no more (fusion)
MAX_STRENGTH: Final = 3.0


@dataclass(frozen=True)
class Finding:
    """One detector's verdict on one host at one scale."""

    detector: str
    scale: str
    kind: str
    strength: float
    facts: Mapping[str, float | str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.detector}@{self.scale}"


def _ratio(value: float, threshold: float) -> float:
    return min(MAX_STRENGTH, value / threshold) if threshold > 0 else 0.0


def scan_fanout(t: Tally, scale: str, p: AlertPolicy) -> list[Finding]:
    """Many destination hosts or ports, most probes unanswered or refused (Zeek's
    address/port scan; nmap's SYN, connect, ACK, FIN, UDP and IP-protocol scans)."""
    hosts, lan, ports = t.distinct("dsts"), t.distinct("lan"), t.distinct("ports")
    probes = max(t.out, 1)
    unanswered = 1.0 - min(1.0, t.synack / t.syn) if t.syn else 0.0
    failed = max(unanswered, min(1.0, t.refused / probes))
    if failed < p.scan_min_failed or t.out > p.scan_max_probes_per_target * max(ports, hosts):
        return []
    strength = max(
        _ratio(lan, p.threshold("scan_hosts", scale)),
        _ratio(hosts, p.scan_public_factor * p.threshold("scan_hosts", scale)),
        _ratio(ports, p.threshold("scan_ports", scale)),
    )
    if strength <= 0:
        return []
    facts = {"hosts": hosts, "lan_hosts": lan, "ports": ports, "probes": t.out,
             "failed_share": round(failed, 3)}  # fmt: skip
    return [Finding("scan_fanout", scale, SCAN, strength, facts)]


def brute_force(t: Tally, scale: str, p: AlertPolicy) -> list[Finding]:
    """Repeated connection attempts to one login service of one host (SSH, telnet, FTP,
    MQTT, RDP, VNC, databases, mail): Zeek's password guessing, by connections."""
    best, attempts = "", 0
    for key, n in t.services.items():
        if n > attempts and int(key.rsplit(" ", 1)[1]) in p.login_ports:
            best, attempts = key, n
    if not attempts:
        return []
    strength = _ratio(attempts, p.threshold("brute_attempts", scale))
    facts = {"attempts": attempts, "port": int(best.rsplit(" ", 1)[1])}
    return [Finding("brute_force", scale, BRUTE_FORCE, strength, facts)]


def flood(t: Tally, scale: str, p: AlertPolicy) -> list[Finding]:
    """Rate: unanswered connection attempts per second from the host, or unsolicited
    packets per second at it from many senders (spoofed floods, reflection)."""
    seconds = (
        p.window_s if scale == "seconds" else (p.minutes_s if scale == "minutes" else p.hour_s)
    )
    out = []
    unanswered = t.syn - t.synack
    if unanswered > 0:
        rate = unanswered / seconds
        if rate >= p.threshold("flood_pps") * 0.25:
            facts = {"syn_per_s": round(rate, 1), "syn": t.syn, "answered": t.synack}
            out.append(
                Finding("syn_flood", scale, DOS, _ratio(rate, p.threshold("flood_pps")), facts)
            )
    senders = t.distinct("senders")
    if t.recv and senders >= p.target_min_sources:
        rate = t.recv / seconds
        facts = {"recv_per_s": round(rate, 1), "senders": senders}
        out.append(
            Finding("recv_flood", scale, DOS, _ratio(rate, p.threshold("flood_recv_pps")), facts)
        )
    return out


def beaconing(t: Tally, scale: str, p: AlertPolicy) -> list[Finding]:
    """Regular connection starts to one peer (RITA): many starts, a short period, little
    spread in the intervals between them."""
    best: Finding | None = None
    for key, (starts, _last, mean, m2) in t.beacons.items():
        gaps = starts - 1
        if gaps < 2 or mean <= 0 or mean > p.beacon_max_period_s * 1e9:
            continue
        cv = math.sqrt(m2 / (gaps - 1)) / mean if gaps > 1 else 1.0
        if cv > p.beacon_max_cv:
            continue
        strength = min(1.0, starts / p.threshold("beacon_min_starts"))  # half a witness at most
        if best is None or strength > best.strength:
            facts = {"starts": starts, "period_s": round(mean / 1e9, 2), "cv": round(cv, 3),
                     "port": int(key.rsplit(" ", 1)[1])}  # fmt: skip
            best = Finding("beaconing", scale, C2, strength, facts)
    return [best] if best else []


def dns_tunnel(t: Tally, scale: str, p: AlertPolicy) -> list[Finding]:
    """DNS tunnelling and exfiltration: many queries whose name has a long label of high
    entropy (as far as the record's payload bytes hold the name; see the engine)."""
    if not t.dns_long:
        return []
    domain = max(t.domains, key=lambda d: t.domains[d]) if t.domains else ""
    facts = {"queries": t.dns, "long_names": t.dns_long, "names": t.distinct("names"),
             "entropy": round(t.dns_entropy / t.dns, 2),
             "top_domain_queries": t.domains.get(domain, 0)}  # fmt: skip
    strength = _ratio(t.dns_long, p.threshold("dns_long_names", scale))
    return [Finding("dns_tunnel", scale, C2, strength, facts)]


def modbus_commands(t: Tally, scale: str, p: AlertPolicy) -> list[Finding]:
    """Modbus/TCP commands an ICS operator's master does not send: requests from a field
    device (a host that answers Modbus requests: a compromised slave), diagnostics
    (FC 8, restart), and a requester whose requests mostly fail (exception replies: a
    register sweep). A plain write rate is no signal: a benign master writes coils
    hundreds of times a minute."""
    out = []
    if t.field_requests:
        facts = {"requests": t.field_requests, "writes": t.modbus_writes}
        strength = _ratio(t.field_requests, p.threshold("field_requests", scale))
        out.append(Finding("modbus_field_command", scale, ICS, strength, facts))
    if t.modbus_diag:
        facts = {"diagnostics": t.modbus_diag}
        out.append(Finding("modbus_restart", scale, ICS, _ratio(t.modbus_diag, 1), facts))
    if t.modbus_requests and t.modbus_exceptions / t.modbus_requests >= p.modbus_failed_share:
        facts = {"requests": t.modbus_requests, "exceptions": t.modbus_exceptions}
        strength = _ratio(t.modbus_exceptions, p.threshold("modbus_exceptions", scale))
        out.append(Finding("modbus_recon", scale, ICS, strength, facts))
    if t.field_lateral:
        facts = {"connections": t.field_lateral}
        strength = _ratio(t.field_lateral, p.threshold("field_lateral", scale))
        out.append(Finding("field_lateral", scale, ICS, strength, facts))
    return out


def reflection(t: Tally, scale: str, p: AlertPolicy) -> list[Finding]:
    """SYN-ACKs the host never asked for: backscatter of a reflection attack that spoofs
    its address (a slow one stays below any packet rate)."""
    if not t.recv_synack:
        return []
    facts = {"synacks": t.recv_synack, "senders": t.distinct("senders")}
    strength = _ratio(t.recv_synack, p.threshold("reflection_synacks", scale))
    return [Finding("reflection", scale, DOS, strength, facts)]


def model_evidence(t: Tally, scale: str, p: AlertPolicy) -> list[Finding]:
    """The model as one witness: per kind, the packets it called malicious at this scale,
    when their mean score is high and they are a large share of the host's packets
    (a benign device the model misreads on a few packets an hour stays below)."""
    total = max(t.out + t.inn, 1)
    out = []
    for kind, (n, score_sum) in t.evidence.items():
        if not n or score_sum / n < p.min_score:
            continue
        share = n / total
        if share < p.model_min_share:
            continue
        strength = _ratio(n, p.threshold("model_packets", scale))
        facts = {"packets": n, "share": round(share, 3), "mean_score": round(score_sum / n, 3)}
        out.append(Finding("model", scale, kind, strength, facts))
    return out


def flow_evidence(t: Tally, scale: str, p: AlertPolicy) -> list[Finding]:
    """The attack flow model as a witness: per kind, the flows the host started that
    raised its alarm, when they are most of the flows it started (a device one flow in
    a hundred of which looks odd stays below; :mod:`amlhp.alerts.flow_evidence`)."""
    out = []
    for kind, (n, score_sum) in t.flow_alarms.items():
        share = n / max(t.flows, 1)
        if not n or share < p.flow_min_share:
            continue
        strength = _ratio(n, p.threshold("flow_alarms", scale))
        facts = {"flows": n, "share": round(share, 3), "mean_score": round(score_sum / n, 3)}
        out.append(Finding("flow_model", scale, kind, strength, facts))
    return out


def arp_spoofing(t: Tally, scale: str, p: AlertPolicy) -> list[Finding]:
    """Claims of addresses that another MAC holds, whose owner was heard recently: ARP
    cache poisoning for a man in the middle (arpspoof, ettercap, bettercap); the facts
    name the claiming MAC and the last address it claimed (:mod:`amlhp.alerts.arp`)."""
    if not t.arp_conflicts:
        return []
    strength = _ratio(t.arp_conflicts, p.threshold("arp_conflicts", scale))
    facts: dict[str, float | str] = {
        "conflicts": t.arp_conflicts, "mac": t.arp_mac, "claimed": t.arp_claimed,
    }  # fmt: skip
    return [Finding("arp_spoof", scale, MITM, strength, facts)]


def arp_sweep(t: Tally, scale: str, p: AlertPolicy) -> list[Finding]:
    """ARP requests for many distinct addresses: a host sweeping its subnet for live
    hosts (``nmap -sn``, ``arp-scan``, IoT malware before it spreads)."""
    targets = t.distinct("arp_targets")
    if not targets:
        return []
    strength = _ratio(targets, p.threshold("arp_targets", scale))
    return [
        Finding(
            "arp_sweep", scale, SCAN, strength, {"targets": targets, "requests": t.arp_requests}
        )
    ]


Detector = Callable[[Tally, str, "AlertPolicy"], list[Finding]]
#: every detector, by the scales it runs at
DETECTORS: Final[dict[str, tuple[Detector, tuple[str, ...]]]] = {
    "scan_fanout": (scan_fanout, SCALES),
    "brute_force": (brute_force, SCALES),
    "flood": (flood, ("seconds",)),
    "beaconing": (beaconing, ("hour",)),
    "dns_tunnel": (dns_tunnel, ("minutes", "hour")),
    "modbus_commands": (modbus_commands, SCALES),
    "reflection": (reflection, ("minutes", "hour")),
    "model": (model_evidence, ("minutes", "hour")),
    "flow_model": (flow_evidence, ("minutes", "hour")),
    "arp_spoof": (arp_spoofing, SCALES),
    "arp_sweep": (arp_sweep, SCALES),
}


def run_detectors(t: Tally, scale: str, p: AlertPolicy) -> list[Finding]:
    """Every detector of ``scale`` over the tally, the ones the policy switches off left
    out."""
    out: list[Finding] = []
    for name, (detector, scales) in DETECTORS.items():
        if scale in scales and name not in p.disabled_detectors:
            out += detector(t, scale, p)
    return out
