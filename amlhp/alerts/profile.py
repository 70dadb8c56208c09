"""A host's behaviour at three time scales, in bounded state that round-trips through JSON.

The behaviour detectors (:mod:`amlhp.alerts.detectors`) judge a host by what it did over
seconds (floods), minutes (scans, brute force) and about an hour (low-and-slow guessing,
slow scans, beacons). One :class:`Tally` per scale holds the counts they read:

* the **seconds** tally is the gateway's current window (``window_s``, 10 s): every packet
  the host starts or answers updates it, with exact (capped) sets of the peers and ports
  it reached;
* at each window boundary the window's tally is **rolled up** into the **minutes** tally
  (``minutes_s``, 5 min, tumbling on event time) and the **hour** tally (``hour_s``), whose
  distinct peers and ports are HyperLogLog sketches (Apache DataSketches, lg_k 6: at most
  72 bytes each, about 8% error at 60 values, 13% beyond), so that a host that reaches
  50,000 addresses in an hour costs what one that reaches 50 does. Within a window, sets
  switch to a sketch past :data:`EXACT` values; the capped maps (services, DNS domains)
  keep 8 and 4 keys, the beacon statistics ``max_beacons`` (4) peers.

Packets are counted from the point of view of the host that *started* the conversation
(the sender of the first packet seen between the two addresses): its own packets are
``out``, its peers' answers are ``in``. A scanner's probes and the RSTs it gets back both
land in the scanner's tally. Unsolicited packets a host *receives* (the sender started
the conversation) are counted in its ``recv`` counts (floods and reflection aimed at it).

The beacon statistics (per peer and port: connection starts, the mean and spread of the
intervals between them, Welford's running sums) live in the hour tally only, capped at
``max_beacons`` peers.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Final

import datasketches as ds

HLL_LG_K: Final = 6
_HLL: Final = ds.tgt_hll_type.HLL_4
#: distinct values kept exactly in a window before a sketch takes over
EXACT: Final = 32
#: the distinct counts the minutes and hour tallies keep (``names`` and ``senders`` only
#: matter within a window)
ROLLED: Final = ("dsts", "lan", "ports", "arp_targets")
COUNTS: Final = (
    "out", "inn", "syn", "synack", "refused", "recv", "dns", "dns_long", "modbus_requests",
    "modbus_writes", "modbus_diag", "modbus_exceptions", "field_requests", "field_lateral",
    "recv_synack", "flows", "arp_requests", "arp_conflicts",
)  # fmt: skip
#: Modbus function codes that change a device (writes) or restart/diagnose it
MODBUS_WRITES: Final = frozenset({5, 6, 15, 16, 22, 23})
MODBUS_DIAGNOSTICS: Final = frozenset({8})


@dataclass
class Tally:
    """What a host did in one window of one scale (see the module docstring)."""

    window: int = -1
    out: int = 0  # packets the host sent in conversations it started
    inn: int = 0  # packets it got back in them
    syn: int = 0  # TCP connection attempts (SYN without ACK)
    synack: int = 0  # ... answered (SYN-ACK back)
    refused: int = 0  # ... refused (RST back) or unreachable (ICMP type 3 back)
    recv: int = 0  # unsolicited packets received (the sender started the conversation)
    first_ns: int = 0
    last_ns: int = 0
    #: "peer port" -> connection attempts, for brute force (capped)
    services: dict[str, int] = field(default_factory=dict)
    dns: int = 0  # DNS queries sent
    dns_long: int = 0  # ... with a long (or cut) name or a long label
    dns_entropy: float = 0.0  # sum over queries of the first label's Shannon entropy
    #: DNS base domain -> queries (capped)
    domains: dict[str, int] = field(default_factory=dict)
    modbus_requests: int = 0  # Modbus/TCP requests the host sent
    modbus_writes: int = 0  # ... of them writes
    modbus_diag: int = 0  # ... diagnostics (FC 8: restart communications)
    modbus_exceptions: int = 0  # exception replies it got
    field_requests: int = 0  # requests sent by a host that is itself a Modbus server
    field_lateral: int = 0  # TCP connections a Modbus server started, not to port 502
    recv_synack: int = 0  # unsolicited SYN-ACKs received (reflection backscatter)
    #: the model's evidence credited to the host: kind -> [packets, sum of scores]
    evidence: dict[str, list[float]] = field(default_factory=dict)
    flows: int = 0  # flow records the host started (the flow worker's verdicts)
    #: ... of them raising the attack flow model's alarm: kind -> [flows, sum of scores]
    flow_alarms: dict[str, list[float]] = field(default_factory=dict)
    arp_requests: int = 0  # ARP requests the host sent (its targets: the ``arp_targets`` set)
    #: claims of an address another MAC holds (amlhp.alerts.arp), the last claiming MAC
    #: and the last address it claimed
    arp_conflicts: int = 0
    arp_mac: str = ""
    arp_claimed: str = ""
    #: exact distinct sets (seconds) or HLL sketches (minutes, hour): ``dsts`` peers
    #: reached, ``lan`` ... of them private, ``ports`` service ports reached ("p<proto>"
    #: without ports), ``names`` DNS names, ``senders`` of unsolicited packets,
    #: ``arp_targets`` addresses asked for by ARP
    sets: dict[str, set[str]] = field(default_factory=dict)
    sketches: dict[str, Any] = field(default_factory=dict)
    #: "peer port" -> [starts, last_ns, mean_gap_ns, m2] (hour tally only)
    beacons: dict[str, list[float]] = field(default_factory=dict)

    def distinct(self, name: str) -> int:
        """Distinct values of ``name``: exact for a set, the estimate for a sketch."""
        if name in self.sets:
            return len(self.sets[name])
        sketch = self.sketches.get(name)
        return round(sketch.get_estimate()) if sketch is not None else 0

    def note(self, name: str, value: str, cap: int) -> None:
        """Count ``value`` as distinct ``name``: exactly up to :data:`EXACT` values, then
        in a sketch (a scanner's window costs what a quiet host's does)."""
        seen = self.sets.get(name)
        if seen is None:
            sketch = self.sketches.get(name)
            if sketch is not None:
                sketch.update(value)
                return
            seen = self.sets[name] = set()
        seen.add(value)
        if len(seen) > min(cap, EXACT):
            sketch = self.sketches[name] = ds.hll_sketch(HLL_LG_K, _HLL)
            for item in sorted(self.sets.pop(name)):  # one order: the estimate depends on it
                sketch.update(item)

    def absorb(self, other: Tally) -> None:
        """Add ``other`` (a closed seconds window) into this minutes or hour tally."""
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.dns_entropy += other.dns_entropy
        if other.arp_mac:
            self.arp_mac, self.arp_claimed = other.arp_mac, other.arp_claimed
        if other.first_ns:
            self.first_ns = min(self.first_ns or other.first_ns, other.first_ns)
            self.last_ns = max(self.last_ns, other.last_ns)
        for mine_all, theirs_all in ((self.evidence, other.evidence),
                                     (self.flow_alarms, other.flow_alarms)):  # fmt: skip
            for kind, (n, total) in theirs_all.items():
                mine = mine_all.setdefault(kind, [0, 0.0])
                mine[0] += n
                mine[1] += total
        for counts, theirs, cap in ((self.services, other.services, 8),
                                    (self.domains, other.domains, 4)):  # fmt: skip
            for key, n in theirs.items():
                if key in counts or len(counts) < cap:
                    counts[key] = counts.get(key, 0) + n
        for name in ROLLED:
            values, sketch = other.sets.get(name), other.sketches.get(name)
            if values is None and sketch is None:
                continue
            mine_sketch = self.sketches.get(name)
            if mine_sketch is None:
                mine_sketch = self.sketches[name] = ds.hll_sketch(HLL_LG_K, _HLL)
            for value in sorted(values or ()):
                mine_sketch.update(value)
            if sketch is not None:
                union = ds.hll_union(HLL_LG_K)
                union.update(mine_sketch)
                union.update(sketch)
                self.sketches[name] = union.get_result(_HLL)

    def to_json(self) -> dict[str, Any]:
        """Only what differs from an empty tally (most hosts use few of the counts)."""
        data = {k: v for k, v in self.__dict__.items()
                if v and k not in ("sets", "sketches")}  # fmt: skip
        data["window"] = self.window
        if self.sets:
            data["sets"] = {k: sorted(v) for k, v in self.sets.items()}
        if self.sketches:
            data["sketches"] = {
                k: base64.b64encode(v.serialize_compact()).decode()
                for k, v in self.sketches.items()
            }
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tally:
        values = dict(data)
        for name in ("services", "domains"):
            values[name] = dict(data.get(name, {}))
        values["evidence"] = {k: list(v) for k, v in data.get("evidence", {}).items()}
        values["flow_alarms"] = {k: list(v) for k, v in data.get("flow_alarms", {}).items()}
        values["beacons"] = {k: list(v) for k, v in data.get("beacons", {}).items()}
        values["sets"] = {k: set(v) for k, v in data.get("sets", {}).items()}
        values["sketches"] = {
            k: ds.hll_sketch.deserialize(base64.b64decode(v))
            for k, v in data.get("sketches", {}).items()
        }
        return cls(**values)


@dataclass
class Profile:
    """One host's tallies: the current seconds window, the minutes and the hour."""

    seconds: Tally = field(default_factory=Tally)
    minutes: Tally = field(default_factory=Tally)
    hour: Tally = field(default_factory=Tally)
    #: event time of the host's last packet (idle hosts are evicted)
    last_ns: int = 0
    #: packets in the seconds window at the last evaluation (see Engine)
    evaluated_at: int = 0

    def roll_up(self, minutes_window: int, hour_window: int) -> None:
        """Close the seconds window: add it to the minutes and hour tallies (each starts
        afresh when event time entered a new window of its scale)."""
        closed = self.seconds
        for name, window in (("minutes", minutes_window), ("hour", hour_window)):
            tally: Tally = getattr(self, name)
            if tally.window != window:
                beacons = tally.beacons if name == "hour" else {}
                tally = Tally(window=window)
                # a beacon's rhythm outlives the hour boundary: its running stats carry on
                tally.beacons = {k: v for k, v in beacons.items() if v[0] > 1}
                setattr(self, name, tally)
            tally.absorb(closed)
        self.seconds = Tally()
        self.evaluated_at = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds.to_json(),
            "minutes": self.minutes.to_json(),
            "hour": self.hour.to_json(),
            "last_ns": self.last_ns,
            "evaluated_at": self.evaluated_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Profile:
        return cls(
            seconds=Tally.from_json(data["seconds"]),
            minutes=Tally.from_json(data["minutes"]),
            hour=Tally.from_json(data["hour"]),
            last_ns=int(data["last_ns"]),
            evaluated_at=int(data["evaluated_at"]),
        )


def beacon(beacons: dict[str, list[float]], key: str, ts_ns: int, cap: int) -> None:
    """One connection start to ``key``: update its interval statistics (Welford)."""
    stats = beacons.get(key)
    if stats is None:
        if len(beacons) < cap:
            beacons[key] = [1, ts_ns, 0.0, 0.0]
        return
    starts, last, mean, m2 = stats
    gap = ts_ns - last
    if gap <= 0:
        return
    n = starts  # intervals after this one
    delta = gap - mean
    mean += delta / n
    m2 += delta * (gap - mean)
    stats[:] = [starts + 1, ts_ns, mean, m2]
