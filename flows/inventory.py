"""The device inventory: which kind of device each host is, folded from its flow verdicts.

Why a fold of counts: an entry must not depend on the order its flows were scored in, so
that the flow worker (flows close by event clock, idle timers and restarts) and the
offline path (``amlhp flows score``, ``amlhp devices --capture``) give the same inventory
for the same flows, and a re-delivered batch after a restart, skipped by the worker's
sequence marks, cannot shift it. An entry keeps:

* ``flows``: the host's flow records scored so far, ``accepted_flows`` those whose verdict
  was accepted (calibrated confidence over the model's threshold and, where explained,
  attributions consistent with the class: :mod:`amlhp.flows.refine`);
* ``votes``: accepted verdicts per class;
* the first flow's start and the latest packet (capture clock).

``device_type`` is the class with the most accepted votes (ties: the first name) when it
holds at least :data:`MIN_SHARE` of *all* the host's flows, else ``unknown``; its
``confidence`` is that share. A host the model never saw gets uncertain verdicts, or
accepted ones scattered over classes, and so stays ``unknown`` rather than a wrong name:
the seed's confidence threshold, carried from flows to hosts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final

import pyarrow as pa

from amlhp.flows.exceptions import FlowStateError
from amlhp.wire import device_schema

#: the least share of a host's flows that must name one class for the host to be that class
MIN_SHARE: Final = 0.5
UNKNOWN: Final = "unknown"
DeviceKey = tuple[str, str]  # gateway, host


@dataclass
class DeviceTally:
    """One host's entry as it stands (see the module docstring)."""

    gateway: str
    host: str
    flows: int = 0
    votes: dict[str, int] = field(default_factory=dict)
    first_ns: int = 0
    last_ns: int = 0

    @property
    def accepted(self) -> int:
        return sum(self.votes.values())

    def add(self, label: str, accepted: bool, start_ns: int, end_ns: int) -> None:
        self.flows += 1
        if accepted:
            self.votes[label] = self.votes.get(label, 0) + 1
        self.first_ns = start_ns if self.flows == 1 else min(self.first_ns, start_ns)
        self.last_ns = max(self.last_ns, end_ns)

    def ranked(self) -> list[tuple[str, int]]:
        return sorted(self.votes.items(), key=lambda kv: (-kv[1], kv[0]))

    def identity(self) -> tuple[str, float]:
        """(device type or ``unknown``, share of the host's flows that name the type)."""
        ranked = self.ranked()
        if not ranked or self.flows == 0:
            return UNKNOWN, 0.0
        name, votes = ranked[0]
        share = votes / self.flows
        return (name if share >= MIN_SHARE else UNKNOWN), share

    def record(self, model_version: str, now_ns: int | None = None) -> dict[str, Any]:
        """The entry as an ``amlhp.device`` v1 row."""
        device_type, share = self.identity()
        return {
            "gateway": self.gateway,
            "host": self.host,
            "device_type": device_type,
            "confidence": round(share, 4),
            "flows": self.flows,
            "accepted_flows": self.accepted,
            "votes": [f"{name}={n}" for name, n in self.ranked()],
            "first_seen_ns": self.first_ns,
            "last_seen_ns": self.last_ns,
            "model_version": model_version,
            "updated_at_ns": time.time_ns() if now_ns is None else now_ns,
        }

    def to_bytes(self) -> bytes:
        doc = [self.gateway, self.host, self.flows, self.votes, self.first_ns, self.last_ns]
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> DeviceTally:
        try:
            gateway, host, flows, votes, first, last = json.loads(data)
            return cls(str(gateway), str(host), int(flows), dict(votes), int(first), int(last))
        except (ValueError, TypeError) as exc:
            raise FlowStateError(f"not a device inventory entry: {exc}") from exc


def fold(
    tallies: MutableMapping[DeviceKey, DeviceTally], verdicts: pa.RecordBatch
) -> set[DeviceKey]:
    """Add flow verdicts (``amlhp.flow_verdict`` rows) to the hosts' entries; returns the
    hosts touched."""
    touched: set[DeviceKey] = set()
    cols = verdicts.to_pydict()
    for gateway, host, label, uncertain, start, end in zip(
        cols["gateway"],
        cols["device_ip"],
        cols["label"],
        cols["uncertain"],
        cols["ts_ns"],
        cols["end_ns"],
        strict=True,
    ):
        key = (str(gateway), str(host))
        tally = tallies.get(key)
        if tally is None:
            tally = tallies[key] = DeviceTally(*key)
        tally.add(str(label), not uncertain, int(start), int(end))
        touched.add(key)
    return touched


def inventory_batch(rows: Iterable[dict[str, Any]]) -> pa.RecordBatch:
    """Inventory rows -> one ``amlhp.device`` v1 batch."""
    return pa.RecordBatch.from_pylist(list(rows), schema=device_schema())


def device_headers(devices: list[tuple[int, pa.RecordBatch]]) -> dict[str, bytes]:
    """Per gateway, the :data:`~amlhp.wire.FLOW_DEVICES_HEADER` of a step's inventory
    entries: ``{host: [device type, confidence]}`` as JSON."""
    named: dict[str, dict[str, list[Any]]] = {}
    for _, batch in devices:
        for row in batch.to_pylist():
            named.setdefault(str(row["gateway"]), {})[str(row["host"])] = [
                str(row["device_type"]), float(row["confidence"]),
            ]  # fmt: skip
    return {g: json.dumps(hosts, sort_keys=True).encode() for g, hosts in named.items()}


__all__ = [
    "MIN_SHARE",
    "UNKNOWN",
    "DeviceTally",
    "device_headers",
    "fold",
    "inventory_batch",
]
