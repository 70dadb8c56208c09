"""The alert stage's state, as plain records that round-trip through JSON.

Four kinds of record, each under its own key of one table, so that the stream keeps them
in one Faust table (changelog-backed: a restarted process gets them back) and the offline
command in a dictionary, through the same code (``from_json`` copies every container it
is given: a stored value must stay what it was while the parsed object changes):

* :class:`GatewayState` per gateway: the highest tap sequence number applied (so that a
  re-delivered verdict is not counted twice), the current window, the partition and the
  wall clock of its last verdict (for idle closing), which hosts and incidents of the
  gateway are live, and the Modbus servers it has seen (field devices);
* :class:`HostWindow` per (gateway, host, role): the current window's model evidence;
* :class:`~amlhp.alerts.profile.Profile` per (gateway, host): its behaviour at three
  time scales;
* :class:`Incident` per (gateway, host, role, kind): an open incident.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def bump(counts: dict[str, int], key: str, cap: int, by: int = 1) -> None:
    """Count ``key``; a new key beyond ``cap`` distinct ones is not tracked (bounded state)."""
    if key in counts:
        counts[key] += by
    elif len(counts) < cap:
        counts[key] = by


def top(counts: dict[str, int], n: int) -> list[tuple[str, int]]:
    """The ``n`` largest counts, ties by key (deterministic)."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


@dataclass
class Evidence:
    """Malicious packets of one kind, summed: what an incident counts and reports."""

    packets: int = 0
    score_sum: float = 0.0
    first_ns: int = 0
    last_ns: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    peers: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    samples: list[int] = field(default_factory=list)
    #: the Community ID of each sample's flow (key: the sample's seq, as text)
    flows: dict[str, str] = field(default_factory=dict)
    explain_seq: int | None = None

    @property
    def mean_score(self) -> float:
        return self.score_sum / self.packets if self.packets else 0.0

    def add(
        self,
        ts_ns: int,
        seq: int,
        label: str,
        score: float,
        peer: str,
        port: int,
        *,
        cap: int,
        samples: int,
        explain_every: int,
        flow: Callable[[], str | None] | None = None,
    ) -> None:
        """Count one malicious packet; ``flow`` gives its flow's Community ID, asked only
        when the packet becomes a sample."""
        if not self.first_ns or ts_ns < self.first_ns:
            self.first_ns = ts_ns  # an incident raised by behaviour may start earlier
        self.packets += 1
        self.score_sum += score
        self.last_ns = max(self.last_ns, ts_ns)
        bump(self.classes, label, cap)
        bump(self.peers, peer, cap)
        if port >= 0:
            bump(self.ports, str(port), cap)
        if len(self.samples) < samples:
            self.samples.append(seq)
            cid = flow() if flow is not None else None
            if cid is not None:
                self.flows[str(seq)] = cid
        if self.explain_seq is None and explain_every > 0 and seq % explain_every == 0:
            self.explain_seq = seq

    def merge(self, other: Evidence) -> None:
        """Add ``other`` (evidence of another kind in the same window) into this one."""
        if not other.packets:
            return
        self.first_ns = min(self.first_ns, other.first_ns) if self.packets else other.first_ns
        self.last_ns = max(self.last_ns, other.last_ns)
        self.packets += other.packets
        self.score_sum += other.score_sum
        for mine, theirs in ((self.classes, other.classes), (self.peers, other.peers),
                             (self.ports, other.ports)):  # fmt: skip
            for key, n in theirs.items():
                mine[key] = mine.get(key, 0) + n
        self.samples = sorted({*self.samples, *other.samples})[: max(len(self.samples), 5)]
        known = {**other.flows, **self.flows}
        self.flows = {str(s): known[str(s)] for s in self.samples if str(s) in known}
        if self.explain_seq is None:
            self.explain_seq = other.explain_seq

    def copy(self) -> Evidence:
        return Evidence.from_json(copy.deepcopy(self.to_json()))

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evidence:
        values = dict(data)
        for name in ("classes", "peers", "ports"):
            values[name] = dict(data[name])
        values["samples"] = list(data["samples"])
        values["flows"] = dict(data.get("flows") or {})  # state of an older stage: none
        return cls(**values)


@dataclass
class HostWindow:
    """A host's evidence in the current window, per kind, and its behaviour counts."""

    window: int
    kinds: dict[str, Evidence] = field(default_factory=dict)
    #: distinct "peer port" pairs the host reached (scans)
    targets: list[str] = field(default_factory=list)
    #: distinct client ports the host used (connection attempts)
    attempts: list[int] = field(default_factory=list)
    #: distinct other ends (for the target role: sources of a distributed attack)
    sources: list[str] = field(default_factory=list)
    _sets: dict[str, set[Any]] = field(default_factory=dict, repr=False, compare=False)

    def note(self, name: str, value: Any, cap: int) -> int:
        """Add ``value`` to the distinct set ``name`` (bounded); returns its size."""
        values: list[Any] = getattr(self, name)
        seen = self._sets.get(name)
        if seen is None:
            seen = self._sets[name] = set(values)
        if value not in seen and len(values) < cap:
            seen.add(value)
            values.append(value)
        return len(values)

    def dominant(self) -> str:
        """The kind with the most packets in the window (ties: by name)."""
        return min(self.kinds, key=lambda k: (-self.kinds[k].packets, k))

    def to_json(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "kinds": {k: v.to_json() for k, v in self.kinds.items()},
            "targets": self.targets,
            "attempts": self.attempts,
            "sources": self.sources,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostWindow:
        return cls(
            window=int(data["window"]),
            kinds={k: Evidence.from_json(v) for k, v in data["kinds"].items()},
            targets=list(data["targets"]),
            attempts=list(data["attempts"]),
            sources=list(data["sources"]),
        )


@dataclass
class Incident:
    """An open incident: identity, counts so far, and what was last emitted."""

    incident_id: str
    gateway: str
    host: str
    role: str
    kind: str
    opened_ns: int
    model_version: str
    evidence: Evidence
    revision: int = 0
    last_emit_ns: int = 0
    #: evidence came since the last emitted revision
    dirty: bool = False
    #: the highest fused score so far (severity, confidence)
    score: float = 0.0
    #: "detector@scale" -> [kind, strongest strength, its facts]: the incident's evidence
    findings: dict[str, list[Any]] = field(default_factory=dict)
    #: an analyst's last verdict on it (``amlhp alerts-feedback``), if any
    feedback: str | None = None
    #: the allow-list rule that first covered it: its later rows stay marked, even once
    #: the rule expired or was removed (an incident is suppressed or not, not in pieces)
    suppressed_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["evidence"] = self.evidence.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Incident:
        values = dict(data)
        values["evidence"] = Evidence.from_json(values["evidence"])
        values["findings"] = {
            k: [v[0], v[1], dict(v[2])] for k, v in data.get("findings", {}).items()
        }
        return cls(**values)


@dataclass
class GatewayState:
    """Per gateway: dedupe mark, clocks, and the keys of its live windows and incidents."""

    hwm: int = -1
    window: int = -1
    last_ts_ns: int = 0
    wall_s: float = 0.0
    partition: int = 0
    hosts: list[str] = field(default_factory=list)
    open: list[str] = field(default_factory=list)
    #: "low high" address pair -> the address that sent its first packet
    pairs: dict[str, str] = field(default_factory=dict)
    #: hosts with a behaviour profile -> event time of their last packet (oldest first)
    known: dict[str, int] = field(default_factory=dict)
    #: hosts with packets in the current window (their profiles roll up at its end)
    active: list[str] = field(default_factory=list)
    #: addresses that answered Modbus/TCP requests (field devices), oldest first
    modbus_servers: list[str] = field(default_factory=list)
    #: the model of the gateway's latest verdict (names incidents raised by behaviour)
    model_version: str = ""
    #: flow evidence (:mod:`amlhp.alerts.flow_evidence`): the flow worker's event clock
    #: for this gateway as last heard (-1: never), the highest ``flow_seq`` taken, and
    #: the windows whose flows wait for the packets to leave them
    flow_clock: int = -1
    flow_seq: int = -1
    flow_windows: list[int] = field(default_factory=list)
    #: ARP (:mod:`amlhp.alerts.arp`): address -> [its MAC, event time its owner last
    #: claimed it]; MAC -> the address it claimed first without conflict (its own)
    arp: dict[str, list[Any]] = field(default_factory=dict)
    arp_own: dict[str, str] = field(default_factory=dict)
    #: commits of this gateway's state so far, and the keys the last one deleted
    version: int = 0
    deleted: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GatewayState:
        values = dict(data)
        for name in ("hosts", "open", "active", "modbus_servers", "deleted"):
            values[name] = list(data.get(name, ()))
        values["flow_windows"] = [int(w) for w in data.get("flow_windows", ())]
        values["pairs"], values["known"] = dict(data["pairs"]), dict(data.get("known", {}))
        values["arp"] = {k: list(v) for k, v in data.get("arp", {}).items()}
        values["arp_own"] = dict(data.get("arp_own", {}))
        return cls(**values)
