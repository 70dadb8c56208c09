"""Where the alert stage's state lives, and how one commit of it stays exact after a stop.

All state is one mapping (a dict offline, one Faust table in the stream: one changelog,
one partition per gateway, written in order) of four kinds of record, by key prefix:
``g|gateway`` (:class:`~amlhp.alerts.state.GatewayState`), ``w|gateway|host|role``
(:class:`~amlhp.alerts.state.HostWindow`), ``p|gateway|host``
(:class:`~amlhp.alerts.profile.Profile`), ``i|gateway|host|role|kind``
(:class:`~amlhp.alerts.state.Incident`) and ``f|gateway|window`` (flows waiting for their
window: :class:`~amlhp.alerts.flow_evidence.FlowWindow`). See :class:`Session` for the
commit protocol.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from amlhp.alerts.profile import Profile
from amlhp.alerts.state import GatewayState, HostWindow, Incident

Table = MutableMapping[str, Any]
#: key prefixes of the kinds of record in the one state table; the gateway's last
GATEWAY, WINDOW, PROFILE, INCIDENT, FLOWS = "g", "w", "p", "i", "f"


@dataclass
class Store:
    """Where the state lives: one mapping of JSON values (a dict, or a Faust table).

    Each value is ``{"m": mark, "v": value, "p": value before}``: the mark of the batch
    that last wrote it, and what it held before that batch (see :class:`_Session`)."""

    state: Table = field(default_factory=dict)

    def gateways(self) -> list[str]:
        return sorted(k[2:] for k in list(self.state.keys()) if k.startswith(GATEWAY + "|"))

    def incidents(self) -> list[str]:
        """Keys (gateway|host|role|kind) of the incidents open in this store."""
        out = []
        for key in list(self.state.keys()):
            if key.startswith(INCIDENT + "|"):
                raw = self.state.get(key)
                if raw and raw.get("v") is not None:
                    out.append(key[2:])
        return out


class Session:
    """The records one commit of one gateway touches, loaded once and written back once
    (one changelog record per key and batch, not per packet).

    **Exact after any stop.** Every commit of a gateway has a number (its record's
    ``version`` + 1). A record it writes keeps that number and its value before the
    commit; the gateway record, holding the number and the sequence mark, is written
    last. Should the process stop after some records of a commit reached the changelog
    but not the gateway record, the same verdicts come again, and a record whose number
    is above the gateway's is read as it was *before* that commit: re-applying the batch
    gives the same values, never twice the counts, and nothing is lost. Deleted records
    leave a marker until the gateway's next commit."""

    def __init__(self, store: Store, gateway: str) -> None:
        self.store, self.gateway = store, gateway
        self.base: dict[str, Any] = {}
        self.values: dict[str, Any] = {}
        raw = store.state.get(f"{GATEWAY}|{gateway}")
        self.gw = GatewayState.from_json(raw["v"]) if raw else GatewayState()
        self.version = self.gw.version + 1
        for key in self.gw.deleted:  # the last commit's markers: its gateway record landed
            raw = store.state.get(key)
            if raw is not None and raw["m"] <= self.gw.version:
                del store.state[key]
        self.gw.deleted = []

    def _get(self, key: str, parse: Any) -> Any:
        if key not in self.values:
            raw = self.store.state.get(key)
            if raw is None:
                value = None
            elif raw["m"] > self.gw.version:  # written by a commit that did not finish
                value = raw["p"]
            else:
                value = raw["v"]
            self.base[key] = value
            self.values[key] = parse(value) if value is not None else None
        return self.values[key]

    def window(self, key: str) -> HostWindow | None:
        return self._get(f"{WINDOW}|{key}", HostWindow.from_json)

    def incident(self, key: str) -> Incident | None:
        return self._get(f"{INCIDENT}|{key}", Incident.from_json)

    def profile(self, host: str) -> Profile:
        key = f"{PROFILE}|{self.gateway}|{host}"
        prof = self._get(key, Profile.from_json)
        if prof is None:
            prof = self.values[key] = Profile()
        return prof

    def flow_window(self, window: int) -> Any:
        """The flows ending in ``window`` (:class:`~amlhp.alerts.flow_evidence.FlowWindow`,
        created empty)."""
        from amlhp.alerts.flow_evidence import FlowWindow

        key = f"{FLOWS}|{self.gateway}|{window}"
        flows = self._get(key, FlowWindow.from_json)
        if flows is None:
            flows = self.values[key] = FlowWindow()
        return flows

    def drop_flow_window(self, window: int) -> None:
        self.put(FLOWS, f"{self.gateway}|{window}", None)

    def put(self, prefix: str, key: str, value: Any) -> None:
        full = f"{prefix}|{key}"
        if full not in self.values:
            self._get(full, lambda v: v)  # record its base
        self.values[full] = value

    def commit(self) -> None:
        state = self.store.state
        for key, value in self.values.items():
            data = value.to_json() if value is not None else None
            base = self.base.get(key)
            if data is None and base is None:
                if key in state:
                    del state[key]
                continue
            state[key] = {"m": self.version, "v": data, "p": base}
            if data is None:
                self.gw.deleted.append(key)
        self.gw.version = self.version
        # last: see the class docstring
        state[f"{GATEWAY}|{self.gateway}"] = {"m": self.version, "v": self.gw.to_json()}
