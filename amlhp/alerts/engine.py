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
* **Behaviour.** Every packet also updates the behaviour tallies of the host that started
  its conversation (:mod:`amlhp.alerts.observe`, :mod:`amlhp.alerts.profile`). A host's
  detectors (:mod:`amlhp.alerts.detectors`) run over its seconds tally when its packets in
  the window reach 16, 32, 64, ... and at the window's end over all three scales; their
  findings and the model's are fused (:mod:`amlhp.alerts.fusion`) into the kind to raise,
  a score, severity, confidence and ATT&CK ids. Behaviour that keeps firing keeps its
  incident open. ARP frames (unscored rows) feed the ARP tallies (:mod:`amlhp.alerts.arp`).
* **Once.** A verdict whose ``seq`` is not above the gateway's mark is a re-delivery and
  is skipped (counted in :attr:`Engine.duplicates`).
* **Atomic.** All state is one mapping (one Faust table in the stream) and a batch
  writes its gateway record, which holds the mark, *after* every other record it
  changed: the table's changelog is one partition per gateway, written in order, so a
  stop between two writes leaves the mark behind the data, never ahead of it (the data
  written past the mark are re-applied over themselves by key, so they come back equal).
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa

from amlhp.alerts import flow_evidence, observe
from amlhp.alerts.arp import observe_arp
from amlhp.alerts.columns import Rows, verdict_rows
from amlhp.alerts.detectors import SCALES, Finding, run_detectors
from amlhp.alerts.fusion import MODEL, Verdict, first_seen, fuse, note_verdict
from amlhp.alerts.kinds import kind_of
from amlhp.alerts.policy import AlertPolicy
from amlhp.alerts.profile import Profile
from amlhp.alerts.record import alert_batch as alert_batch
from amlhp.alerts.record import alert_row, incident_id
from amlhp.alerts.state import Evidence, GatewayState, HostWindow, Incident
from amlhp.alerts.store import GATEWAY, INCIDENT, PROFILE, WINDOW, Session, Store
from amlhp.alerts.suppression import Suppressions
from amlhp.encoders.community_id import community_id

SOURCE, TARGET = "source", "target"
#: a host's detectors run when its packets in the window reach these counts
TRIGGERS = frozenset(1 << k for k in range(4, 40))


class Engine:
    """Incident detection over verdict batches (see the module docstring)."""

    def __init__(
        self, policy: AlertPolicy, store: Store | None = None, model_version: str = ""
    ) -> None:
        self.policy = policy
        self.store = store if store is not None else Store()
        self.model_version = model_version
        #: (gateway, host) -> (device type, confidence): the device inventory as last
        #: read (:mod:`amlhp.pipeline.devices`); each row names its host's entry, if any
        self.devices: dict[tuple[str, str], tuple[str, float]] = {}
        self.duplicates = 0
        #: the operator's allow-list: each row names the rule that covers it, if any
        self.suppressions: Suppressions | None = None
        #: the stream's order: rows out first, state after (see :meth:`process`)
        self.defer_commit = False
        self.pending: list[Session] = []
        self._s: Session | None = None
        self._out: list[dict[str, Any]] = []
        p = policy
        self._observe: dict[str, Any] = {
            "cap": p.max_tracked,
            "beacons": p.max_beacons,
            "long_label": p.dns_long_label,
            "min_entropy": p.dns_min_entropy,
        }

    # -- entry points ------------------------------------------------------------------
    def process(
        self, batch: pa.RecordBatch | pa.Table, *, partition: int = 0, wall_s: float | None = None
    ) -> list[dict[str, Any]]:
        """Apply one batch of verdicts; returns the alert rows it raised.

        With ``defer_commit`` set, the state changes wait in :attr:`pending` until
        :meth:`commit`: the stream publishes the rows first and writes the state after, so
        that a stop between the two re-delivers the batch (the rows come again, with the
        same ids and revisions) rather than keeping state whose rows were never sent."""
        wall = time.time() if wall_s is None else wall_s
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        self._out = []
        gateways = table.column("gateway").to_numpy(zero_copy_only=False).astype(str)
        for gateway in dict.fromkeys(gateways.tolist()):
            part = table.filter(pa.array(gateways == gateway))
            self._s = Session(self.store, str(gateway))
            try:
                if self._gateway_rows(str(gateway), part, partition, wall):
                    self.settle(self._s)
            finally:
                self._s = None
        return self._out

    def flush(self, gateway: str, reason: str) -> list[dict[str, Any]]:
        """Judge every active host of ``gateway`` once more, then close its incidents."""
        self._out = []
        self._s = Session(self.store, gateway)
        try:
            self._close_window(gateway, self._s.gw)
            self._flush_gateway(self._s.gw, reason)
            self.settle(self._s)
        finally:
            self._s = None
        return self._out

    def flows(self, gateway: str, batch: pa.RecordBatch | pa.Table | None, clock_ns: int) -> int:
        """Take a gateway's flow verdicts and the flow worker's clock for it
        (:mod:`amlhp.alerts.flow_evidence`); returns the flows dropped (too many wait)."""
        session = Session(self.store, gateway)
        dropped = flow_evidence.take(session, batch, clock_ns, self.policy.window_ns)
        self.settle(session)
        return dropped

    def flow_clock(self, gateway: str) -> int:
        """The flow worker's clock for the gateway as last told (-1: never): every flow
        ending by then has been taken, and packets up to it may be judged."""
        raw = self.store.state.get(f"{GATEWAY}|{gateway}")
        return int(raw["v"].get("flow_clock", -1)) if raw else -1

    def settle(self, session: Session) -> None:
        """A session's work is done: commit it now, or with :meth:`commit` (stream)."""
        if self.defer_commit:
            self.pending.append(session)
        else:
            session.commit()

    def commit(self) -> None:
        """Write the state of the batches processed since the last commit (see
        :meth:`process`)."""
        for session in self.pending:
            session.commit()
        self.pending = []

    def flush_all(self, reason: str) -> list[dict[str, Any]]:
        """:meth:`flush` of every gateway (the offline command at end of input)."""
        out: list[dict[str, Any]] = []
        for gateway in self.store.gateways():
            out += self.flush(gateway, reason)
        return out

    def idle(self, partition: int, wall_s: float) -> list[dict[str, Any]]:
        """Flush the gateways of ``partition`` with live state and no verdict for
        ``idle_close_s`` on the wall clock (the stream's clock ticks call this)."""
        out: list[dict[str, Any]] = []
        for gateway in self.store.gateways():
            raw = self.store.state.get(f"{GATEWAY}|{gateway}")
            if raw is None:
                continue
            gw = GatewayState.from_json(raw["v"])
            if gw.partition != partition or not (gw.open or gw.hosts or gw.active):
                continue
            if wall_s - gw.wall_s >= self.policy.idle_close_s:
                out += self.flush(gateway, "idle")
        return out

    # -- one gateway -------------------------------------------------------------------
    def _gateway_rows(self, gateway: str, part: pa.Table, partition: int, wall: float) -> bool:
        assert self._s is not None
        s, gw = self._s, self._s.gw
        gw.partition, gw.wall_s = partition, wall
        rows, duplicates = verdict_rows(part, gw, self.policy, self.model_version)
        self.duplicates += duplicates
        if rows is None:
            return False
        pairs, cap, known = gw.pairs, self.policy.max_pairs, gw.known
        servers = set(gw.modbus_servers)
        active = set(gw.active)
        pkt = observe.Packet()
        options = self._observe
        gw.model_version = rows.model_version[0]
        for i, window in enumerate(rows.window):
            if gw.flow_windows and gw.flow_windows[0] < window:  # flows that end before it
                for flows in flow_evidence.due(s, window):
                    for host, (n, alarms) in flows.hosts.items():
                        prof = s.profile(host)
                        flow_evidence.credit(prof.seconds, n, alarms)
                        self._seen(gw, known, active, host, prof, rows.ts[i])
            if window > gw.window:
                self._advance(gateway, gw, window)
                active = set(gw.active)
            src, dst = rows.src[i], rows.dst[i]
            if src is None or dst is None:
                continue
            if rows.arp_op[i] >= 0 or observe.link_control(rows.proto[i], rows.icmp_type[i]):
                if seen := observe_arp(gw, s.profile, self.policy, rows, i):  # ARP, ND, MLD:
                    self._seen(gw, known, active, *seen, rows.ts[i])  # no conversation
                continue
            pair = f"{src} {dst}" if src < dst else f"{dst} {src}"
            initiator = pairs.get(pair)
            pkt.new_pair = initiator is None
            if initiator is None:
                initiator = pairs[pair] = src
                if len(pairs) > cap:  # forget the oldest pair (insertion order)
                    del pairs[next(iter(pairs))]
            from_src = initiator == src
            host, peer = (src, dst) if from_src else (dst, src)
            pkt.ts, pkt.peer, pkt.proto = rows.ts[i], peer, rows.proto[i]
            pkt.dport = rows.dport[i] if from_src else rows.sport[i]
            pkt.flags, pkt.icmp_type = rows.flags[i], rows.icmp_type[i]
            pkt.qname, pkt.modbus_fc = rows.qname[i], rows.modbus_fc[i]
            prof = s.profile(host)
            if from_src:
                if pkt.modbus_fc >= 0 and pkt.dport == observe.MODBUS_PORT and dst not in servers:
                    servers.add(dst)
                    gw.modbus_servers = [*gw.modbus_servers, dst][-256:]
                observe.outgoing(prof, pkt, field_device=src in servers, **options)
                if observe.address_class(dst) != 2:
                    target = s.profile(dst)
                    observe.unsolicited(target, src, pkt, self.policy.max_tracked)
                    self._seen(gw, known, active, dst, target, pkt.ts)
            else:
                observe.answer(prof, pkt)
            self._seen(gw, known, active, host, prof, pkt.ts)
            if rows.malicious[i]:
                self._add(gateway, gw, rows, i, from_src, prof)
            t = prof.seconds
            if t.out + t.inn in TRIGGERS and t.out + t.inn > prof.evaluated_at:
                prof.evaluated_at = t.out + t.inn
                self._judge(gateway, gw, host, prof, ("seconds",), rows.ts[i])
        gw.hwm = rows.seq[-1]
        gw.last_ts_ns = max(gw.last_ts_ns, max(rows.ts))
        return True

    def _seen(
        self, gw: GatewayState, known: dict[str, int], active: set[str], host: str,
        prof: Profile, ts: int,
    ) -> None:  # fmt: skip
        prof.last_ns = ts
        known.pop(host, None)  # to the end: most recently seen
        known[host] = ts
        if host not in active:
            active.add(host)
            gw.active.append(host)

    # -- windows, judging, incidents ---------------------------------------------------
    def _advance(self, gateway: str, gw: GatewayState, window: int) -> None:
        """Event time entered ``window``: judge the hosts of the closed one, revise or
        close open incidents, drop the windows, evict idle hosts."""
        assert self._s is not None
        self._close_window(gateway, gw)
        start = window * self.policy.window_ns
        quiet, update = int(self.policy.quiet_s * 1e9), int(self.policy.update_s * 1e9)
        still = []
        for key in gw.open:
            inc = self._s.incident(key)
            if inc is None:
                continue
            # behaviour judged over minutes or the hour may pause while its tallies start
            # a new window: such an incident waits a minutes window before it is quiet
            slow = any(
                not name.endswith("@seconds") and not name.startswith(MODEL + "@")
                for name in inc.findings
            )
            wait = max(quiet, int(self.policy.minutes_s * 1e9)) if slow else quiet
            if inc.evidence.last_ns + wait <= start:
                self.emit(inc, "closed", "quiet", start)
                self._s.put(INCIDENT, key, None)
                continue
            if inc.dirty and start - inc.last_emit_ns >= update:
                self.emit(inc, "updated", "update", start)
            still.append(key)
        gw.open = still
        for key in gw.hosts:
            self._s.put(WINDOW, key, None)
        gw.hosts = []
        gw.window = window
        self._evict(gateway, gw, start)

    def _close_window(self, gateway: str, gw: GatewayState) -> None:
        """Roll each active host's window into its minutes and hour tallies and judge it
        at every scale."""
        assert self._s is not None
        p = self.policy
        minutes = int(gw.window * p.window_s // p.minutes_s)
        hour = int(gw.window * p.window_s // p.hour_s)
        for host in gw.active:
            prof = self._s.profile(host)
            closed = prof.seconds
            prof.roll_up(minutes, hour)
            # event time of the judgement: the host's last packet of the window
            self._judge(gateway, gw, host, prof, SCALES, closed.last_ns or prof.last_ns, closed)
        gw.active = []

    def _evict(self, gateway: str, gw: GatewayState, now_ns: int) -> None:
        assert self._s is not None
        horizon = now_ns - int(self.policy.hour_s * 1e9)
        known = gw.known
        while known:
            host = next(iter(known))
            if known[host] >= horizon and len(known) <= self.policy.max_hosts:
                break
            del known[host]
            self._s.put(PROFILE, f"{gateway}|{host}", None)

    def _judge(
        self, gateway: str, gw: GatewayState, host: str, prof: Profile,
        scales: tuple[str, ...], ts: int, seconds: Any = None,
    ) -> None:  # fmt: skip
        """Run the detectors of ``scales`` over the host's tallies and act on the fusion."""
        findings: list[Finding] = []
        for scale in scales:
            tally = seconds if scale == "seconds" and seconds is not None else getattr(prof, scale)
            findings += run_detectors(tally, scale, self.policy)
        if not findings:
            return
        verdict = fuse(findings, self.policy)
        if verdict.kind is not None:
            self._raise(gateway, gw, host, verdict, ts, prof)
        self._keep_alive(gateway, gw, host, findings, ts)

    def _keep_alive(
        self, gateway: str, gw: GatewayState, host: str, findings: list[Finding], ts: int
    ) -> None:
        """An open incident whose behaviour goes on at half its threshold or more is not
        quiet, even when the evidence alone would not raise it again."""
        assert self._s is not None
        for f in findings:
            key = f"{gateway}|{host}|{SOURCE}|{f.kind}"
            if f.detector != MODEL and key in gw.open:
                inc = self._s.incident(key)
                if inc is not None and f.strength * self.policy.weight(f.detector) >= (
                    self.policy.support_from
                ):
                    inc.evidence.last_ns = max(inc.evidence.last_ns, ts)

    def _raise(
        self, gateway: str, gw: GatewayState, host: str, verdict: Verdict, ts: int,
        prof: Profile,
    ) -> None:  # fmt: skip
        """Open the incident of the verdict's kind, or refresh the open one."""
        assert self._s is not None
        assert verdict.kind is not None
        ikey = f"{gateway}|{host}|{SOURCE}|{verdict.kind}"
        inc = self._s.incident(ikey) if ikey in gw.open else None
        if inc is None:
            window = self._s.window(f"{gateway}|{host}|{SOURCE}")
            first = Evidence()
            if window is not None:
                for ev in window.kinds.values():
                    first.merge(ev)
            first.first_ns = min(first.first_ns or ts, first_seen(prof, verdict) or ts)
            first.last_ns = max(first.last_ns, ts)
            inc = self._open(gateway, gw, host, SOURCE, verdict.kind, ts, first, verdict)
            self.emit(inc, "opened", "threshold", ts, first_row=True)
            return
        inc.evidence.last_ns = max(inc.evidence.last_ns, ts)
        if note_verdict(inc, verdict):
            inc.dirty = True

    def _open(
        self, gateway: str, gw: GatewayState, host: str, role: str, kind: str, ts: int,
        evidence: Evidence, verdict: Verdict | None,
    ) -> Incident:  # fmt: skip
        assert self._s is not None
        ikey = f"{gateway}|{host}|{role}|{kind}"
        inc = Incident(
            incident_id=incident_id(gateway, host, role, kind, evidence.first_ns),
            gateway=gateway,
            host=host,
            role=role,
            kind=kind,
            opened_ns=ts,
            model_version=gw.model_version or self.model_version,
            evidence=evidence,
        )
        if verdict is not None:
            note_verdict(inc, verdict)
        self._s.put(INCIDENT, ikey, inc)
        gw.open.append(ikey)
        return inc

    def _flush_gateway(self, gw: GatewayState, reason: str) -> None:
        assert self._s is not None
        for key in gw.open:
            inc = self._s.incident(key)
            if inc is not None:
                self.emit(inc, "closed", reason, max(gw.last_ts_ns, inc.evidence.last_ns))
                self._s.put(INCIDENT, key, None)
        for key in gw.hosts:
            self._s.put(WINDOW, key, None)
        for window in gw.flow_windows:
            self._s.drop_flow_window(window)
        gw.open, gw.hosts, gw.flow_windows = [], [], []

    # -- the model's evidence, per packet ---------------------------------------------
    def _add(
        self, gateway: str, gw: GatewayState, rows: Rows, i: int, from_src: bool, prof: Profile
    ) -> None:
        """Credit a malicious packet to its conversation's initiator and to the other end."""
        src, dst = str(rows.src[i]), str(rows.dst[i])
        host, peer = (src, dst) if from_src else (dst, src)
        service, client = (
            (rows.dport[i], rows.sport[i]) if from_src else (rows.sport[i], rows.dport[i])
        )
        tally = prof.seconds.evidence.setdefault(kind_of(rows.label[i]), [0, 0.0])
        tally[0] += 1
        tally[1] += rows.score[i]
        self._credit(gateway, gw, rows, i, (host, SOURCE, peer), service, client, prof)
        self._credit(gateway, gw, rows, i, (peer, TARGET, host), service, client, None)

    def _credit(
        self, gateway: str, gw: GatewayState, rows: Rows, i: int, who: tuple[str, str, str],
        service_port: int, client_port: int, prof: Profile | None,
    ) -> None:  # fmt: skip
        host, role, peer = who
        assert self._s is not None
        p = self.policy
        key = f"{gateway}|{host}|{role}"
        hw = self._s.window(key)
        if hw is None:
            hw = HostWindow(window=gw.window)
            self._s.put(WINDOW, key, hw)
            gw.hosts.append(key)
        label, kind = rows.label[i], kind_of(rows.label[i])
        packet = (rows.ts[i], rows.seq[i], label, rows.score[i], peer, service_port)
        options = {
            "cap": p.max_tracked,
            "samples": p.samples,
            "explain_every": p.explain_every,
            "flow": lambda: community_id(
                rows.proto[i], str(rows.src[i]), str(rows.dst[i]), rows.sport[i], rows.dport[i]
            ),
        }
        evidence = hw.kinds.setdefault(kind, Evidence())
        evidence.add(*packet, **options)  # type: ignore[arg-type]
        targets = hw.note("targets", f"{peer} {service_port}", p.max_tracked)
        attempts = len(hw.attempts)
        if client_port >= 0:
            attempts = hw.note("attempts", client_port, p.max_tracked)
        sources = hw.note("sources", peer, p.max_tracked)
        ikey = f"{key}|{kind}"
        inc = self._s.incident(ikey) if ikey in gw.open else None
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
        facts = {"packets": evidence.packets, "mean_score": round(evidence.mean_score, 3)}
        model = Finding(MODEL, "seconds", kind, evidence.packets / p.min_packets, facts)
        behaviour = run_detectors(prof.seconds, "seconds", p) if prof is not None else []
        verdict = fuse([model, *behaviour], p)  # the behaviour of the window names the kind
        chosen = verdict.kind or kind
        if f"{key}|{chosen}" in gw.open:  # behaviour named the kind of an open incident
            inc = self._s.incident(f"{key}|{chosen}")
            if inc is not None:
                inc.evidence.add(*packet, **options)  # type: ignore[arg-type]
                inc.dirty = True
            return
        first = evidence.copy()
        if chosen != kind:
            first = Evidence()
            for ev in hw.kinds.values():
                first.merge(ev)
        inc = self._open(gateway, gw, host, role, chosen, rows.ts[i], first, verdict)
        inc.model_version = rows.model_version[i]
        self.emit(inc, "opened", "threshold", rows.ts[i], first_row=True)

    def emit(
        self, inc: Incident, status: str, reason: str, ts_ns: int, first_row: bool = False
    ) -> dict[str, Any]:
        """One revision of ``inc`` (added to the rows of the current call, and returned)."""
        if not first_row:
            inc.revision += 1
        inc.last_emit_ns, inc.dirty = ts_ns, False
        device = self.devices.get((inc.gateway, inc.host))
        row = alert_row(inc, status, reason, ts_ns, self.policy.top_n, device)
        if self.suppressions is not None:  # a covered incident stays covered (Incident)
            inc.suppressed_by = self.suppressions.mark(row)["suppressed_by"]
        self._out.append(row)
        return row
