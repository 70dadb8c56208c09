"""The Faust worker: encode and score agents between the raw, encoded and verdict topics.

* ``encode`` agent: raw batch -> encoded batch (ok rows) + dead letters (rows the
  encoder refused with a reason, or the whole message when it is not a valid batch).
* ``score`` agent: takes encoded messages with ``take_events(max_, within=...)``
  (bounded by size and by time), scores them in a thread so the event loop keeps its
  Kafka heartbeats, and publishes verdict batches keyed by gateway.
* a timer checks the model artifact and swaps in a new version atomically.

Faust commits a source offset only after the agent has processed the event and the
producer has flushed, so a crash re-delivers (at-least-once); the sink and the
accounting de-duplicate on (gateway, seq).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc

from amlhp.encoders.layout import EncoderConfig
from amlhp.metrics.definitions import STEP_ENCODE, STEP_SCORE, process_metrics
from amlhp.metrics.faust_sensor import install_faust_monitor
from amlhp.pipeline.faust_app import create_faust_app, run_faust_worker, run_to_end
from amlhp.pipeline.kafka_io import PUBLISHED_HEADER, capture_timestamp_ms
from amlhp.settings import Settings
from amlhp.streams.deadletter import Origin
from amlhp.streams.model_holder import Loader, ModelHolder
from amlhp.streams.processing import (
    EncodedMessage,
    decode_encoded,
    encode_message,
    row_chunks,
    score_batches,
    split_by_gateway,
)
from amlhp.wire import to_ipc

if TYPE_CHECKING:
    from amlhp.streams.explain_sample import ExplainConfig

log = logging.getLogger(__name__)
INGESTED_HEADER = "amlhp-ingested-at-ns"
#: Rows per produced message: keeps every message far below Kafka's 1 MB default limit.
MAX_ROWS_PER_MESSAGE = 1000
ENCODED_HEADER = "amlhp-encoded-at-ns"


def _header_int(event: Any, name: str) -> int | None:
    """An integer Kafka header of an event (stage timestamps), ``None`` when absent."""
    headers = event.message.headers or []
    items = headers.items() if isinstance(headers, dict) else headers
    for key, value in items:
        if key == name and value:
            try:
                return int(value)
            except ValueError:
                return None
    return None


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


def create_app(settings: Settings, options: WorkerOptions, loader: Loader) -> Any:
    """Build the Faust app with its agents and timer (nothing runs until started)."""
    app = create_faust_app(settings, options.app_id or settings.consumer_group)
    topics = settings.topics
    raw_topic = app.topic(topics.raw, value_serializer="raw", key_serializer="raw")
    encoded_topic = app.topic(topics.encoded, value_serializer="raw", key_serializer="raw")
    verdict_topic = app.topic(topics.verdicts, value_serializer="raw", key_serializer="raw")
    dead_topic = app.topic(topics.dead_letter, value_serializer="raw", key_serializer="raw")
    holder = ModelHolder(options.model_path, loader)

    def encoder_config() -> EncoderConfig:
        """Encode as the serving model was trained (its P and masked fields), so a model
        trained with other masking than the default never sees fields it never saw."""
        config = getattr(holder.current, "encoder_config", None)
        if isinstance(config, EncoderConfig):
            return config
        return EncoderConfig(payload_bytes=settings.payload_bytes)

    encode_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="amlhp-encode")
    score_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="amlhp-score")
    # Tap messages hold up to a few hundred packets: this many make about one max_batch.
    max_messages = max(1, -(-options.max_batch // 256))
    app.amlhp_holder = holder
    metrics = process_metrics()  # served by `amlhp worker --metrics-port`
    install_faust_monitor(app, metrics)
    metrics.sync_model(holder)
    explainer = None
    if options.explain is not None:
        from amlhp.streams.explain_sample import faust_explainer

        explainer = faust_explainer(app, topics.explanations, options.explain, metrics)

    def _key(event: Any) -> str | None:
        key = event.key
        return key.decode("utf-8", "replace") if isinstance(key, bytes) else None

    async def encode_one(event: Any) -> None:
        loop = asyncio.get_running_loop()
        msg = event.message
        origin = Origin(msg.topic, msg.partition, msg.offset)
        result = await loop.run_in_executor(
            encode_pool, encode_message, event.value, origin, encoder_config(), _key(event)
        )
        if result.encoded is not None:
            # entered Kafka: the tap's publish time; the message timestamp is capture time
            ingested = _header_int(event, PUBLISHED_HEADER) or time.time_ns()
            headers = {
                INGESTED_HEADER: str(ingested).encode(),
                ENCODED_HEADER: str(time.time_ns()).encode(),
            }
            for part in row_chunks(result.encoded, MAX_ROWS_PER_MESSAGE):
                encoded_value = to_ipc(part)
                await encoded_topic.send(key=event.key, value=encoded_value, headers=headers)
                metrics.count_out(STEP_ENCODE, _key(event), part.num_rows, len(encoded_value))
        if result.dead is not None:
            await dead_topic.send(key=event.key, value=to_ipc(result.dead))
            metrics.count_dead_batch(STEP_ENCODE, result.dead)
        metrics.count_in(STEP_ENCODE, _key(event), result.packets_in, len(event.value or b""))
        metrics.observe_batch(STEP_ENCODE, result.packets_in)

    @app.agent(raw_topic, name="encode")
    async def encode(stream: Any) -> None:
        async for event in stream.events():
            await run_to_end(encode_one(event))  # never acked half done

    async def score_some(events: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        messages = [
            EncodedMessage(
                e.value,
                Origin(e.message.topic, e.message.partition, e.message.offset),
                _key(e),
                _header_int(e, INGESTED_HEADER),
                _header_int(e, ENCODED_HEADER),
            )
            for e in events
        ]
        scorer = holder.current  # one version for the whole micro-batch
        # records encoded for another model's P or masking are never scored by this one
        decoded = decode_encoded(messages, getattr(scorer, "encoder_config", None))
        for dead in decoded.dead:
            await dead_topic.send(key=None, value=to_ipc(dead))
            metrics.count_dead_batch(STEP_SCORE, dead)
        metrics.count_score_input(messages, decoded.batches)
        if not decoded.batches:
            return
        verdicts = await loop.run_in_executor(
            score_pool,
            score_batches,
            decoded.batches,
            scorer,
            options.max_batch,
            decoded.timings,
        )
        metrics.set_model_version(scorer.version)
        metrics.record_verdicts(verdicts)
        if explainer is not None:  # off this loop and off the scoring thread
            explainer.offer(decoded.batches, verdicts, scorer, loop)
        for gateway, by_gateway in split_by_gateway(verdicts):
            for part in row_chunks(by_gateway, MAX_ROWS_PER_MESSAGE):
                verdict_value = to_ipc(part)
                newest = int(pc.max(part.column("ts_ns")).as_py())
                await verdict_topic.send(
                    key=gateway.encode(),
                    value=verdict_value,
                    timestamp=capture_timestamp_ms(newest) / 1000.0,
                )
                metrics.count_out(STEP_SCORE, gateway, part.num_rows, len(verdict_value))

    @app.agent(encoded_topic, name="score")
    async def score(stream: Any) -> None:
        within = options.max_delay_ms / 1000.0
        async for events in stream.take_events(max_messages, within=within):
            await run_to_end(score_some(list(events)))  # never acked half done

    @app.timer(interval=options.reload_interval_s)
    async def reload_model() -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, holder.check)
        metrics.sync_model(holder)

    return app


def run_worker(settings: Settings, options: WorkerOptions, loader: Loader) -> None:
    """Run a Faust worker in the foreground until SIGTERM/SIGINT."""
    app = create_app(settings, options, loader)
    current = app.amlhp_holder.current
    backend = getattr(current, "backend", "?")
    isa = getattr(current, "isa", None)
    workers = getattr(current, "workers", 1)
    served = f"backend {backend}" + (f", {isa}" if isa else "") + f", {workers} scoring threads"
    log.info("worker starting with model %s (%s)", current.version, served)
    run_faust_worker(app)
