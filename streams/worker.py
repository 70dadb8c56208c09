"""The Faust worker: one agent from the raw topic to verdicts and dead letters.

The agent takes raw messages in offset order and gathers them into micro-batches, bounded
by size (``max_batch`` packets, counted from the tap's header) and by time
(``max_delay_ms``, a Faust timer flushes a batch that waits longer). One call in a thread
decodes, encodes and scores a micro-batch with one model version, chosen once for the
batch, so the encoder configuration (P, masked fields) is always that model's own, also
across a hot reload. Verdicts go to the verdict partition numbered as the raw partition
they came from (one message per partition and batch), dead letters beside them;
another timer checks the model artifact and swaps in a new version atomically.

Events are acked by hand, once their micro-batch is published: Faust acks an event in
its iterator's ``finally`` even when a stop interrupts the agent, and a commit past work
never done loses its verdicts. They are admitted through
:class:`~amlhp.pipeline.faust_app.InOrder`: Faust can skip events at a start, a stop or a
rebalance, and since the sinks drop a (gateway, seq) at or below what they stored, a
verdict published after a later one of its gateway would be dropped as a re-delivery.
Faust commits an offset only after the producer flushed, so a crash re-delivers
(at-least-once) and the sinks de-duplicate on (gateway, seq): exactly once in the dataset.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc

from amlhp.encoders.layout import EncoderConfig
from amlhp.metrics.definitions import STEP_ENCODE, STEP_SCORE, process_metrics
from amlhp.metrics.faust_sensor import install_faust_monitor
from amlhp.pipeline.faust_app import InOrder, create_faust_app, run_faust_worker, run_to_end
from amlhp.pipeline.kafka_io import PACKETS_HEADER, PUBLISHED_HEADER, capture_timestamp_ms
from amlhp.settings import Settings
from amlhp.streams.deadletter import Origin
from amlhp.streams.model_holder import Loader, ModelHolder
from amlhp.streams.processing import (
    MicroBatch,
    RawMessage,
    process_micro_batch,
    row_chunks,
    split_by_partition,
)
from amlhp.wire import to_ipc

if TYPE_CHECKING:
    from amlhp.streams.explain_sample import ExplainConfig

log = logging.getLogger(__name__)
#: Rows per produced message: keeps every message far below Kafka's 1 MB default limit.
MAX_ROWS_PER_MESSAGE = 1000
#: Messages in one micro-batch at most, whatever their packets: a fleet of quiet gateways
#: sends messages of one packet each, and a batch is cut at ``max_batch`` packets first.
MAX_MESSAGES = 1024
#: micro-batches cut and waiting to be scored before the agent stops taking events
QUEUED_BATCHES = 2


def raw_message(event: Any) -> tuple[RawMessage, int]:
    """An event as the scoring step takes it, and its packets (the tap's header; 1 when
    absent). The headers are read once, here."""
    numbers: dict[str, int] = {}
    headers = event.message.headers or []
    for key, value in headers.items() if isinstance(headers, dict) else headers:
        if key in (PACKETS_HEADER, PUBLISHED_HEADER) and value:
            try:
                numbers[key] = int(value)
            except ValueError:
                continue
    msg, key = event.message, event.key
    message = RawMessage(
        event.value,
        Origin(msg.topic, msg.partition, msg.offset),
        key.decode("utf-8", "replace") if isinstance(key, bytes) else None,
        # entered Kafka: the tap's publish time; the message timestamp is capture time
        numbers.get(PUBLISHED_HEADER) or time.time_ns(),
    )
    return message, numbers.get(PACKETS_HEADER) or 1


@dataclass
class Gathering:
    """The micro-batch the agent is gathering: its admitted events (acked by hand through
    ``stream``, the agent's no-ack stream, once published) and their messages, since
    when, and its packets so far."""

    stream: Any = None
    events: list[Any] = field(default_factory=list)
    messages: list[RawMessage] = field(default_factory=list)
    since: float = 0.0
    packets: int = 0

    def add(self, event: Any) -> None:
        message, packets = raw_message(event)
        if not self.events:
            self.since = time.monotonic()
        self.events.append(event)
        self.messages.append(message)
        self.packets += packets

    def take(self) -> tuple[list[Any], list[RawMessage]]:
        taken = self.events, self.messages
        self.events, self.messages, self.packets = [], [], 0
        return taken


@dataclass(frozen=True)
class Outgoing:
    """A micro-batch ready to send: dead-letter values, and (partition, value, newest
    capture time) per verdict message."""

    done: MicroBatch
    dead: list[bytes]
    verdicts: list[tuple[int, bytes, int]]


@dataclass(frozen=True)
class WorkerOptions:
    """Tuning of one worker process."""

    model_path: Path
    max_batch: int = 1024
    max_delay_ms: float = 20.0
    reload_interval_s: float = 2.0
    app_id: str | None = None
    #: Sampled per-packet explanations (``--explain-every``); None: off.
    explain: ExplainConfig | None = None
    #: Learnt sites (``amlhp model adapt``), watched like the model; None: none.
    sites_dir: Path | None = None


def create_app(settings: Settings, options: WorkerOptions, loader: Loader) -> Any:
    """Build the Faust app with its agent and timers (nothing runs until started)."""
    app = create_faust_app(settings, options.app_id or settings.consumer_group)
    topics = settings.topics
    raw_topic = app.topic(topics.raw, value_serializer="raw", key_serializer="raw")
    verdict_topic = app.topic(topics.verdicts, value_serializer="raw", key_serializer="raw")
    dead_topic = app.topic(topics.dead_letter, value_serializer="raw", key_serializer="raw")
    holder = ModelHolder(options.model_path, loader, options.sites_dir)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="amlhp-score")
    within_s = options.max_delay_ms / 1000.0
    in_order = InOrder(app, topics.raw)
    metrics = process_metrics()  # served by `amlhp worker --metrics-port`
    install_faust_monitor(app, metrics)
    metrics.sync_model(holder)
    explainer = None
    if options.explain is not None:
        from amlhp.streams.explain_sample import faust_explainer

        explainer = faust_explainer(app, topics.explanations, options.explain, metrics)

    def encoder_config(scorer: Any) -> EncoderConfig:
        """Encode as ``scorer`` was trained (its P and masked fields), so a model trained
        with other masking than the default never sees fields it never saw."""
        config = getattr(scorer, "encoder_config", None)
        if isinstance(config, EncoderConfig):
            return config
        return EncoderConfig(payload_bytes=settings.payload_bytes)

    def prepare(messages: list[RawMessage], scorer: Any) -> Outgoing:
        """The whole micro-batch's work off the event loop (in the pool's thread): decode,
        encode, score, count, and the messages to send, serialized."""
        done = process_micro_batch(messages, scorer, options.max_batch, encoder_config(scorer))
        for msg, packets in zip(messages, done.packets_in, strict=True):
            metrics.count_in(STEP_ENCODE, msg.gateway, packets, len(msg.value or b""))
        metrics.observe_batch(STEP_ENCODE, sum(done.packets_in))
        for dead in done.dead:
            metrics.count_dead_batch(STEP_ENCODE, dead)
        out = Outgoing(done, [to_ipc(dead) for dead in done.dead], [])
        if done.verdicts is None:
            return out
        metrics.count_score_input(done.verdicts)
        metrics.set_model_version(scorer.version)
        metrics.record_verdicts(done.verdicts)
        assert done.partitions is not None  # set with the verdicts
        for partition, rows in split_by_partition(done.verdicts, done.partitions):
            for part in row_chunks(rows, MAX_ROWS_PER_MESSAGE):
                value = to_ipc(part)
                newest = int(pc.max(part.column("ts_ns")).as_py())
                out.verdicts.append((partition, value, newest))
                counts = pc.value_counts(part.column("gateway")).to_pylist()
                for count in counts:  # bytes shared out by rows, for the per-gateway series
                    n = count["counts"]
                    metrics.count_out(
                        STEP_SCORE, count["values"], n, len(value) * n // part.num_rows
                    )
        return out

    async def publish(messages: list[RawMessage]) -> None:
        loop = asyncio.get_running_loop()
        scorer = holder.current  # one version, and its encoding, for the whole micro-batch
        out = await loop.run_in_executor(pool, prepare, messages, scorer)
        for value in out.dead:
            await dead_topic.send(key=None, value=value)
        for partition, value, newest in out.verdicts:
            await verdict_topic.send(
                value=value, partition=partition, timestamp=capture_timestamp_ms(newest) / 1000.0
            )
        verdicts = out.done.verdicts
        if explainer is not None and verdicts is not None:  # off this loop and this thread
            explainer.offer(out.done.encoded, verdicts, scorer, loop)

    # The agent gathers micro-batches in offset order and cuts them into a queue that one
    # task scores and publishes in that order, so that the next batch is gathered (and
    # Faust fetches) while a thread scores this one. The timer that cuts a batch waiting
    # too long never blocks; the agent waits while more than QUEUED_BATCHES wait.
    cuts: deque[tuple[list[Any], list[RawMessage]]] = deque()
    cut_made, room = asyncio.Event(), asyncio.Event()
    gathering = Gathering()

    def cut() -> None:
        cuts.append(gathering.take())
        cut_made.set()

    @app.agent(raw_topic, name="score")
    async def score(stream: Any) -> None:
        gathering.stream = stream.noack()
        async for event in gathering.stream.events():
            admitted, _ = await in_order.gate(event)
            if not admitted:
                continue
            gathering.add(event)
            if gathering.packets >= options.max_batch or len(gathering.events) >= MAX_MESSAGES:
                cut()
                while len(cuts) > QUEUED_BATCHES:
                    room.clear()
                    await room.wait()

    @app.task
    async def publisher() -> None:
        while True:
            while not cuts:
                cut_made.clear()
                await cut_made.wait()
            events, messages = cuts[0]
            await run_to_end(publish(messages))  # never acked half done
            for event in events:
                await gathering.stream.ack(event)
            cuts.popleft()
            room.set()

    @app.timer(interval=max(0.005, within_s / 2))
    async def cut_due() -> None:
        await in_order.rewind_held()
        if gathering.events and time.monotonic() - gathering.since >= within_s:
            cut()

    @app.timer(interval=options.reload_interval_s)
    async def reload_model() -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, holder.check)
        metrics.sync_model(holder)

    return app, holder


def run_worker(settings: Settings, options: WorkerOptions, loader: Loader) -> None:
    """Run a Faust worker in the foreground until SIGTERM/SIGINT."""
    app, holder = create_app(settings, options, loader)
    current = holder.current
    backend = getattr(current, "backend", "?")
    isa = getattr(current, "isa", None)
    workers = getattr(current, "workers", 1)
    served = f"backend {backend}" + (f", {isa}" if isa else "") + f", {workers} scoring threads"
    log.info("worker starting with model %s (%s)", current.version, served)
    run_faust_worker(app)
