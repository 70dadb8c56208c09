"""When the alert stage raises an incident: kinds of attack and the thresholds, as data.

An incident needs two kinds of evidence in one window of event time (the capture clock,
so that a replay and the live stream agree): enough packets the model called
``malicious`` with a high enough mean ``malicious_score``, and, for the kinds that have a
behaviour of their own, the behaviour itself, counted from the same packets:

* ``scan``: distinct (peer, service port) pairs reached;
* ``brute_force``: connection attempts, as distinct client ports (each new TCP
  connection takes a new ephemeral port);
* ``dos``: malicious packets per second;
* ``c2`` and ``exploit``: no behaviour count; the model's evidence alone.

Evidence is a packet the model called ``malicious``, or ``uncertain`` with a
``malicious_score`` of at least ``min_score`` (``count_uncertain``); a window with
``strong_packets`` of evidence needs no behaviour count.

A per-packet classifier errs on single packets; a host that trips these thresholds over
a whole window is what an operator should look at. The defaults were chosen on the
project's data (``amlhp alerts evaluate``, docs/alerts.md) with the false-incident rate
they give; each is a setting (``AMLHP_ALERT_*``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

from amlhp.settings import Settings

SCAN, BRUTE_FORCE, DOS, C2, EXPLOIT = "scan", "brute_force", "dos", "c2", "exploit"
KINDS: Final = (SCAN, BRUTE_FORCE, DOS, C2, EXPLOIT)

#: The kind of each attack class of the models (a class not listed is ``exploit``).
KIND_OF_CLASS: Final[dict[str, str]] = {
    **dict.fromkeys(
        (
            "tcp_portscan",
            "udp_scan",
            "os_scan",
            "aggressive_scan",
            "botnet_scan",
            "stealth_scan",
            "vuln_scan",
        ),
        SCAN,
    ),
    **dict.fromkeys(
        ("ssh_bruteforce", "mqtt_bruteforce", "telnet_bruteforce", "web_dirbrute"), BRUTE_FORCE
    ),
    **dict.fromkeys(
        (
            "dos_synflood",
            "dos_udpflood",
            "dos_ackflood",
            "dos_httpflood",
            "slow_dos",
            "mqtt_slowite_dos",
            "mqtt_malaria_dos",
            "mqtt_flood",
            "ddos_reflection_synack",
            "ddos_udp_amplification",
        ),
        DOS,
    ),
    **dict.fromkeys(
        ("c2_reverse_shell", "c2_beacon", "dns_tunnel", "malware_download", "exfiltration"), C2
    ),
}


def kind_of(label: str) -> str:
    """The incident kind of an attack class."""
    return KIND_OF_CLASS.get(label, EXPLOIT)


@dataclass(frozen=True)
class AlertPolicy:
    """The thresholds and clocks of incident detection (see the module docstring)."""

    window_s: float = 10.0
    quiet_s: float = 60.0
    update_s: float = 30.0
    idle_close_s: float = 30.0
    min_packets: int = 20
    min_score: float = 0.84
    scan_min_targets: int = 10
    brute_min_attempts: int = 5
    dos_min_pps: float = 10.0
    target_min_sources: int = 16
    explain_every: int = 0
    #: this many evidence packets of a kind in one window open an incident without the
    #: kind's behaviour count (an FTP bounce scan reaches one server, port 21)
    strong_packets: int = 200
    #: ``uncertain`` packets (out of distribution, or in the undecided band) whose
    #: ``malicious_score`` reaches ``min_score`` count as evidence: one such packet is no
    #: verdict, a window full of them is (amplification floods the model never saw)
    count_uncertain: bool = True
    #: distinct peers / ports / behaviour keys kept per window or incident
    max_tracked: int = 1024
    #: address pairs whose initiator a gateway remembers
    max_pairs: int = 4096
    #: peers and ports listed in an alert
    top_n: int = 5
    #: sample packet ids per alert
    samples: int = 5

    @property
    def window_ns(self) -> int:
        return int(self.window_s * 1e9)

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertPolicy:
        """Every field that has an ``alert_<field>`` setting takes it; the rest keep their
        defaults (the settings name the knobs an operator tunes)."""
        values = {
            f.name: getattr(settings, f"alert_{f.name}")
            for f in fields(cls)
            if f"alert_{f.name}" in type(settings).model_fields
        }
        return cls(**values)

    def behaviour_passes(self, kind: str, targets: int, attempts: int, packets: int) -> bool:
        """The kind's own behaviour count over one window (True for kinds without one, and
        for ``strong_packets`` of evidence)."""
        if packets >= self.strong_packets:
            return True
        if kind == SCAN:
            return targets >= self.scan_min_targets
        if kind == BRUTE_FORCE:
            return attempts >= self.brute_min_attempts
        if kind == DOS:
            return packets / self.window_s >= self.dos_min_pps
        return True
