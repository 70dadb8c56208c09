"""Verdicts -> incidents: the one detection code of the stream and of ``amlhp alerts``.

The engine is a function of each gateway's verdicts in tap order (``seq``) and of event
time (``ts_ns``, the capture clock) only, so the micro-batching, the partition
assignment and a restart change nothing: the stream and the offline command raise the
same incidents from the same verdicts.

* **Who.** A malicious packet is credited to the host that started the conversation: the
  sender of the first packet (any decision) seen between the two addresses (the gateway
  remembers the last ``max_pairs`` pairs). That host gets the evidence in role ``source``
  and its peer in role ``target``; a scanned or brute-forced server's replies therefore
  count against the scanner, not the server. A ``target`` incident needs many distinct
  sources (a distributed attack, spoofed floods).
* **When.** Tumbling windows of ``window_s``. After each packet, the host's dominant kind
  in the window is checked against the policy (:mod:`amlhp.alerts.policy`); when it
  passes, an incident opens at once (``opened``) with the window's evidence of that kind.
* **Then.** Every later malicious packet of that kind from the host counts. At a window
  boundary an incident that got packets is revised (``updated``) at most every
  ``update_s``; one without packets for ``quiet_s`` is ``closed``. :meth:`flush` closes
  the rest (end of input, or a gateway idle on the wall clock in the stream).
* **Once.** A verdict whose ``seq`` is not above the gateway's mark is a re-delivery and
  is skipped (counted in :attr:`Engine.duplicates`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from amlhp.alerts.policy import AlertPolicy, kind_of
from amlhp.alerts.state import Evidence, GatewayState, HostWindow, Incident, top
from amlhp.wire import alert_schema

SOURCE, TARGET = "source", "target"
Table = MutableMapping[str, Any]


@dataclass
class Store:
    """Where the state lives: three mappings of JSON values (dicts, or Faust tables)."""

    gateways: Table = field(default_factory=dict)
    windows: Table = field(default_factory=dict)
    incidents: Table = field(default_factory=dict)


def incident_id(gateway: str, host: str, role: str, kind: str, first_ns: int) -> str:
    """A stable id: the same incident has the same id in the stream and offline."""
    text = f"{gateway}|{host}|{role}|{kind}|{first_ns}"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class _Session:
    """The records one batch touches, loaded once and written back once (one changelog
    record per key and batch, not per packet)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.gateways: dict[str, GatewayState] = {}
        self.windows: dict[str, HostWindow | None] = {}
        self.incidents: dict[str, Incident | None] = {}

    def gateway(self, key: str) -> GatewayState:
        if key not in self.gateways:
            raw = self.store.gateways.get(key)
            self.gateways[key] = GatewayState.from_json(raw) if raw else GatewayState()
        return self.gateways[key]

    def window(self, key: str) -> HostWindow | None:
        if key not in self.windows:
            raw = self.store.windows.get(key)
            self.windows[key] = HostWindow.from_json(raw) if raw else None
        return self.windows[key]

    def incident(self, key: str) -> Incident | None:
        if key not in self.incidents:
            raw = self.store.incidents.get(key)
            self.incidents[key] = Incident.from_json(raw) if raw else None
        return self.incidents[key]

    def commit(self) -> None:
        for key, gw in self.gateways.items():
            self.store.gateways[key] = gw.to_json()
        for table, values in (
            (self.store.windows, self.windows),
            (self.store.incidents, self.incidents),
        ):
            for key, value in values.items():
                if value is not None:
                    table[key] = value.to_json()
                elif key in table:
                    del table[key]


@dataclass(frozen=True)
class _Rows:
    """The columns of one gateway's new verdicts, in seq order, as Python lists."""

    seq: list[int]
    ts: list[int]
    window: list[int]
    malicious: list[bool]
    label: list[str]
    score: list[float]
    src: list[str | None]
    dst: list[str | None]
    sport: list[int]
    dport: list[int]
    model_version: list[str]


def _ints(column: pa.ChunkedArray | pa.Array, missing: int = -1) -> np.ndarray:
    """An integer column as int64, nulls as ``missing`` (unsigned columns included)."""
    return np.asarray(
        pc.fill_null(column.cast(pa.int64()), missing).to_numpy(zero_copy_only=False), np.int64
    )


class Engine:
    """Incident detection over verdict batches (see the module docstring)."""

    def __init__(
        self, policy: AlertPolicy, store: Store | None = None, model_version: str = ""
    ) -> None:
        self.policy = policy
        self.store = store if store is not None else Store()
        self.model_version = model_version
        self.duplicates = 0
        self._session: _Session | None = None
        self._out: list[dict[str, Any]] = []

    # -- entry points ------------------------------------------------------------------
    def process(
        self, batch: pa.RecordBatch | pa.Table, *, partition: int = 0, wall_s: float | None = None
    ) -> list[dict[str, Any]]:
        """Apply one batch of verdicts; returns the alert rows it raised."""
        wall = time.time() if wall_s is None else wall_s
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        self._session = _Session(self.store)
        self._out = []
        try:
            gateways = table.column("gateway").to_numpy(zero_copy_only=False).astype(str)
            for gateway in dict.fromkeys(gateways.tolist()):
                part = table.filter(pa.array(gateways == gateway))
                self._gateway_rows(str(gateway), part, partition, wall)
            self._session.commit()
        finally:
            self._session = None
        return self._out

    def flush(self, gateway: str, reason: str) -> list[dict[str, Any]]:
        """Close every open incident of ``gateway`` and drop its windows."""
        self._session = _Session(self.store)
        self._out = []
        try:
            self._flush_gateway(gateway, self._session.gateway(gateway), reason)
            self._session.commit()
        finally:
            self._session = None
        return self._out

    def flush_all(self, reason: str) -> list[dict[str, Any]]:
        """:meth:`flush` of every gateway (the offline command at end of input)."""
        out: list[dict[str, Any]] = []
        for gateway in sorted(self.store.gateways.keys()):
            out += self.flush(gateway, reason)
        return out

    def idle(self, partition: int, wall_s: float) -> list[dict[str, Any]]:
        """Flush the gateways of ``partition`` with live state and no verdict for
        ``idle_close_s`` on the wall clock (the stream's clock ticks call this)."""
        out: list[dict[str, Any]] = []
        for gateway, raw in list(self.store.gateways.items()):
            gw = GatewayState.from_json(raw)
            if gw.partition != partition or not (gw.open or gw.hosts):
                continue
            if wall_s - gw.wall_s >= self.policy.idle_close_s:
                out += self.flush(gateway, "idle")
        return out

    # -- one gateway -------------------------------------------------------------------
    def _rows(self, part: pa.Table, gw: GatewayState) -> _Rows | None:
        part = part.sort_by("seq")
        seq = _ints(part.column("seq"))
        new = seq > gw.hwm
        self.duplicates += int((~new).sum())
        if not new.any():
            return None
        part = part.filter(pa.array(new))
        seq = seq[new]
        ts = _ints(part.column("ts_ns"), 0)
        window = np.maximum.accumulate(np.maximum(ts // self.policy.window_ns, gw.window))
        decision = part.column("decision").to_numpy(zero_copy_only=False)
        versions = (
            part.column("model_version").to_pylist()
            if "model_version" in part.column_names
            else [self.model_version] * part.num_rows
        )
        score = pc.fill_null(part.column("malicious_score"), 0.0).to_numpy(zero_copy_only=False)
        return _Rows(
            seq=seq.tolist(),
            ts=ts.tolist(),
            window=window.tolist(),
            malicious=self._evidence(decision, score).tolist(),
            label=[str(x) for x in part.column("label").to_pylist()],
            score=score.astype(float).tolist(),
            src=part.column("src_ip").to_pylist(),
            dst=part.column("dst_ip").to_pylist(),
            sport=_ints(part.column("src_port")).tolist(),
            dport=_ints(part.column("dst_port")).tolist(),
            model_version=[v or self.model_version for v in versions],
        )

    def _evidence(self, decision: np.ndarray, score: np.ndarray) -> np.ndarray:
        """Which verdicts count as malicious evidence (see :mod:`amlhp.alerts.policy`)."""
        evidence = decision == "malicious"
        if self.policy.count_uncertain:
            evidence |= (decision == "uncertain") & (score >= self.policy.min_score)
        return evidence

    def _gateway_rows(self, gateway: str, part: pa.Table, partition: int, wall: float) -> None:
        assert self._session is not None
        gw = self._session.gateway(gateway)
        gw.partition, gw.wall_s = partition, wall
        rows = self._rows(part, gw)
        if rows is None:
            return
        pairs, cap = gw.pairs, self.policy.max_pairs
        for i, window in enumerate(rows.window):
            if window > gw.window:
                self._advance(gateway, gw, window)
            src, dst = rows.src[i], rows.dst[i]
            if src is None or dst is None:
                continue
            pair = f"{src} {dst}" if src < dst else f"{dst} {src}"
            initiator = pairs.get(pair)
            if initiator is None:
                initiator = pairs[pair] = src
                if len(pairs) > cap:  # forget the oldest pair (insertion order)
                    del pairs[next(iter(pairs))]
            if rows.malicious[i]:
                self._add(gateway, gw, rows, i, initiator == src)
        gw.hwm = rows.seq[-1]
        gw.last_ts_ns = max(gw.last_ts_ns, max(rows.ts))

    def _advance(self, gateway: str, gw: GatewayState, window: int) -> None:
        """Event time entered ``window``: revise or close open incidents, drop windows."""
        assert self._session is not None
        start = window * self.policy.window_ns
        quiet, update = int(self.policy.quiet_s * 1e9), int(self.policy.update_s * 1e9)
        still = []
        for key in gw.open:
            inc = self._session.incident(key)
            if inc is None:
                continue
            if inc.evidence.last_ns + quiet <= start:
                self._emit(inc, "closed", "quiet", start)
                self._session.incidents[key] = None
                continue
            if inc.dirty and start - inc.last_emit_ns >= update:
                self._emit(inc, "updated", "update", start)
            still.append(key)
        gw.open = still
        for key in gw.hosts:
            self._session.windows[key] = None
        gw.hosts = []
        gw.window = window

    def _flush_gateway(self, gateway: str, gw: GatewayState, reason: str) -> None:
        assert self._session is not None
        for key in gw.open:
            inc = self._session.incident(key)
            if inc is not None:
                self._emit(inc, "closed", reason, max(gw.last_ts_ns, inc.evidence.last_ns))
                self._session.incidents[key] = None
        for key in gw.hosts:
            self._session.windows[key] = None
        gw.open, gw.hosts = [], []

    def _add(self, gateway: str, gw: GatewayState, rows: _Rows, i: int, from_src: bool) -> None:
        """Credit a malicious packet to its conversation's initiator and to the other end."""
        src, dst = str(rows.src[i]), str(rows.dst[i])
        host, peer = (src, dst) if from_src else (dst, src)
        service, client = (
            (rows.dport[i], rows.sport[i]) if from_src else (rows.sport[i], rows.dport[i])
        )
        self._credit(gateway, gw, rows, i, (host, SOURCE, peer), service, client)
        self._credit(gateway, gw, rows, i, (peer, TARGET, host), service, client)

    def _credit(
        self,
        gateway: str,
        gw: GatewayState,
        rows: _Rows,
        i: int,
        who: tuple[str, str, str],
        service_port: int,
        client_port: int,
    ) -> None:
        host, role, peer = who
        assert self._session is not None
        p = self.policy
        key = f"{gateway}|{host}|{role}"
        hw = self._session.window(key)
        if hw is None:
            hw = self._session.windows[key] = HostWindow(window=gw.window)
            gw.hosts.append(key)
        label, kind = rows.label[i], kind_of(rows.label[i])
        packet = (rows.ts[i], rows.seq[i], label, rows.score[i], peer, service_port)
        options = {"cap": p.max_tracked, "samples": p.samples, "explain_every": p.explain_every}
        evidence = hw.kinds.setdefault(kind, Evidence())
        evidence.add(*packet, **options)  # type: ignore[arg-type]
        targets = hw.note("targets", f"{peer} {service_port}", p.max_tracked)
        attempts = (
            hw.note("attempts", client_port, p.max_tracked)
            if client_port >= 0
            else len(hw.attempts)
        )
        sources = hw.note("sources", peer, p.max_tracked)
        ikey = f"{key}|{kind}"
        inc = self._session.incident(ikey) if ikey in gw.open else None
        if inc is not None:
            inc.evidence.add(*packet, **options)  # type: ignore[arg-type]
            inc.dirty = True
            return
        if (
            evidence.packets < p.min_packets
            or evidence.mean_score < p.min_score
            or hw.dominant() != kind
            or not p.behaviour_passes(kind, targets, attempts, evidence.packets)
            or (role == TARGET and sources < p.target_min_sources)
        ):
            return
        first = evidence.copy()
        inc = Incident(
            incident_id=incident_id(gateway, host, role, kind, first.first_ns),
            gateway=gateway,
            host=host,
            role=role,
            kind=kind,
            opened_ns=rows.ts[i],
            model_version=rows.model_version[i],
            evidence=first,
        )
        self._session.incidents[ikey] = inc
        gw.open.append(ikey)
        self._emit(inc, "opened", "threshold", rows.ts[i], first_row=True)

    def _emit(
        self, inc: Incident, status: str, reason: str, ts_ns: int, first_row: bool = False
    ) -> None:
        if not first_row:
            inc.revision += 1
        inc.last_emit_ns, inc.dirty = ts_ns, False
        self._out.append(alert_row(inc, status, reason, ts_ns, self.policy.top_n))


def alert_row(inc: Incident, status: str, reason: str, ts_ns: int, top_n: int) -> dict[str, Any]:
    """One ``amlhp.alert`` row: the incident's whole state at this revision."""
    ev = inc.evidence
    classes = top(ev.classes, len(ev.classes))
    peers, ports = top(ev.peers, top_n), top(ev.ports, top_n)
    return {
        "gateway": inc.gateway,
        "ts_ns": ts_ns,
        "incident_id": inc.incident_id,
        "revision": inc.revision,
        "status": status,
        "reason": reason,
        "host": inc.host,
        "role": inc.role,
        "kind": inc.kind,
        "first_seen_ns": ev.first_ns,
        "last_seen_ns": ev.last_ns,
        "opened_ns": inc.opened_ns,
        "packets": ev.packets,
        "mean_score": ev.mean_score,
        "classes": [c for c, _ in classes],
        "class_packets": [n for _, n in classes],
        "top_peers": [c for c, _ in peers],
        "top_peer_packets": [n for _, n in peers],
        "top_ports": [int(c) for c, _ in ports],
        "top_port_packets": [n for _, n in ports],
        "distinct_peers": len(ev.peers),
        "distinct_ports": len(ev.ports),
        "sample_seqs": list(ev.samples),
        "explanation_seq": ev.explain_seq,
        "model_version": inc.model_version,
        "emitted_at_ns": time.time_ns(),
    }


def alert_batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    """Alert rows -> one ``amlhp.alert`` v1 batch."""
    return pa.RecordBatch.from_pylist(rows, schema=alert_schema())
