"""Flow verdicts as evidence: what the attack flow model says of the flows a host started.

The flow worker (:mod:`amlhp.flows.worker`) judges each closed flow record with the
attack flow model (:mod:`amlhp.flows.attacks`). A record the local host started (its
first packet went out) counts for that host: in its ``flows`` tally, and, when the alarm
was raised, in ``flow_alarms`` under the model's kind. The ``flow_model`` detector
(:func:`amlhp.alerts.detectors.flow_evidence`) reads them at the minutes and hour scales,
and fusion weighs it as a learned witness, like the packet model: a slow SSH guesser
whose connections stay below the brute-force count is still many alarmed flows. A record
the remote end started is not counted: its initiator, if local, has its own record.

**When.** A flow record ends at ``start + lifetime`` on the gateway's event clock
(``due_ns``; the flow worker closes it when its clock passes that). The flows that end in
one alert window (``window_s`` of event time) are applied together when the gateway's
packets leave that window, just before it is judged, whatever batch either came in. So
the offline command, which knows every flow up front, and the stream, whose alert stage
waits until the flow worker's clock for the gateway has passed a verdict batch's last
packet (``AMLHP_ALERT_FLOW_WAIT_S``: the ``clock`` of its flow messages), apply the same
flows in the same windows and raise the same incidents. Flows of a window no packet
leaves (the last of a capture, closed at its end) are never applied, on either side.

**State.** The flows waiting for their window are summed per window and host in
records of their own (``f|gateway|window``: :class:`FlowWindow`), so that a flow
message rewrites the windows it touches, not the gateway's record; the gateway's record
lists the windows (at most :data:`MAX_WINDOWS`, the oldest dropped and counted).

**Once.** A flow whose ``flow_seq`` is not above the gateway's mark is a re-publication
by a restarted flow worker and is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa

if TYPE_CHECKING:
    from amlhp.alerts.profile import Tally
    from amlhp.alerts.store import Session

#: windows of flows a gateway keeps waiting for its packets
MAX_WINDOWS: Final = 4096
#: the columns read from a flow verdict batch
COLUMNS: Final = (
    "flow_seq", "due_ns", "device_ip", "device_initiated", "attack_kind", "attack_score",
    "attack_alarm",
)  # fmt: skip


@dataclass
class FlowWindow:
    """The flows that end in one window, per host: ``[flows, {kind: [alarmed, score sum]}]``."""

    hosts: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, host: str, kind: str, score: float) -> None:
        entry = self.hosts.setdefault(host, [0, {}])
        entry[0] += 1
        if kind:
            alarms = entry[1].setdefault(kind, [0, 0.0])
            alarms[0] += 1
            alarms[1] += score

    def to_json(self) -> dict[str, Any]:
        return {"hosts": self.hosts}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FlowWindow:
        hosts = {
            h: [int(n), {k: [int(a), float(b)] for k, (a, b) in kinds.items()}]
            for h, (n, kinds) in data["hosts"].items()
        }
        return cls(hosts)


def take(
    session: Session, batch: pa.RecordBatch | pa.Table | None, clock_ns: int, window_ns: int
) -> int:
    """Add one gateway's flow verdicts (in ``flow_seq`` order) to the windows they end in
    and note the flow worker's clock; returns the windows dropped (too many wait)."""
    gw = session.gw
    gw.flow_clock = max(gw.flow_clock, clock_ns)
    if batch is None or batch.num_rows == 0:
        return 0
    cols = {name: batch.column(name).to_pylist() for name in COLUMNS}
    windows = set(gw.flow_windows)
    for i, seq in enumerate(cols["flow_seq"]):
        if seq <= gw.flow_seq:
            continue  # published again by a restarted worker
        gw.flow_seq = seq
        if not cols["device_initiated"][i] or cols["due_ns"][i] is None:
            continue
        window = int(cols["due_ns"][i]) // window_ns
        alarm = bool(cols["attack_alarm"][i])
        kind = cols["attack_kind"][i] if alarm else ""
        session.flow_window(window).add(
            cols["device_ip"][i], kind, float(cols["attack_score"][i] or 0.0)
        )
        windows.add(window)
    ordered = sorted(windows)
    dropped = max(0, len(ordered) - MAX_WINDOWS)
    for window in ordered[:dropped]:
        session.drop_flow_window(window)
    gw.flow_windows = ordered[dropped:]
    return dropped


def due(session: Session, before_window: int) -> list[FlowWindow]:
    """Take the windows of flows that end before ``before_window``, oldest first."""
    gw = session.gw
    n = 0
    while n < len(gw.flow_windows) and gw.flow_windows[n] < before_window:
        n += 1
    taken = [session.flow_window(w) for w in gw.flow_windows[:n]]
    for window in gw.flow_windows[:n]:
        session.drop_flow_window(window)
    gw.flow_windows = gw.flow_windows[n:]
    return taken


def credit(tally: Tally, flows: int, alarms: dict[str, list[Any]]) -> None:
    """A host's flows of one window: started, and alarmed per kind."""
    tally.flows += flows
    for kind, (n, score) in alarms.items():
        mine = tally.flow_alarms.setdefault(kind, [0, 0.0])
        mine[0] += n
        mine[1] += score
