"""The one Faust app factory of the pipeline's workers (packet worker, flow worker, ...).

Every Faust worker talks to the same cluster with the same guarantees, so the broker URL,
the credentials (translated from the librdkafka ``-X`` passthrough) and the app
configuration are written once: raw bytes in and out (each agent decodes with
:mod:`amlhp.wire`), in-memory table stores (tables recover from their changelog topics),
acks from all in-sync replicas, large messages, offsets from the earliest record for a new
group, a commit every second, and the settings' partition count and replication factor
for the topics Faust creates. A worker passes its own app id and any ``overrides``.

Faust commits a source offset after ``producer.flush()``, and table writes (changelog
records) wait in Faust's producer buffer until a background task hands them to the Kafka
client. That buffer's ``flush`` returns as soon as 0.1 s pass without a record handed over
(``ProducerBuffer.flush_atmost``), so on a busy machine an offset could be committed while
the changelog records of the events before it were still queued, and a stop right then
loses them: a restarted process resumes after the offset with tables that miss those
events (seen as an alert incident short of its last packets). :func:`drain_producer_buffers`
makes the flush wait until the buffer is empty and no record is being handed over.

**Faust's private internals live here, and only here** (faust-streaming and aiokafka are
pinned in ``pyproject.toml``; ``tests/pipeline/test_faust_internals.py`` pins the shape
and behaviour each relies on, so an upgrade fails a test rather than a guarantee):

* ``ProducerBuffer._send_pending`` and ``flush`` (patched: :func:`drain_producer_buffers`);
* the aiokafka driver's ``Producer.flush``, awaited by Faust right before a commit
  (patched: :func:`refuse_commit_after_failed_send`);
* ``Consumer._committed_offset``, ``flow_active``, ``highwater``, ``earliest_offsets`` and
  ``seek_wait`` (read and called: :func:`committed_offset`, :func:`partition_end`,
  :class:`InOrder`);
* a table's ``data`` (its local store) and ``changelog_topic`` (:class:`ChangelogWriter`);
* the worker's ``spinner`` (set to ``None``: :func:`faust_worker`).

No public API offers these: Faust has no "flush and wait for the hand-over", no hook
between a failed send and the next commit, no committed-offset accessor, and no promise
that a stream's events come without holes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from amlhp.pipeline.faust_settings import faust_broker_url, faust_credentials
from amlhp.settings import Settings

T = TypeVar("T")
log = logging.getLogger(__name__)


#: how long a flush waits for the producer buffer to empty before it gives up (raises)
DRAIN_TIMEOUT_S = 120.0


def drain_producer_buffers() -> None:
    """Make Faust's producer-buffer flush complete (see the module docstring); idempotent."""
    import asyncio
    import time

    from faust.transport.producer import ProducerBuffer

    if getattr(ProducerBuffer, "_amlhp_draining", False):
        return
    handing_over = ProducerBuffer._send_pending

    async def send_pending(self: Any, fut: Any) -> None:
        self._amlhp_in_flight = getattr(self, "_amlhp_in_flight", 0) + 1
        try:
            await handing_over(self, fut)
        finally:
            self._amlhp_in_flight -= 1

    async def flush(self: Any) -> None:
        """Wait until every buffered record is in the Kafka client's hands."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while self.size or getattr(self, "_amlhp_in_flight", 0):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Faust's producer buffer still holds {self.size} records after "
                    f"{DRAIN_TIMEOUT_S:.0f} s"
                )
            if self.size:
                await self.flush_atmost(None)
            else:
                await asyncio.sleep(0.005)

    # a patch of two methods of one Faust class, for every app of this process
    setattr(ProducerBuffer, "_send_pending", send_pending)  # noqa: B010
    setattr(ProducerBuffer, "flush", flush)  # noqa: B010
    setattr(ProducerBuffer, "_amlhp_draining", True)  # noqa: B010


def refuse_commit_after_failed_send(app: Any) -> None:
    """Make a failed send stop the worker before the offsets it came from are committed.

    Faust records a failed delivery (the Kafka client gave up on a record: it was too
    large, or the cluster refused it past the retries) only in its sensors and a log line,
    and its next commit moves the source offset past the event anyway: the verdicts of
    those packets would be lost without a trace. Here a sensor remembers the failure, and
    the flush that Faust runs right before every commit raises ``ProducerSendError``
    then; Faust crashes the worker on it, the offsets stay uncommitted, and the events are
    processed again by whichever member takes the partitions over (the sinks drop the
    re-delivered rows by (gateway, seq)). Failures are counted by the metrics sensor
    (:func:`amlhp.metrics.faust_sensor.install_faust_monitor`)."""
    import asyncio

    from faust.exceptions import ProducerSendError
    from faust.sensors import Sensor
    from faust.transport.drivers.aiokafka import Producer

    failures: list[BaseException] = []

    class _FailedSends(Sensor):
        def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
            failures.append(exc)

    app.sensors.add(_FailedSends())
    app.amlhp_failed_sends = failures
    if getattr(Producer, "_amlhp_refusing", False):
        return
    flush_all = Producer.flush

    async def flush(self: Any) -> None:
        await flush_all(self)
        await asyncio.sleep(0)  # the delivery callbacks of the last batch run first
        failed = getattr(self.app, "amlhp_failed_sends", None)
        if failed:
            raise ProducerSendError(
                f"{len(failed)} record(s) could not be delivered (first: {failed[0]!r}); "
                "not committing their source offsets: the worker stops and the events are "
                "processed again"
            )

    setattr(Producer, "flush", flush)  # noqa: B010
    setattr(Producer, "_amlhp_refusing", True)  # noqa: B010


async def run_to_end(work: Awaitable[T]) -> T:
    """Finish one event's (or micro-batch's) work even when a stop cancels the agent.

    Faust acks an event in the ``finally`` of its stream iterator (``Stream.__aiter__``,
    ``take_events``), also when the agent's body was interrupted; the stop's last commit
    then commits the offset of work never done: its outputs are lost (found by the
    ``rebalance`` scenario of ``amlhp chaos``: a SIGTERMed worker lost a micro-batch). So an
    agent runs each piece of work through this: a cancellation waits for the work to end
    (one micro-batch, well under a second) and is raised after it.
    """
    import asyncio

    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            await task  # a second cancellation gives up waiting
        raise


async def hand_over_table_writes(app: Any) -> None:
    """Wait until this event's table writes are in the Kafka client's hands.

    Table writes wait in Faust's producer buffer; at a stop, what is still there when the
    producer stops is dropped, and what was handed over is delivered. An event whose
    writes were split between the two would come back after a restart (its offset not
    committed) to tables that hold part of it. Called at the end of each event's work, it
    makes every event's writes all delivered or all re-done."""
    await app.producer.buffer.flush()


def committed_offset(app: Any, topic: str, partition: int) -> int | None:
    """The group's committed offset of a partition as this Faust consumer last knew it
    (read at assignment, updated at each of its commits): where a restart, or the seek
    after a rebalance, resumes. ``None`` before the group ever committed there."""
    from faust.types import TP

    offset = app.consumer._committed_offset.get(TP(topic, partition))
    return None if offset is None else int(offset)


def partition_end(app: Any, topic: str, partition: int) -> int | None:
    """A partition's high-water mark as this consumer's last fetch saw it; ``None`` when
    not known (no fetch answered yet, or the partition is not assigned here)."""
    from faust.types import TP

    try:
        end = app.consumer.highwater(TP(topic, partition))
    except Exception:  # noqa: BLE001 - aiokafka raises bare errors for unassigned partitions
        return None
    return None if end is None else int(end)


class InOrder:
    """Lets an agent handle a partition's events only in offset order, none skipped.

    Faust can hand an agent a partition's events with a hole, and then not deliver the
    missing ones again in this process: when a stop, a rebalance or a table recovery
    suspends the flow, its fetch loop abandons the delivery in hand (and
    ``flow_control.clear()`` drops the queued ones) yet records the offset as read and
    goes on (``Consumer._drain_messages``). Seen on the alert stage: offsets 31 then 36
    at a SIGTERM; 8 then 15 right after a start. An agent whose state holds a high-water
    mark (the alert engine's gateway ``hwm``) would move the mark past the missing
    events, and skip them as re-deliveries when they came again: lost.

    :meth:`admit` lets an event through when its offset follows the last one handled
    here, or is at or below it (a re-delivery after a seek, which the agent's mark
    de-duplicates), or at or below the committed offset (the first event after an
    assignment), or, where the group never committed, at or below the partition's first
    offset (:meth:`gate` looks it up: seen on the alert stage, whose first flow events
    of a partition were abandoned and the third came first). An event past a hole is not
    handled and not acked, so nothing after the hole is committed, and :meth:`rewind`
    seeks the partition back to the hole (at most once a second; the agent calls it again
    on its clock ticks, since held events may be the last ones fetched). A hole that
    outlasts ``give_up_s`` while Faust's flow runs is a real one (records removed by
    retention before they were read): the event is admitted, and the size of the hole
    returned for the caller to count and log.

    A hole can also be at the end, with no event after it to show it: the delivery Faust
    abandoned held a partition's last events (seen on the flow worker right after a table
    recovery: its flows then closed idle without their second half). So the clock ticks
    also look for a *stall*: a partition that is not :meth:`caught_up` and from which no
    event came for ``stall_s`` while the flow runs is sought back to :meth:`position` (its
    first offset when this process handled nothing there and the group never committed).
    A stall that is only a slow agent costs re-deliveries, which the agents de-duplicate."""

    def __init__(
        self, app: Any, topic: str, *, give_up_s: float = 60.0, stall_s: float = 5.0
    ) -> None:
        self.app, self.topic, self.give_up_s, self.stall_s = app, topic, give_up_s, stall_s
        #: per partition: the offset after the last event handled here
        self.next: dict[int, int] = {}
        #: per partition never committed: its first offset, where a new group starts
        self.start: dict[int, int] = {}
        #: per partition with a hole: (the offset missing, when first seen, last rewind)
        self.holes: dict[int, tuple[int, float, float]] = {}
        #: per partition behind its end: since when no event came from it
        self.quiet: dict[int, float] = {}
        self.stalls_checked = 0.0

    def position(self, partition: int) -> int | None:
        """Where this process is in a partition: the offset after the last event handled
        here, or before the first, the group's committed offset (where it resumed)."""
        done = self.next.get(partition)
        if done is not None:
            return done
        committed = committed_offset(self.app, self.topic, partition)
        return self.start.get(partition) if committed is None else committed

    def caught_up(self, partition: int) -> bool:
        """Whether this process handled the partition up to its high-water mark (an end
        not yet known, no fetch answered, is not caught up): until then, silence from a
        gateway there may only be its events still queued."""
        end = partition_end(self.app, self.topic, partition)
        return end is not None and (self.position(partition) or 0) >= end

    def admit(self, partition: int, offset: int, now: float) -> tuple[bool, int]:
        """(handle the event?, offsets known missing before it: 0 unless a real hole)."""
        committed = committed_offset(self.app, self.topic, partition)
        expected = max(
            self.next.get(partition, -1),
            self.start.get(partition, -1) if committed is None else committed,
        )
        if expected < 0 or offset <= expected:
            self.next[partition] = offset + 1
            self.holes.pop(partition, None)
            return True, 0
        _, since, rewound = self.holes.get(partition, (expected, now, 0.0))
        if self.app.consumer.flow_active and now - since >= self.give_up_s:
            self.next[partition] = offset + 1
            del self.holes[partition]
            return True, offset - expected
        self.holes[partition] = (expected, since, rewound)
        return False, 0

    async def rewind(self, partition: int, now: float) -> None:
        """Seek ``partition`` back to its hole, if it has one and was not sought back in
        the last second (the held events of one fetch come in a burst)."""
        if partition not in self.holes:
            return
        missing, since, rewound = self.holes[partition]
        if now - rewound < 1.0:
            return
        from faust.types import TP

        self.holes[partition] = (missing, since, now)
        # seek_wait runs the seek in the consumer's own thread: Consumer.seek calls aiokafka
        # from this one, racing its fetcher (a KeyError in Fetcher.fetched_records)
        await self.app.consumer.seek_wait({TP(self.topic, partition): missing})

    async def gate(self, event: Any) -> tuple[bool, int]:
        """:meth:`admit` an event, seeking back to the hole when it is held; a real hole
        (given up on) is logged, and its size returned for the caller's metric."""
        import time

        msg, now = event.message, time.time()
        self.quiet.pop(msg.partition, None)
        if self.position(msg.partition) is None:
            await self.find_start(msg.partition)
        admitted, missing = self.admit(msg.partition, msg.offset, now)
        if not admitted:
            await self.rewind(msg.partition, now)
            return False, 0
        if missing:
            log.warning(
                "%s partition %d: offsets %d..%d never came (removed by retention?); "
                "going on from %d",
                msg.topic, msg.partition, msg.offset - missing, msg.offset - 1, msg.offset,
            )  # fmt: skip
        return True, missing

    async def find_start(self, partition: int) -> None:
        """Note the first offset of a partition the group never committed: its first event
        here must be that one, not any (Faust may have abandoned the first delivery)."""
        from faust.types import TP

        tp = TP(self.topic, partition)
        start = (await self.app.consumer.earliest_offsets(tp)).get(tp)
        if start is not None and start >= 0:
            self.start[partition] = int(start)

    def assigned(self) -> set[int]:
        """The partitions of the topic assigned to this process."""
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.topic}

    def behind(self) -> set[int]:
        """The partitions of the topic assigned here that are not :meth:`caught_up`."""
        return {p for p in self.assigned() if not self.caught_up(p)}

    async def rewind_held(self, now: float | None = None) -> None:
        """Seek every partition with a hole back to it, and every stalled one back to its
        :meth:`position`: the agent's clock calls this, since the held events may have
        been the last ones fetched (no event follows)."""
        import time

        now = time.time() if now is None else now
        for partition in list(self.holes):
            await self.rewind(partition, now)
        if self.app.rebalancing or not self.app.consumer.flow_active:
            self.quiet.clear()  # a stop or a rebalance: Faust itself seeks afterwards
            return
        if now - self.stalls_checked < 1.0:  # the worker's clock ticks every few ms
            return
        self.stalls_checked = now
        for partition in self.assigned() - set(self.holes):
            await self._unstall(partition, now)

    async def _unstall(self, partition: int, now: float) -> None:
        if self.caught_up(partition):
            self.quiet.pop(partition, None)
            return
        since = self.quiet.setdefault(partition, now)
        if now - since < self.stall_s:
            return
        from faust.types import TP

        tp = TP(self.topic, partition)
        if self.position(partition) is None:
            await self.find_start(partition)
        position = self.position(partition)
        if position is None:
            return
        self.quiet[partition] = now
        log.warning(
            "%s partition %d: nothing came from offset %d on for %.0f s although the "
            "partition goes on; seeking back to it", self.topic, partition, position,
            now - since,
        )  # fmt: skip
        await self.app.consumer.seek_wait({tp: position})


class ChangelogWriter:
    """Writes ``(partition, key, value)`` records (``None`` deletes) into a raw (bytes to
    bytes) Faust table outside an event: its local store, and its changelog on the given
    partitions (Faust's ``table[key] = value`` needs a current event to know the changelog
    partition; a clock tick has none), produced by librdkafka (confluent-kafka).

    Why: Faust hands each changelog record through its Python buffer and aiokafka, tens of
    microseconds a record, and the flow worker writes one per flow a message touched
    (about two records for three packets): that hand-over took more of its time than the
    flow model. librdkafka batches them in C. Faust still owns the table: it creates the
    changelog topic and recovers the store from it at a start or a rebalance, whoever
    wrote the records. :meth:`flush` returns once the broker has every record (Faust's own
    path only waits for the hand-over), and raises if one failed: the caller acks its
    event after that, so a stop loses no state and a failure commits no offset."""

    def __init__(self, settings: Settings, table: Any) -> None:
        from confluent_kafka import Producer

        self.table = table
        self.topic = str(table.changelog_topic.get_topic_name())
        self.failed: list[str] = []
        self.producer = Producer(
            settings.kafka_config(
                **{"enable.idempotence": True, "linger.ms": 5, "client.id": self.topic}
            )
        )

    def write(self, writes: Any) -> None:
        """Apply the records to the store and queue their changelog records."""
        store = self.table.data
        for partition, key, value in writes:
            if value is None:
                store.pop(key, None)
            else:
                store[key] = value
            while True:
                try:
                    self.producer.produce(
                        self.topic, value, key, partition, on_delivery=self._delivered
                    )
                    break
                except BufferError:  # librdkafka's queue is full: let it send some
                    self.producer.poll(0.05)

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed.append(str(err))

    def flush(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Wait until the broker has every queued record (blocking: call it off the loop)."""
        from faust.exceptions import ProducerSendError

        left = self.producer.flush(timeout_s)
        if left or self.failed:
            failed, self.failed = self.failed, []
            raise ProducerSendError(
                f"{self.topic}: {left} changelog records undelivered after {timeout_s:.0f} s, "
                f"{len(failed)} failed ({'; '.join(sorted(set(failed))[:3])})"
            )

    def commit(self, writes: Any) -> None:
        """:meth:`write` then :meth:`flush`."""
        self.write(writes)
        self.flush()


def create_faust_app(settings: Settings, app_id: str, **overrides: Any) -> Any:
    """A Faust app with the pipeline's shared configuration (nothing runs until started)."""
    import faust

    drain_producer_buffers()

    data_root = settings.under_home(Path("var") / "faust")
    data_root.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    config: dict[str, Any] = {
        "broker": faust_broker_url(settings.bootstrap_servers),
        "broker_credentials": faust_credentials(settings),
        "store": "memory://",
        "value_serializer": "raw",
        "key_serializer": "raw",
        "web_enabled": False,
        # Faust makes a data folder even for memory stores; keep it under var/, not in the
        # working directory (Faust's default "{conf.name}-data")
        "datadir": str(data_root / "{conf.name}-data"),
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "topic_disable_leader": True,
        "producer_acks": -1,
        "producer_max_request_size": 8_000_000,
        "consumer_max_fetch_size": 8_000_000,
        "consumer_auto_offset_reset": "earliest",
        "broker_commit_interval": 1.0,
        # Faust's default session timeout is 60 s: a SIGKILLed worker's partitions would
        # wait that long for another member (issue 17's recovery goal is 15 s)
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": settings.session_timeout_s / 3.0,
        "stream_wait_empty": False,
    }
    config.update(overrides)
    app = faust.App(app_id, **config)
    refuse_commit_after_failed_send(app)
    return app


def faust_worker(app: Any) -> Any:
    """Faust's worker for ``app``, logging at WARNING, without the terminal spinner.

    The spinner turns once per log record: with it, Faust sets the root logger to DEBUG
    and hangs a spinner handler on it, for the worker's whole life. Every debug call of
    Faust and aiokafka (several per record produced) then builds a record that the
    handlers throw away; that was a tenth of a busy flow worker's time."""
    from faust.worker import Worker

    worker = Worker(app, loglevel="WARNING", quiet=True)
    worker.spinner = None
    return worker


def run_faust_worker(app: Any) -> None:
    """Run ``app`` in the foreground until SIGTERM/SIGINT (Faust's own worker loop)."""
    faust_worker(app).execute_from_commandline()
