"""Flow verdicts as evidence: what the attack flow model says of the flows a host started.

The flow worker (:mod:`amlhp.flows.worker`) judges each closed flow record with the
attack flow model (:mod:`amlhp.flows.attacks`). A record the local host started (its
first packet went out) counts for that host: in its ``flows`` tally, and, when the alarm
was raised, in ``flow_alarms`` under the model's kind. The ``flow_model`` detector
(:func:`amlhp.alerts.detectors.flow_evidence`) reads them at the minutes and hour scales,
and fusion weighs it like any behaviour: a slow SSH guesser whose 40 connections an hour
stay below the brute-force count is still 40 alarmed flows. A record the remote end
started is not counted: its initiator, if local, has its own record of the same packets.

**When.** A flow record ends at ``start + lifetime`` on the gateway's event clock
(``due_ns``; the flow worker closes it when its clock passes that). The engine applies a
flow's evidence just before the first packet verdict at or after its ``due_ns`` (by the
gateway's running maximum of ``ts_ns``), whatever batch either came in. So the offline
command, which knows every flow up front, and the stream, whose alert stage waits until
the flow worker's clock for the gateway has passed a verdict batch's last packet (the
``clock`` of its flow messages, ``AMLHP_ALERT_FLOW_WAIT_S``), apply the same flows at the
same packets and raise the same incidents. Flows whose ``due_ns`` no packet reaches (the
last minute of a capture, closed at its end) are never applied, on either side.

**Once.** A flow whose ``flow_seq`` is not above the gateway's mark is a re-publication
by a restarted flow worker and is skipped. Pending flows are kept in the gateway's state
(at most :data:`MAX_PENDING`, the oldest dropped and counted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa

if TYPE_CHECKING:
    from amlhp.alerts.profile import Tally
    from amlhp.alerts.state import GatewayState

#: flows a gateway keeps waiting for the packets' clock
MAX_PENDING: Final = 20_000
#: the columns read from a flow verdict batch
COLUMNS: Final = (
    "flow_seq", "due_ns", "device_ip", "device_initiated", "attack_kind", "attack_score",
    "attack_alarm", "flow_id",
)  # fmt: skip


def take(gw: GatewayState, batch: pa.RecordBatch | pa.Table | None, clock_ns: int) -> int:
    """Queue one gateway's flow verdicts (in ``flow_seq`` order) and note the flow
    worker's clock; returns how many were dropped because too many wait."""
    if clock_ns > gw.flow_clock:
        gw.flow_clock = clock_ns
    if batch is None or batch.num_rows == 0:
        return 0
    cols = {name: batch.column(name).to_pylist() for name in COLUMNS}
    for i, seq in enumerate(cols["flow_seq"]):
        if seq <= gw.flow_seq:
            continue  # published again by a restarted worker
        gw.flow_seq = seq
        if not cols["device_initiated"][i] or cols["due_ns"][i] is None:
            continue
        alarm = bool(cols["attack_alarm"][i])
        kind = cols["attack_kind"][i] if alarm else ""
        score = float(cols["attack_score"][i] or 0.0)
        gw.flows_pending.append(
            [int(cols["due_ns"][i]), cols["device_ip"][i], kind, score, cols["flow_id"][i]]
        )
    gw.flows_pending.sort(key=lambda f: (f[0], f[4]))
    dropped = max(0, len(gw.flows_pending) - MAX_PENDING)
    if dropped:
        del gw.flows_pending[:dropped]
    return dropped


def due(gw: GatewayState, clock_ns: int) -> list[list[Any]]:
    """Take the pending flows whose end the packets' clock has reached, oldest first."""
    pending = gw.flows_pending
    n = 0
    while n < len(pending) and pending[n][0] <= clock_ns:
        n += 1
    if not n:
        return []
    taken = pending[:n]
    del pending[:n]
    return taken


def credit(tally: Tally, kind: str, score: float) -> None:
    """One flow the host started; with ``kind``, one alarmed flow of that kind."""
    tally.flows += 1
    if kind:
        mine = tally.flow_alarms.setdefault(kind, [0, 0.0])
        mine[0] += 1
        mine[1] += score
