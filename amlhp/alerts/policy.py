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
project's data (``amlhp alerts-evaluate``, docs/alerts.md) with the false-incident rate
they give; each is a setting (``AMLHP_ALERT_*``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

from amlhp.alerts.kinds import BRUTE_FORCE, DOS, SCAN
from amlhp.settings import Settings

#: the time scales of host behaviour, in the order of the thresholds' tuples
SCALES: Final = ("seconds", "minutes", "hour")
#: the behaviour thresholds ``behaviour_scale`` multiplies (the knob fitted leaving one
#: source out, :mod:`amlhp.alerts.fitting`)
BEHAVIOUR_THRESHOLDS: Final = frozenset({
    "scan_hosts", "scan_ports", "brute_attempts", "flood_pps", "flood_recv_pps",
    "dns_long_names", "modbus_exceptions", "reflection_synacks", "beacon_min_starts",
})  # fmt: skip


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
    # -- host behaviour at three scales (amlhp.alerts.profile, amlhp.alerts.detectors);
    # tuples are (seconds, minutes, hour) thresholds
    minutes_s: float = 300.0
    hour_s: float = 3600.0
    #: distinct hosts / ports reached, with at least this share of probes failed
    scan_hosts: tuple[float, ...] = (20.0, 25.0, 40.0)
    scan_ports: tuple[float, ...] = (15.0, 15.0, 30.0)
    scan_min_failed: float = 0.5
    #: more probes per target than this is a flood at few targets, not a scan
    scan_max_probes_per_target: float = 5.0
    #: public destinations count this many times fewer than private ones (cloud peers)
    scan_public_factor: float = 4.0
    #: connection attempts to one login service of one host
    brute_attempts: tuple[float, ...] = (10.0, 20.0, 30.0)
    #: (MQTT is not one: IoT clients that connect per publish look like guessing)
    login_ports: frozenset[int] = frozenset(
        {21, 22, 23, 25, 110, 143, 445, 1433, 2222, 2323, 3306, 3389, 5432, 5900}
    )
    #: unanswered SYNs per second from a host; unsolicited packets per second at a host
    flood_pps: float = 200.0
    flood_recv_pps: float = 200.0
    #: connection starts to one peer and port in the hour, their mean period and spread
    beacon_min_starts: float = 60.0
    beacon_max_period_s: float = 120.0
    beacon_max_cv: float = 0.3
    #: DNS queries with long names (and the mean entropy of their first labels)
    dns_long_names: tuple[float, ...] = (10.0, 20.0, 60.0)
    #: a long label: this many characters at this Shannon entropy (bits per character)
    dns_long_label: int = 20
    dns_min_entropy: float = 3.5
    #: Modbus requests by a field device; exception replies (with this share of the
    #: requests) to one requester; TCP connections a field device starts elsewhere
    field_requests: tuple[float, ...] = (1.0, 1.0, 1.0)
    modbus_exceptions: tuple[float, ...] = (10.0, 20.0, 40.0)
    modbus_failed_share: float = 0.2
    field_lateral: tuple[float, ...] = (1.0, 1.0, 2.0)
    #: unsolicited SYN-ACKs received
    reflection_synacks: tuple[float, ...] = (20.0, 50.0, 100.0)
    #: the model's evidence of one kind at the minutes and hour scales, and its share of
    #: the host's packets
    model_packets: tuple[float, ...] = (20.0, 100.0, 200.0)
    #: flows a host started that raised the attack flow model's alarm, of one kind (the
    #: seconds value is unused: flows are judged at the minutes and hour scales), and
    #: their share of the flows it started (amlhp.alerts.flow_evidence)
    flow_alarms: tuple[float, ...] = (8.0, 8.0, 16.0)
    flow_min_share: float = 0.5
    #: seconds the stream waits for the flow worker's clock to pass a verdict batch
    #: before judging it without the flows still to come (0: no waiting, flows applied
    #: when they come; the flow evidence is then no longer the offline command's)
    flow_wait_s: float = 0.0
    #: ARP (amlhp.alerts.arp; not fitted: no public source holds ARP attacks): claims of
    #: an address that another MAC holds, its owner heard within ``arp_rebind_s`` (cache
    #: poisoning); distinct addresses a host asked for (an ARP sweep)
    arp_conflicts: tuple[float, ...] = (3.0, 6.0, 12.0)
    arp_rebind_s: float = 300.0
    arp_targets: tuple[float, ...] = (32.0, 64.0, 128.0)
    #: ARP bindings (address -> MAC) a gateway remembers
    max_arp: int = 4096
    # -- the three knobs fitted leaving one source out (model/results/alerts/alerts.md):
    #: factor on every behaviour threshold above; the model's minimum share of a host's
    #: packets; factor on the model's packet counts at the minutes and hour scales
    behaviour_scale: float = 1.5
    model_min_share: float = 0.7
    model_packets_scale: float = 2.0
    #: fusion: each detector's weight, the model's support of a behaviour kind
    weights: tuple[tuple[str, float], ...] = (("beaconing", 0.5),)
    model_support: float = 0.5
    support_from: float = 0.5
    name_from: float = 0.25
    disabled_detectors: frozenset[str] = frozenset()
    #: hosts whose profile a gateway keeps (least recently seen dropped first)
    max_hosts: int = 4096
    max_beacons: int = 4
    #: address pairs whose initiator a gateway remembers
    max_pairs: int = 4096
    #: peers and ports listed in an alert
    top_n: int = 5
    #: sample packet ids per alert
    samples: int = 5

    @property
    def window_ns(self) -> int:
        return int(self.window_s * 1e9)

    def weight(self, detector: str) -> float:
        return dict(self.weights).get(detector, 1.0)

    def threshold(self, name: str, scale: str = "seconds") -> float:
        """A detector's threshold at ``scale``, with the fitted factors applied."""
        value = getattr(self, name)
        if isinstance(value, tuple):
            value = value[SCALES.index(scale)]
        if name in BEHAVIOUR_THRESHOLDS:
            value *= self.behaviour_scale
        elif name == "model_packets" and scale != "seconds":
            value *= self.model_packets_scale
        return float(value)

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
