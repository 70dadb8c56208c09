"""The one Faust app factory: the shared configuration, the broker URL and overrides."""

from __future__ import annotations

import asyncio

import pytest

from amlhp.pipeline.faust_app import create_faust_app
from amlhp.pipeline.faust_settings import faust_broker_url, faust_credentials
from amlhp.settings import Settings


def test_broker_url_lists_every_bootstrap_server() -> None:
    assert faust_broker_url("h1:9092, h2:9093,") == "kafka://h1:9092;kafka://h2:9093"


def test_app_takes_the_settings_and_the_overrides() -> None:
    settings = Settings.model_validate({"partitions": 3, "replication_factor": 2})
    app = create_faust_app(settings, "amlhp-test", broker_commit_interval=2.5)
    assert app.conf.id == "amlhp-test"
    assert app.conf.topic_partitions == 3
    assert app.conf.topic_replication_factor == 2
    assert app.conf.producer_acks == -1
    assert app.conf.broker_commit_interval == 2.5
    assert faust_credentials(settings) is None  # PLAINTEXT unless -X says otherwise


def test_in_order_holds_events_past_a_hole_and_admits_redeliveries() -> None:
    """The Faust internals InOrder reads (the consumer's committed offsets and its flow
    flag) exist on a real, unstarted Faust consumer, and its rule: in order or at/below
    the last handled is admitted, past a hole is held, a hole outlasting ``give_up_s``
    with the flow running is reported as missing offsets."""
    from faust.types import TP

    from amlhp.pipeline.faust_app import InOrder, committed_offset

    app = create_faust_app(Settings.model_validate({}), "amlhp-test-in-order")
    assert committed_offset(app, "verdicts", 0) is None
    guard = InOrder(app, "verdicts", give_up_s=30.0)
    assert guard.admit(0, 5, now=0.0) == (True, 0)  # never committed: from anywhere
    assert guard.admit(0, 6, now=0.0) == (True, 0)
    assert guard.admit(0, 9, now=1.0) == (False, 0)  # 7 and 8 never came
    assert guard.holes[0][0] == 7
    assert guard.admit(0, 10, now=2.0) == (False, 0)
    assert guard.admit(0, 7, now=3.0) == (True, 0)  # the seek back re-delivers 7
    assert 0 not in guard.holes
    assert guard.admit(0, 3, now=3.0) == (True, 0)  # a re-delivery: the agent de-duplicates
    assert guard.next[0] == 4

    app.consumer._committed_offset[TP("verdicts", 1)] = 40  # resumed there at assignment
    assert committed_offset(app, "verdicts", 1) == 40
    assert guard.admit(1, 40, now=0.0) == (True, 0)
    assert guard.admit(1, 45, now=0.0) == (False, 0)
    app.consumer.flow_active = True
    assert guard.admit(1, 46, now=29.0) == (False, 0)
    assert guard.admit(1, 47, now=31.0) == (True, 6)  # 41..46 gone: counted, not waited for
    app.consumer.flow_active = False  # a stop or a rebalance: never give up
    assert guard.admit(1, 60, now=100.0) == (False, 0)
    assert guard.admit(1, 61, now=200.0) == (False, 0)


def test_in_order_seeks_back_a_partition_stalled_short_of_its_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hole at the end (Faust abandoned a partition's last events, and none follows)
    shows no held event: a partition behind its high-water mark from which nothing came
    for ``stall_s`` while the flow runs is sought back to where this process is in it;
    one caught up, or one during a stop or a rebalance, is left alone."""
    from faust.types import TP

    from amlhp.pipeline.faust_app import InOrder

    app = create_faust_app(Settings.model_validate({}), "amlhp-test-stall")
    consumer = app.consumer
    sought: list[dict[TP, int]] = []

    async def seek_wait(offsets: dict[TP, int]) -> None:
        sought.append(dict(offsets))

    monkeypatch.setattr(consumer, "assignment", lambda: {TP("raw", 0), TP("other", 0)})
    monkeypatch.setattr(consumer, "highwater", lambda tp: 10)
    monkeypatch.setattr(consumer, "seek_wait", seek_wait)
    consumer._committed_offset[TP("raw", 0)] = 4  # resumed there at assignment
    consumer.flow_active = True
    app.rebalancing = False
    guard = InOrder(app, "raw", stall_s=5.0)
    assert guard.position(0) == 4
    assert not guard.caught_up(0)
    assert guard.behind() == {0}

    asyncio.run(guard.rewind_held(now=100.0))  # the clock starts: nothing came yet
    asyncio.run(guard.rewind_held(now=104.0))
    assert sought == []
    asyncio.run(guard.rewind_held(now=105.0))
    assert sought == [{TP("raw", 0): 4}]
    asyncio.run(guard.rewind_held(now=107.0))  # not again before another stall_s
    assert len(sought) == 1

    for offset in range(4, 10):  # the re-delivered events, handled in order
        assert guard.admit(0, offset, now=108.0) == (True, 0)
    assert guard.caught_up(0)
    assert guard.behind() == set()
    asyncio.run(guard.rewind_held(now=200.0))
    assert len(sought) == 1

    # a partition where nothing was handled and the group never committed: from its start
    async def earliest_offsets(*tps: TP) -> dict[TP, int]:
        return dict.fromkeys(tps, 2)

    monkeypatch.setattr(consumer, "earliest_offsets", earliest_offsets)
    monkeypatch.setattr(consumer, "assignment", lambda: {TP("raw", 0), TP("raw", 1)})
    assert guard.position(1) is None
    asyncio.run(guard.rewind_held(now=210.0))
    asyncio.run(guard.rewind_held(now=215.0))
    assert sought[1:] == [{TP("raw", 1): 2}]
    guard.quiet.clear()

    monkeypatch.setattr(consumer, "assignment", lambda: {TP("raw", 0), TP("other", 0)})
    monkeypatch.setattr(consumer, "highwater", lambda tp: 12)  # more came, not yet read
    consumer.flow_active = False  # a stop: Faust seeks itself afterwards
    asyncio.run(guard.rewind_held(now=300.0))
    asyncio.run(guard.rewind_held(now=400.0))
    assert len(sought) == 2
    assert guard.quiet == {}


def test_in_order_starts_a_never_committed_partition_at_its_first_offset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the group never committed, the first event handled must be the partition's
    first offset: Faust may abandon a new group's first delivery (seen on the alert stage:
    a flow partition's third message came first, and its first two flows were never
    counted). ``gate`` looks the start up, holds the later event and seeks back."""
    from types import SimpleNamespace

    from faust.types import TP

    from amlhp.pipeline.faust_app import InOrder

    app = create_faust_app(Settings.model_validate({}), "amlhp-test-in-order-start")
    consumer = app.consumer
    sought: list[dict[TP, int]] = []

    async def earliest_offsets(*tps: TP) -> dict[TP, int]:
        return dict.fromkeys(tps, 0)

    async def seek_wait(offsets: dict[TP, int]) -> None:
        sought.append(dict(offsets))

    monkeypatch.setattr(consumer, "earliest_offsets", earliest_offsets)
    monkeypatch.setattr(consumer, "seek_wait", seek_wait)
    guard = InOrder(app, "flows")

    def event(offset: int) -> SimpleNamespace:
        return SimpleNamespace(message=SimpleNamespace(partition=0, offset=offset))

    assert asyncio.run(guard.gate(event(2))) == (False, 0)  # 0 and 1 never came
    assert sought == [{TP("flows", 0): 0}]
    assert guard.position(0) == 0
    for offset in (0, 1, 2):  # the seek re-delivers them, in order
        assert asyncio.run(guard.gate(event(offset))) == (True, 0)
    assert guard.next[0] == 3
