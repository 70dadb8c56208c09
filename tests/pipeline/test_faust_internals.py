"""Every private part of faust-streaming (and its aiokafka driver) that
:mod:`amlhp.pipeline.faust_app` relies on, pinned: its existence, its shape and the
behaviour the patch or the read assumes. An upgrade that changes one fails here, not
silently in the guarantees the fault suite proved. ``pyproject.toml`` pins the versions
these tests pass on."""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace
from typing import Any

from amlhp.pipeline.faust_app import create_faust_app, drain_producer_buffers
from amlhp.settings import Settings


def _settings() -> Settings:
    return Settings.model_validate({})


def test_the_buffer_hands_records_over_one_at_a_time_through_send_pending() -> None:
    """drain_producer_buffers counts records in ``_send_pending``: Faust's buffer task must
    take a record off its queue and then await ``self._send_pending`` (bound once, when
    the task starts, so the class patch must come before any app starts)."""
    from faust.transport.producer import ProducerBuffer

    source = inspect.getsource(ProducerBuffer._handle_pending.fun)  # a mode ServiceTask
    assert "send_pending = self._send_pending" in source
    assert "msg = await get_pending()" in source
    assert list(inspect.signature(ProducerBuffer.flush_atmost).parameters) == [
        "self", "max_messages",
    ]  # fmt: skip
    assert isinstance(inspect.getattr_static(ProducerBuffer, "size"), property)


def test_flush_waits_for_the_record_in_hand() -> None:
    """Faust's own flush returns 0.1 s after the queue empties even while the last record
    is still being handed over; the patched flush waits until it is."""
    drain_producer_buffers()
    done: list[str] = []

    async def publish_message(fut: Any, wait: bool = False) -> None:
        del fut, wait
        await asyncio.sleep(0.3)  # a slow hand-over, longer than Faust's 0.1 s
        done.append("handed over")

    record = SimpleNamespace(message=SimpleNamespace(channel=SimpleNamespace(
        publish_message=publish_message)))  # fmt: skip

    async def run() -> None:
        # the app inside the loop: Faust's services bind the loop they are made on
        app = create_faust_app(_settings(), "amlhp-test-internals")
        buffer = app.producer.buffer
        await asyncio.wait_for(buffer.start(), 10)
        try:
            buffer.put(record)
            await asyncio.sleep(0.01)  # the buffer task takes it: size 0, one in flight
            await asyncio.wait_for(buffer.flush(), 10)
            assert done == ["handed over"]
        finally:
            await asyncio.wait_for(buffer.stop(), 10)

    asyncio.run(run())


def test_faust_flushes_the_producer_right_before_it_commits() -> None:
    """refuse_commit_after_failed_send raises from the driver's ``Producer.flush``, which
    Faust awaits right before committing offsets (outside transactions)."""
    from faust.sensors import Sensor
    from faust.transport.consumer import Consumer
    from faust.transport.drivers.aiokafka import Producer

    source = inspect.getsource(Consumer._commit_offsets)
    flush_at = source.index("await self.app.producer.flush()")
    assert flush_at < source.index("did_commit = await self._commit(committable_offsets)")
    assert inspect.iscoroutinefunction(Producer.flush)
    assert list(inspect.signature(Sensor.on_send_error).parameters) == [
        "self", "producer", "exc", "state",
    ]  # fmt: skip


def test_the_consumer_internals_in_order_reads() -> None:
    """InOrder and partition_end read the committed offsets Faust keeps (set at assignment
    and after each commit), the flow flag a stop or a rebalance clears, the high-water
    mark, and seek back; and the fetch loop still records an abandoned delivery's offset
    as read, the reason InOrder exists."""
    from faust.transport.consumer import Consumer

    app = create_faust_app(_settings(), "amlhp-test-internals-consumer")
    consumer = app.consumer
    assert consumer._committed_offset.get(("t", 0)) is None  # a defaultdict(None)
    assert consumer.flow_active is True
    consumer.stop_flow()
    assert consumer.flow_active is False
    from faust.transport.consumer import ThreadDelegateConsumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    assert isinstance(consumer, ThreadDelegateConsumer)
    assert list(inspect.signature(consumer.seek_wait).parameters) == ["partitions"]
    # the seek runs in the consumer's thread, and the fetch loop reads again from there
    seek = inspect.getsource(AIOKafkaConsumerThread.seek_wait)
    assert "await self.call_thread(self._seek_wait" in seek
    assert "self.consumer._read_offset[tp] = offset" in inspect.getsource(
        AIOKafkaConsumerThread._seek_wait
    )
    assert callable(consumer.highwater)
    # a stalled partition never committed nor handled is sought back to its first offset
    assert list(inspect.signature(consumer.earliest_offsets).parameters) == ["partitions"]
    drain = inspect.getsource(Consumer._drain_messages)
    assert "callback(message), self.suspend_flow.wait()" in drain
    assert drain.index("self.suspend_flow.wait()") < drain.index("set_read_offset(tp, offset)")
    commit = inspect.getsource(Consumer._commit_offsets)
    assert "self._committed_offset.update(committable_offsets)" in commit
    # InOrder's stall check: the partitions assigned here, and the app's rebalance flag
    assert list(inspect.signature(consumer.assignment).parameters) == []
    assert app.rebalancing is False
    app.on_rebalance_start()
    assert app.rebalancing is True


def test_the_changelog_writer_writes_the_store_and_the_changelog_faust_recovers_from(
    kafka_settings: Settings,
) -> None:
    """A table's ``data`` is its local store and ``changelog_topic`` names the topic Faust
    recovers it from; the writer puts each record on the partition given, deletes as
    tombstones, and has them all at the broker once ``flush`` returns (read back here)."""
    from confluent_kafka import Consumer, TopicPartition

    from amlhp.pipeline.faust_app import ChangelogWriter
    from amlhp.streams.topics import TopicSpec, admin_client, create_topics

    app_id = f"{kafka_settings.consumer_group}-table"

    async def build() -> Any:  # Faust's services bind the loop they are made on
        app = create_faust_app(kafka_settings, app_id)
        return app.Table("t", default=None, key_type=bytes, value_type=bytes, partitions=2)

    table = asyncio.run(build())
    topic = table.changelog_topic.get_topic_name()
    assert topic == f"{app_id}-t-changelog"
    create_topics(admin_client(kafka_settings.kafka_config()),
                  [TopicSpec(name=topic, partitions=2, replication_factor=1)])  # fmt: skip
    writer = ChangelogWriter(kafka_settings, table)
    writer.commit([(1, b"a", b"1"), (0, b"b", b"2"), (1, b"a", None)])
    assert dict(table.data.items()) == {b"b": b"2"}
    consumer = Consumer({"bootstrap.servers": kafka_settings.bootstrap_servers,
                         "group.id": f"{app_id}-read", "enable.auto.commit": False})  # fmt: skip
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in (0, 1)])
        got: list[tuple[int, bytes | None, bytes | None]] = []
        while len(got) < 3:
            msg = consumer.poll(10)
            assert msg is not None, f"only {got} came back"
            got.append((int(msg.partition() or 0), msg.key(), msg.value()))
    finally:
        consumer.close()
    assert sorted(got, key=lambda r: r[0]) == [(0, b"b", b"2"), (1, b"a", b"1"), (1, b"a", None)]


def test_a_table_write_goes_to_the_current_events_changelog_partition() -> None:
    """``table[key] = value`` sends the changelog record to the partition of the event
    being processed: why the alert stage judges a verdict batch that waited for the flow
    worker only during an event of its own partition (amlhp.alerts.stage ``drain``); in
    another partition's event its gateway's state would go to the wrong changelog and a
    restart would recover it without those writes."""
    from faust.tables.base import Collection
    from faust.tables.table import Table

    assert "self.send_changelog(self.partition_for_key(key)" in inspect.getsource(Table.on_key_set)
    rule = inspect.getsource(Collection.partition_for_key)
    assert "event = current_event()" in rule
    assert "return event.message.partition" in rule


def test_the_worker_logs_at_warning_without_a_spinner_handler() -> None:
    """Faust's spinner puts the root logger at DEBUG for the worker's life (every debug
    call of Faust and aiokafka then builds a record); ``faust_worker`` drops the spinner,
    so the root logger stays at the worker's WARNING. Faust's own default is checked too:
    if it no longer does this, the patch can go."""
    import logging

    from faust.worker import Worker

    from amlhp.pipeline.faust_app import faust_worker

    def root_after_setup(worker: Any) -> tuple[int, list[str]]:
        root = logging.getLogger()
        saved = root.level, list(root.handlers)
        try:
            worker._setup_logging()  # what execute_from_commandline does first
            return root.level, [type(h).__name__ for h in root.handlers]
        finally:
            root.setLevel(saved[0])
            root.handlers[:] = saved[1]

    app = create_faust_app(_settings(), "amlhp-test-logging")
    level, handlers = root_after_setup(faust_worker(app))
    assert level == logging.WARNING
    assert "SpinnerHandler" not in handlers
    level, handlers = root_after_setup(Worker(app, loglevel="WARNING", quiet=True))
    assert level == logging.DEBUG
    assert "SpinnerHandler" in handlers
