"""Kinds of incident, what the model's classes mean as kinds, severity and ATT&CK ids.

An incident's kind comes from its evidence (:mod:`amlhp.alerts.fusion`): a behaviour
detector names its kind (an FTP password guesser is ``brute_force`` whatever class the
model gave its packets); the model's classes name the kind where no behaviour does.
"""

from __future__ import annotations

from typing import Final

SCAN, BRUTE_FORCE, DOS, C2, EXFILTRATION, EXPLOIT, ICS, MITM = (
    "scan", "brute_force", "dos", "c2", "exfiltration", "exploit", "ics", "mitm",
)  # fmt: skip
#: (``mitm``: a man in the middle by ARP cache poisoning, from the ARP detectors only)
KINDS: Final = (SCAN, BRUTE_FORCE, DOS, C2, EXFILTRATION, EXPLOIT, ICS, MITM)
SEVERITIES: Final = ("low", "medium", "high", "critical")

#: The kind of each attack class of the models (a class not listed is ``exploit``).
KIND_OF_CLASS: Final[dict[str, str]] = {
    **dict.fromkeys(
        ("tcp_portscan", "udp_scan", "os_scan", "aggressive_scan", "botnet_scan",
         "stealth_scan", "vuln_scan"),
        SCAN,
    ),
    **dict.fromkeys(
        ("ssh_bruteforce", "mqtt_bruteforce", "telnet_bruteforce", "ftp_bruteforce",
         "web_dirbrute"),
        BRUTE_FORCE,
    ),
    **dict.fromkeys(
        ("dos_synflood", "dos_udpflood", "dos_ackflood", "dos_httpflood", "slow_dos",
         "mqtt_slowite_dos", "mqtt_malaria_dos", "mqtt_flood", "ddos_reflection_synack",
         "ddos_udp_amplification"),
        DOS,
    ),
    **dict.fromkeys(
        ("c2_reverse_shell", "c2_beacon", "dns_tunnel", "malware_download", "exfiltration"), C2
    ),
    "modbus_attack": ICS,
}  # fmt: skip

#: MITRE ATT&CK (Enterprise, and ICS for ``ics``) technique ids per kind; a detector may
#: add its own (DNS tunnels: T1071.004 and T1048)
TECHNIQUES: Final[dict[str, tuple[str, ...]]] = {
    SCAN: ("T1046",),  # Network Service Discovery
    BRUTE_FORCE: ("T1110",),  # Brute Force
    DOS: ("T1498", "T1499"),  # Network / Endpoint Denial of Service
    C2: ("T1071",),  # Application Layer Protocol
    EXFILTRATION: ("T1048",),  # Exfiltration Over Alternative Protocol
    EXPLOIT: ("T1190",),  # Exploit Public-Facing Application
    # ICS: Unauthorized Command Message (the detectors name theirs: Modify Parameter,
    # Device Restart/Shutdown, Remote System Discovery, Lateral Tool Transfer, ...)
    ICS: ("T0855",),
    MITM: ("T1557.002",),  # Adversary-in-the-Middle: ARP Cache Poisoning
}
DETECTOR_TECHNIQUES: Final[dict[str, tuple[str, ...]]] = {
    "modbus_field_command": ("T0855", "T0836"),
    "modbus_restart": ("T0816",),
    "modbus_recon": ("T0846", "T0888"),
    "field_lateral": ("T0866", "T0867"),
    "reflection": ("T1498.002",),
    "dns_tunnel": ("T1071.004", "T1048"),
    "beaconing": ("T1071.001",),
    "syn_flood": ("T1498.001",),
    "recv_flood": ("T1498.002",),
    "brute_force": ("T1110.001",),
    "arp_spoof": ("T1557.002",),
    "arp_sweep": ("T1018", "T1046"),  # Remote System Discovery
}
#: the severity of a kind at fused score 1 (one level higher from ``SEVERE_SCORE``)
BASE_SEVERITY: Final[dict[str, str]] = {
    SCAN: "low", BRUTE_FORCE: "medium", DOS: "high", C2: "high", EXFILTRATION: "high",
    EXPLOIT: "high", ICS: "high", MITM: "high",
}  # fmt: skip
SEVERE_SCORE: Final = 2.5


def kind_of(label: str) -> str:
    """The incident kind of an attack class."""
    return KIND_OF_CLASS.get(label, EXPLOIT)


def severity(kind: str, score: float) -> str:
    """``low`` .. ``critical``: the kind's base, one level up for a strong score."""
    level = SEVERITIES.index(BASE_SEVERITY[kind]) + (1 if score >= SEVERE_SCORE else 0)
    return SEVERITIES[min(level, len(SEVERITIES) - 1)]


def techniques(kind: str, detectors: list[str]) -> list[str]:
    """ATT&CK ids of an incident: its detectors' own, else its kind's; no repeats."""
    out: list[str] = []
    for name in detectors:
        out += [t for t in DETECTOR_TECHNIQUES.get(name, ()) if t not in out]
    return out or list(TECHNIQUES[kind])
