"""The alert stage: a Faust app of its own from the verdict topic to ``amlhp.alerts``.

Its own app (``amlhp alerts-stage``, group ``<consumer_group>-alerts``) rather than an
agent in the packet worker, so that it scales, restarts and keeps state apart from
scoring: a worker crash does not lose incidents and an alert restart does not pause
scoring.

* **State** lives in one Faust table, ``alerts-state`` (changelog-backed; a restarted or
  re-assigned process recovers it): per gateway its mark and clocks, per host its
  behaviour at three time scales and its window's evidence, and the open incidents
  (:mod:`amlhp.alerts.store`). Faust's own windowed tables take the window from each
  event's timestamp; an event here is a batch of packets with many capture times, so the
  engine (:mod:`amlhp.alerts.engine`) puts the windows in the values and expires them
  itself when event time moves on. Every table write happens in the agent, in the event
  of the verdict's partition, so each key's changelog partition is its gateway's, and
  one table means one changelog written in order: the engine writes a gateway's record
  last, so a stop mid-event never leaves its mark ahead of its data
  (:class:`~amlhp.alerts.store.Session`).
* **Clock ticks.** Incidents of a gateway that went silent must still close. Faust tables
  cannot be written outside an event, so a timer sends one tick per second to each
  partition of the ticks topic (co-partitioned with the verdicts) and the same agent,
  reading both topics, closes the idle gateways of that partition (reason ``idle``).
  A tick closes nothing until this process has read the partition's verdicts up to the
  high-water mark (and not before ``idle_close_s`` after its first event there), so a
  restart with a backlog does not close incidents early.
* **Once.** The engine skips re-delivered verdicts by the gateway's sequence mark, so a
  restart counts nothing twice; the incident ids are stable, and an incident is opened
  once: its key is in the table from then on. The mark needs the verdicts of a partition
  in offset order, none skipped, which Faust does not promise when a stop, a rebalance or
  a table recovery suspends its flow: :class:`~amlhp.pipeline.faust_app.InOrder` holds an
  event past a hole and the stage seeks back to it.
* **Devices.** Each row names its host's device type and confidence from the device
  inventory of the flow worker (:mod:`amlhp.pipeline.devices`) as this process knows it
  when the row is made: read from the compacted device topic at start, then followed by
  the same agent, and from the devices header of each flow verdict message (the hosts
  its step's flows changed), so that with the flow wait on a host is named by the time
  the packets after its flows are judged, whenever the device topic is read. It is not
  state: a restart reads it again.
* **Flows.** The flow worker's verdicts (same partitions) are one more evidence source
  (:mod:`amlhp.alerts.flow_evidence`), applied in the window they end in. With
  ``flow_wait_s`` set, a verdict batch waits (kept in memory, not acked, and the
  partition's later batches behind it) until the flow worker's clock for its gateways
  has passed its packets, so the incidents are the offline command's; after
  ``flow_wait_s`` it is judged without the flows still to come (counted:
  ``amlhp_skipped_messages{step="alerts",reason="flow_wait_timeout"}``). A partition with
  waiting batches is not closed idle.
* **Suppression.** Each row names the allow-list rule that covers it
  (``AMLHP_ALERT_SUPPRESSIONS``, :mod:`amlhp.alerts.suppression`); the file is checked
  once a second (on whatever event comes: verdicts, flows or ticks) and reloaded when it
  changed, without a restart.
* **Feedback.** Analysts' verdicts (``amlhp alerts-feedback``, the compacted feedback
  topic, read whole by every process) close or revise their incidents on the next tick
  of the gateway's partition, and a false positive given with consent adds an
  allow-list rule (:mod:`amlhp.alerts.feedback`).
* **Output.** Each batch of alert rows goes to the alert topic keyed by gateway as one
  ``amlhp.alert`` v4 Arrow message, and the event's state is written only once the broker
  has it: rows are at least once (readers de-duplicate on incident and revision), never
  lost. Metrics count rows by kind and status and gauge the open incidents.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

import pyarrow as pa

from amlhp.alerts.engine import Engine, Store, alert_batch
from amlhp.alerts.feedback import FeedbackReader, apply_feedback, suppression_rule
from amlhp.alerts.policy import AlertPolicy
from amlhp.alerts.suppression import Suppressions
from amlhp.metrics.definitions import STEP_ALERTS, process_metrics
from amlhp.metrics.faust_sensor import install_faust_monitor
from amlhp.pipeline.devices import identities, read_inventory
from amlhp.pipeline.faust_app import (
    InOrder,
    create_faust_app,
    hand_over_table_writes,
    run_faust_worker,
    run_to_end,
)
from amlhp.settings import Settings
from amlhp.wire import (
    DEVICE,
    FLOW_CLOCK_HEADER,
    FLOW_DEVICES_HEADER,
    FLOW_VERDICT,
    VERDICT,
    BatchDecodeError,
    from_ipc,
    to_ipc,
)

log = logging.getLogger(__name__)
TICK_INTERVAL_S = 1.0
TABLES = ("state",)


@dataclass(frozen=True)
class AlertStageOptions:
    """Tuning of one alert process."""

    app_id: str | None = None


def open_by_kind(engine: Engine) -> dict[tuple[str, str], int]:
    """(gateway, kind) -> open incidents, from this process's incident table."""
    counts: Counter[tuple[str, str]] = Counter()
    for key in engine.store.incidents():
        gateway, _host, _role, kind = str(key).rsplit("|", 3)
        counts[(gateway, kind)] += 1
    return dict(counts)


def create_alert_app(settings: Settings, options: AlertStageOptions) -> Any:
    """Build the alert app: tables, the agent over verdicts and ticks, the tick timer."""
    app_id = options.app_id or f"{settings.consumer_group}-alerts"
    app = create_faust_app(settings, app_id)
    topics = settings.topics
    source = app.topic(
        topics.verdicts,
        topics.alert_ticks,
        topics.devices,
        topics.flow_verdicts,
        value_serializer="raw",
        key_serializer="raw",
    )
    ticks = app.topic(topics.alert_ticks, value_serializer="raw", key_serializer="raw")
    alerts = app.topic(topics.alerts, value_serializer="raw", key_serializer="raw")

    def table(name: str) -> Any:
        # Faust tables (de)serialise keys and values as JSON: str keys, dict values
        return app.Table(f"alerts-{name}", default=None, partitions=settings.partitions)

    store = Store(table("state"))
    engine = Engine(AlertPolicy.from_settings(settings), store)
    engine.defer_commit = True
    engine.devices.update(identities(read_inventory(settings).to_pylist()))
    engine.suppressions = Suppressions.load(settings.alert_suppressions)
    metrics = process_metrics()
    metrics.count_suppressed([], [r.id for r in engine.suppressions.rules])
    feedback = FeedbackReader(settings)
    verdicts_pending: dict[str, dict[str, Any]] = {}  # incident id -> its latest verdict
    install_faust_monitor(app, metrics)

    async def publish(rows: list[dict[str, Any]]) -> None:
        """Send the rows and wait until the broker has them (before the state that says
        they were raised is written: see ``handle``)."""
        by_gateway: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_gateway.setdefault(row["gateway"], []).append(row)
        sent = [
            await alerts.send(key=gateway.encode(), value=to_ipc(alert_batch(part)))
            for gateway, part in by_gateway.items()
        ]
        for delivery in sent:
            await delivery
        metrics.count_alerts(rows)
        metrics.count_suppressed(rows, ())

    first_event: dict[int, float] = {}
    in_order = InOrder(app, topics.verdicts)
    flows_in_order = InOrder(app, topics.flow_verdicts)
    #: per partition: since when its next verdict batch waits for the flow worker, and
    #: the verdict events that wait (in offset order, not acked: a stop re-delivers them)
    waiting: dict[int, float] = {}
    queued: dict[int, list[tuple[Any, pa.RecordBatch]]] = {}
    #: per gateway: the flow clock when a wait for it ran out (not waited for again until
    #: the flow worker moves it: a stopped flow worker must not stall every batch)
    gave_up: dict[str, int] = {}

    def flows_ready(batch: Any, partition: int, now: float) -> bool:
        """Whether the flow worker's clock has passed the batch's packets, for every
        gateway in it (:mod:`amlhp.alerts.flow_evidence`); after ``flow_wait_s`` of
        waiting, True anyway (counted)."""
        wait = engine.policy.flow_wait_s
        if wait <= 0:
            return True
        table = pa.Table.from_batches([batch])
        latest = table.group_by("gateway").aggregate([("ts_ns", "max")]).to_pylist()
        clocks = {r["gateway"]: engine.flow_clock(r["gateway"]) for r in latest}
        behind = [
            r["gateway"]
            for r in latest
            if clocks[r["gateway"]] < r["ts_ns_max"]
            and clocks[r["gateway"]] > gave_up.get(r["gateway"], -2)
        ]
        if not behind:
            waiting.pop(partition, None)
            return True
        since = waiting.setdefault(partition, now)
        if now - since < wait:
            return False
        waiting.pop(partition, None)
        gave_up.update((g, clocks[g]) for g in behind)
        metrics.skipped_messages.labels(STEP_ALERTS, "flow_wait_timeout").inc()
        log.warning(
            "partition %d: verdicts judged without waiting longer for the flow worker "
            "(%.0f s; gateways %s)", partition, wait, behind,
        )  # fmt: skip
        return True

    async def finish(rows: list[dict[str, Any]]) -> None:
        """Rows out first, state after: a stop in between re-delivers the event, whose
        rows then come again (same ids and revisions); the reverse order would keep
        state whose rows were never sent."""
        if rows:
            await publish(rows)
        engine.commit()
        await hand_over_table_writes(app)
        if rows:
            metrics.set_open_incidents(open_by_kind(engine))

    async def judge(event: Any, batch: pa.RecordBatch) -> None:
        rows = engine.process(batch, partition=event.message.partition)
        metrics.count_batch_in(STEP_ALERTS, batch, len(event.value or b""))
        await finish(rows)

    async def drain(manual: Any, partition: int) -> None:
        """Judge the partition's waiting verdict events whose flows are in (or whose wait
        ran out), in offset order, and ack them. Only while an event of that partition is
        the current one: Faust writes a table's changelog to the current event's
        partition, and a restart recovers a gateway's state from its own partition only
        (judged in another partition's event, its writes were lost at the next restart:
        packets counted twice, flows missing)."""
        now = time.time()
        while (events := queued.get(partition)) and flows_ready(events[0][1], partition, now):
            event, batch = events.pop(0)
            await judge(event, batch)
            await manual.ack(event)

    def caught_up(partition: int, now: float) -> bool:
        """Idle closing only once this process has read the partition's backlog
        (:meth:`InOrder.caught_up`), and had ``idle_close_s`` to do so: a tick right
        after a (re)start must not close incidents whose verdicts are still queued."""
        if now - first_event.setdefault(partition, now) < engine.policy.idle_close_s:
            return False
        return in_order.caught_up(partition)

    checked = [0.0]  # when the allow-list file was last looked at

    def reload_suppressions(now: float) -> None:
        """Read the allow-list again if its file changed, at most once a second, on any
        event: a stage busy with a backlog may see no tick for seconds (Faust fetches the
        verdicts' backlog in large chunks), and a rule must not wait for one."""
        suppressions = engine.suppressions
        if suppressions is None or now - checked[0] < TICK_INTERVAL_S:
            return
        checked[0] = now
        if suppressions.reload_if_changed():
            metrics.count_suppressed([], [r.id for r in suppressions.rules])

    async def handle(event: Any) -> bool:
        """Apply one event; False when it must not be acked (it follows a hole)."""
        msg = event.message
        now = time.time()
        first_event.setdefault(msg.partition, now)
        reload_suppressions(now)
        if msg.topic == topics.devices:
            try:
                engine.devices.update(identities(from_ipc(event.value or b"", DEVICE).to_pylist()))
            except BatchDecodeError as exc:
                metrics.skipped_messages.labels(STEP_ALERTS, "invalid_batch").inc()
                log.error("device entry at offset %d skipped: %s", msg.offset, exc)
            return True
        if msg.topic == topics.flow_verdicts:
            admitted, missing = await flows_in_order.gate(event)
            if not admitted:
                return False
            try:
                flows = from_ipc(event.value or b"", FLOW_VERDICT)
            except BatchDecodeError as exc:
                metrics.skipped_messages.labels(STEP_ALERTS, "invalid_batch").inc()
                log.error("flow verdicts at offset %d skipped: %s", msg.offset, exc)
                return True
            gateway = (msg.key or b"").decode()
            try:
                engine.devices.update(flow_devices(gateway, msg.headers))
            except ValueError as exc:  # the flows still count; only the names are lost
                metrics.skipped_messages.labels(STEP_ALERTS, "invalid_header").inc()
                log.error("flow verdicts at offset %d: device header skipped: %s",
                          msg.offset, exc)  # fmt: skip
            engine.flows(gateway, flows, flow_clock(msg.headers))
            rows = []
        elif msg.topic == topics.alert_ticks:
            await in_order.rewind_held()
            await flows_in_order.rewind_held()
            await apply_verdicts(msg.partition)
            idle = caught_up(msg.partition, now) and not queued.get(msg.partition)
            rows = engine.idle(msg.partition, now) if idle else []
        else:
            admitted, missing = await in_order.gate(event)
            if not admitted:
                return False
            if missing:
                metrics.skipped_messages.labels(STEP_ALERTS, "offset_gap").inc(missing)
            try:
                batch = from_ipc(event.value or b"", VERDICT)
            except BatchDecodeError as exc:
                metrics.skipped_messages.labels(STEP_ALERTS, "invalid_batch").inc()
                log.error(
                    "%s partition %d offset %d skipped: %s",
                    msg.topic,
                    msg.partition,
                    msg.offset,
                    exc,
                )
                return True
            if queued.get(msg.partition) or not flows_ready(batch, msg.partition, now):
                queued.setdefault(msg.partition, []).append((event, batch))
                return False  # acked once judged (drain)
            await judge(event, batch)
            return True
        await finish(rows)
        return True

    async def apply_verdicts(partition: int) -> None:
        """Analysts' verdicts on incidents of this partition's gateways (module docstring
        of :mod:`amlhp.alerts.feedback`): published and committed on their own, before
        the tick's idle closes, which read the state they change."""
        rules = []
        for item in feedback.poll():
            verdicts_pending[item["incident_id"]] = item
            rules.append(suppression_rule(item))
        # only once the partition's backlog is read: an incident's state may still be on
        # its way back after a restart
        if verdicts_pending and in_order.caught_up(partition):
            rows, done = apply_feedback(engine, partition, list(verdicts_pending.values()))
            for incident in done:
                verdicts_pending.pop(incident, None)
            if rows:
                await publish(rows)
            engine.commit()
        allow = engine.suppressions  # after: the false positive's own close is not covered
        for rule in rules:
            if rule is not None and allow is not None and allow.add(rule):
                metrics.count_suppressed([], [rule.id])

    @app.agent(source, name="alerts")
    async def alert_agent(stream: Any) -> None:
        # Acks are manual: Faust acks an event in its iterator's ``finally`` even when a
        # stop cancels the agent in the middle of it, and then commits its offset, so
        # that an event whose state never reached the changelog would not come again
        # (the lost updates of a SIGTERM mid-backlog). An event is acked once its rows
        # are delivered and its state handed over; a stop before that re-delivers it, and
        # the engine re-applies it exactly (amlhp.alerts.store). An event past a hole in
        # the partition's offsets is not handled nor acked: it comes again (InOrder).
        manual = stream.noack()
        async for event in manual.events():
            if await run_to_end(handle(event)):
                await manual.ack(event)
            if queued.get(event.message.partition):  # waiting for the flow worker's clock
                await run_to_end(drain(manual, event.message.partition))

    async def on_revoked(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        """Waiting verdict events of a revoked partition are forgotten, not acked: the
        partition's next owner (this process again, after an eager rebalance) resumes
        from the committed offset, before them. Taken from Faust's signal, not from the
        consumer's assignment, which is also empty for a moment while it rebalances."""
        revoked = args[0] if args else kwargs.get("revoked", set())
        for tp in revoked:
            if tp.topic == topics.verdicts:
                queued.pop(tp.partition, None)
                waiting.pop(tp.partition, None)

    cast(Any, app.on_partitions_revoked).connect(on_revoked)

    @app.timer(interval=TICK_INTERVAL_S)
    async def tick() -> None:
        now = str(time.time()).encode()
        for partition in range(settings.partitions):
            await ticks.send(value=now, partition=partition)

    return app


def header(headers: Any, wanted: str) -> Any:
    """A message header's value (None when absent): Faust gives a dict or pairs."""
    pairs = headers.items() if isinstance(headers, dict) else headers or ()
    return next((value for name, value in pairs if name == wanted), None)


def flow_clock(headers: Any) -> int:
    """The flow worker's clock in a flow verdict message's headers (-1: none)."""
    try:
        return int(header(headers, FLOW_CLOCK_HEADER))
    except (TypeError, ValueError):
        return -1


def flow_devices(gateway: str, headers: Any) -> dict[tuple[str, str], tuple[str, float]]:
    """The device identities a flow verdict message names (its devices header; none
    without one). A header that does not parse raises ``ValueError``."""
    value = header(headers, FLOW_DEVICES_HEADER)
    if value is None:
        return {}
    try:
        hosts = json.loads(value)
        return {(gateway, str(h)): (str(t), float(c)) for h, (t, c) in hosts.items()}
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a devices header: {exc}") from None


def ensure_changelogs(settings: Settings, app_id: str) -> None:
    """Create the tables' changelog topics (compacted, the verdicts' partition count)
    before the app starts, so that its consumer knows their partitions from the first
    event: Faust checks the co-partitioning at the first table write and fails on a
    changelog topic its metadata does not know yet."""
    from amlhp.streams.topics import TopicSpec, admin_client, create_topics

    specs = [
        TopicSpec(
            name=f"{app_id}-alerts-{name}-changelog",
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            config={"cleanup.policy": "compact"},
        )
        for name in TABLES
    ]
    create_topics(admin_client(settings.kafka_config()), specs)


def run_alert_stage(settings: Settings, options: AlertStageOptions) -> None:
    """Run the alert stage in the foreground until SIGTERM/SIGINT."""
    ensure_changelogs(settings, options.app_id or f"{settings.consumer_group}-alerts")
    app = create_alert_app(settings, options)
    log.info("alert stage starting (app %s)", app.conf.id)
    run_faust_worker(app)
