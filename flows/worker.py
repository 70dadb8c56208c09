"""The flow worker: a Faust app of its own that turns the raw topic into flow verdicts.

Why a separate app reading the *raw* topic: the flow record needs up to 3,000 payload bytes
per flow and the encoded topic carries only P = 64 per packet, and a separate consumer
group (``<group>-flows``) leaves the packet worker's offsets, batching and latency alone.
Packets are parsed with the same encoder (:mod:`amlhp.encoders.fast`), see
:mod:`amlhp.flows.assembler`.

State lives in one Faust table (``flowstate``, changelog-backed, in-memory store), keyed
by bytes, written to the changelog partition of the raw partition its gateway's messages
come from (raw messages are keyed by gateway, so a gateway lives on one partition),
by librdkafka rather than Faust's producer (:class:`~amlhp.pipeline.faust_app.ChangelogWriter`:
about two records for three packets, and Faust's Python hand-over of each cost more than
the flow model), delivered before the step's event is acked:

* ``f|<flow key>``: an open flow record (:meth:`FlowState.to_bytes`);
* ``h|<gateway>|<device>``: the device's latest closed flows (the matrix context);
* ``w|<gateway>``: partition, last applied tap ``seq``, the gateway's event clock and its
  count of flow verdicts (the next ``flow_seq``);
* ``d|<gateway>|<host>``: the host's device inventory entry (:mod:`amlhp.flows.inventory`).

Every changed inventory entry is also sent to the compacted topic ``amlhp.devices``
(``amlhp.device`` v1, key ``<gateway>|<host>``), on the partition of the gateway's raw
messages: co-partitioned with the verdicts, so the alert stage reads a gateway's devices
on the partition it reads the gateway's verdicts from.

A restarted worker gets the table back from the changelog before it consumes; the
``seq`` watermark (written after the flow states it covers, on the same partition, so in
order) makes re-delivered raw messages no-ops, so a flow that spans a restart is counted
exactly once. That needs a partition's raw messages in offset order, none skipped, which
Faust does not promise around a start, a stop or a rebalance: the agent admits them
through :class:`~amlhp.pipeline.faust_app.InOrder` (an event past a hole is held, unacked,
and the partition sought back to the hole).

Flow verdicts are at least once on the topic and exactly once in the dataset: a step
publishes its verdicts before it writes the state that says they were made, so a worker
killed in between does the step again from the state before it, on the same events in
the same order, and publishes the same flows under the same ``flow_seq`` (the gateway's
count of verdicts, kept in its watermark entry); the sink drops a (gateway, flow_seq)
it has stored (:class:`~amlhp.pipeline.parquet_sink.HighWaterMarks`). Flows also
ignore a packet whose ``seq`` they already hold, for a stop that left part of a step's
writes in the changelog.

Flows close when their lifetime has passed on the gateway's event clock (its latest packet
time), or when the gateway has been silent for ``idle_close_s`` seconds of wall time (the
end of a replay, a tap that stopped). Closing from the idle timer writes the table with the
gateway's recorded partition, since there is no current event to take it from.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pyarrow as pa

from amlhp.flows.assembler import FlowAssembler
from amlhp.flows.inventory import DeviceKey, DeviceTally, device_headers, fold, inventory_batch
from amlhp.flows.online import DEFAULT_EXPLAIN_EVERY, FlowScorer
from amlhp.flows.record import FlowConfig, FlowState, parse_key
from amlhp.flows.worker_state import (
    WATERMARK,
    decode_history,
    device_key,
    encode_history,
    flow_key,
    history_key,
    known_gateways,
    unpack_watermark,
    watermark_key,
)
from amlhp.metrics.definitions import STEP_FLOWS, process_metrics
from amlhp.pipeline.faust_app import (
    ChangelogWriter,
    InOrder,
    create_faust_app,
    run_faust_worker,
    run_to_end,
)
from amlhp.settings import Settings
from amlhp.wire import (
    FLOW_CLOCK_HEADER,
    FLOW_DEVICES_HEADER,
    RAW,
    BatchDecodeError,
    from_ipc,
    to_ipc,
)

log = logging.getLogger(__name__)
TABLE = "flowstate"
#: the reason of a packet with neither address in the flow model's local networks
NO_LOCAL_ENDPOINT = "no_local_endpoint"
#: flow verdicts per Kafka message (one is ~0.3 KB with its probabilities and attributions)
MESSAGE_ROWS = 500


@dataclass(frozen=True)
class FlowWorkerOptions:
    model_path: Path
    #: ``--attack-model`` (:func:`amlhp.flows.artifact.load_attack_model`)
    attack_model: str | None = None
    app_id: str | None = None
    idle_close_s: float = 10.0
    explain_every: int = DEFAULT_EXPLAIN_EVERY
    tick_s: float = 1.0


Write = tuple[int, bytes, bytes | None]  # partition, key, value (None: delete)


@dataclass
class FlowRuntime:
    """Everything the agent does, free of Faust: assemble, close, score, list writes."""

    config: FlowConfig
    scorer: FlowScorer
    idle_close_s: float
    assembler: FlowAssembler = field(init=False)
    history: dict[tuple[str, str], list[FlowState]] = field(default_factory=dict)
    partition_of: dict[str, int] = field(default_factory=dict)
    last_seen: dict[str, float] = field(default_factory=dict)
    devices: dict[DeviceKey, DeviceTally] = field(default_factory=dict)
    touched: set[DeviceKey] = field(default_factory=set)
    invalid_messages: int = 0
    #: packets put in no flow since the last :meth:`take_unused`, by reason
    unused: Counter[str] = field(default_factory=Counter)
    #: per gateway, the event clock its flow verdict messages last told
    announced: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.assembler = FlowAssembler(self.config)

    def loaded(self, gateway: str) -> bool:
        return gateway in self.partition_of

    def load(self, gateway: str, items: Iterable[tuple[bytes, bytes]], partition: int) -> None:
        """Take a gateway's durable state (table entries) into memory."""
        flow_prefix = f"f|{gateway}|".encode()
        hist_prefix = f"h|{gateway}|".encode()
        device_prefix = f"d|{gateway}|".encode()
        wkey = watermark_key(gateway)
        for key, value in items:
            if value is None:
                continue
            if key.startswith(flow_prefix):
                state = FlowState.from_bytes(value)
                if state.key.gateway == gateway:
                    self.assembler.restore(state)
            elif key.startswith(hist_prefix):
                flows = decode_history(value)
                if flows and flows[0].key.gateway == gateway:
                    self.history[flows[0].key.device] = flows
            elif key.startswith(device_prefix):
                tally = DeviceTally.from_bytes(value)
                self.devices[(tally.gateway, tally.host)] = tally
            elif key == wkey:
                _, seq, clock, emitted = unpack_watermark(value)
                self.assembler.watermark_seq[gateway] = seq
                self.assembler.clock_ns[gateway] = clock
                self.scorer.emitted[gateway] = emitted
        self.partition_of[gateway] = partition
        self.last_seen[gateway] = time.monotonic()

    def ingest(self, raw: pa.RecordBatch, partition: int) -> tuple[list[FlowState], set[str]]:
        """Account one raw batch; returns the flows it closed and the gateways it touched."""
        parsed = self.assembler.parse(raw)
        outside = self.assembler.stats.no_local_endpoint
        closed = self.assembler.add_parsed(parsed)
        self.assembler.see(raw)
        self.unused.update(parsed.refused)
        self.unused[NO_LOCAL_ENDPOINT] += self.assembler.stats.no_local_endpoint - outside
        gateways = set(parsed.gateway) | {str(g) for g in raw.column("gateway").to_pylist()}
        now = time.monotonic()
        for gateway in gateways:
            self.partition_of[gateway] = partition
            self.last_seen[gateway] = now
            closed.extend(self.assembler.expire(gateway))
        return closed, gateways

    def tell(self, gateway: str) -> tuple[int, int]:
        """(partition, event clock) of a gateway a message is about to tell: the alert
        stage judges a gateway's packets once its flows up to their time are in
        (:mod:`amlhp.alerts.flow_evidence`)."""
        clock = self.assembler.clock_ns.get(gateway, -1)
        self.announced[gateway] = clock
        return self.partition_of[gateway], clock

    def progress(self) -> list[tuple[str, int, int]]:
        """:meth:`tell` of the gateways whose clock moved since a message last told it."""
        clocks = self.assembler.clock_ns
        moved = [g for g in sorted(clocks) if clocks[g] > self.announced.get(g, -1)]
        return [(g, *self.tell(g)) for g in moved if g in self.partition_of]

    def take_unused(self) -> dict[str, int]:
        """Packets put in no flow since the last call, by reason (then forgotten)."""
        out = {k: v for k, v in self.unused.items() if v}
        self.unused.clear()
        return out

    def idle(
        self, now: float | None = None, behind: Iterable[int] = ()
    ) -> tuple[list[FlowState], set[str]]:
        """Close every flow of gateways silent for ``idle_close_s``, except on partitions
        ``behind`` (not read up to their end): a gateway's silence there may only be its
        packets still queued, as after a restart."""
        now = time.monotonic() if now is None else now
        closed: list[FlowState] = []
        quiet = set()
        skip = set(behind)
        open_gateways = {k.gateway for k in self.assembler.open}
        for gateway in open_gateways:
            if self.partition_of.get(gateway) in skip:
                continue
            if now - self.last_seen.get(gateway, now) >= self.idle_close_s:
                closed.extend(self.assembler.close_all(gateway))
                quiet.add(gateway)
        return closed, quiet

    def score(self, closed: list[FlowState]) -> pa.RecordBatch:
        """Verdicts of closed flows; their hosts' inventory entries are updated."""
        verdicts = self.scorer.score(closed, self.history)
        self.touched |= fold(self.devices, verdicts)
        return verdicts

    def device_counts(self) -> dict[tuple[str, str], int]:
        """Hosts per (gateway, device type) in this process's inventory (the gauge)."""
        counts: dict[tuple[str, str], int] = {}
        for tally in self.devices.values():
            key = (tally.gateway, tally.identity()[0])
            counts[key] = counts.get(key, 0) + 1
        return counts

    def device_updates(self) -> list[tuple[int, pa.RecordBatch]]:
        """The inventory entries changed since the last call, one batch per partition."""
        by_partition: dict[int, list[dict[str, Any]]] = {}
        version = self.scorer.model.version
        for key in sorted(self.touched):
            row = self.devices[key].record(version)
            by_partition.setdefault(self.partition_of[key[0]], []).append(row)
        self.touched.clear()
        return [(p, inventory_batch(rows)) for p, rows in sorted(by_partition.items())]

    def writes(self, closed: list[FlowState], gateways: set[str]) -> list[Write]:
        """Table writes for what changed: flows, device histories, inventory entries, then
        watermarks (call before :meth:`device_updates`, which forgets what changed)."""
        out: list[Write] = []
        changed, removed = self.assembler.take_changes()
        for gone in removed:
            out.append((self.partition_of[gone.gateway], flow_key(gone), None))
        for state in changed:
            out.append(
                (self.partition_of[state.key.gateway], flow_key(state.key), state.to_bytes())
            )
        for device in sorted({f.key.device for f in closed}):
            gateway, ip = device
            out.append(
                (
                    self.partition_of[gateway],
                    history_key(gateway, ip),
                    encode_history(self.history[device]),
                )
            )
        for key in sorted(self.touched):
            out.append((self.partition_of[key[0]], device_key(*key), self.devices[key].to_bytes()))
        for gateway in sorted(gateways):
            value = WATERMARK.pack(
                self.partition_of[gateway],
                self.assembler.watermark_seq.get(gateway, -1),
                self.assembler.clock_ns.get(gateway, 0),
                self.scorer.emitted.get(gateway, 0),
            )
            out.append((self.partition_of[gateway], watermark_key(gateway), value))
        return out


def create_flow_app(settings: Settings, options: FlowWorkerOptions) -> Any:
    """Build the Faust app (nothing runs until started)."""
    from amlhp.flows.artifact import load_attack_model, load_flow_model

    model = load_flow_model(options.model_path)
    attack = load_attack_model(options.attack_model, model.config)
    app = create_faust_app(settings, options.app_id or f"{settings.consumer_group}-flows")
    raw_topic = app.topic(settings.topic_raw, value_serializer="raw", key_serializer="raw")
    verdict_topic = app.topic(
        settings.topic_flow_verdicts, value_serializer="raw", key_serializer="raw"
    )
    table = app.Table(
        TABLE,
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
    )
    changelog = ChangelogWriter(settings, table)
    runtime = FlowRuntime(
        model.config,
        FlowScorer(model, attack=attack, explain_every=options.explain_every),
        options.idle_close_s,
    )
    metrics = process_metrics()  # amlhp_model_info is the packet model's: not set here
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="amlhp-flows")
    lock = asyncio.Lock()

    devices_topic = app.topic(settings.topic_devices, value_serializer="raw", key_serializer="raw")
    Step = tuple[list[Write], pa.RecordBatch | None, list[tuple[int, pa.RecordBatch]]]

    empty = pa.RecordBatch.from_pylist([], schema=runtime.scorer.schema)

    async def send_flows(
        gateway: str, partition: int, clock: int, batch: pa.RecordBatch, named: bytes | None = None
    ) -> Any:
        headers = {FLOW_CLOCK_HEADER: str(clock).encode()}
        if named is not None:
            headers[FLOW_DEVICES_HEADER] = named
        return await verdict_topic.send(
            key=gateway.encode(), value=to_ipc(batch), partition=partition, headers=headers
        )

    async def announce() -> None:
        """Tell the clock of gateways whose flows closed none since it last moved."""
        sent = [await send_flows(g, p, c, empty) for g, p, c in runtime.progress()]
        for delivery in sent:
            await delivery

    async def publish(step: Step) -> None:
        """Send a step's verdicts and inventory entries and wait until the broker has
        them, before the table writes that say they were made (see ``handle``)."""
        _, verdicts, devices = step
        sent = []
        verdicts = verdicts if verdicts is not None else empty
        named = device_headers(devices)
        # each gateway's flows on its raw partition, with the worker's clock for it; the
        # message telling the clock names the hosts the flows changed
        for gateway in sorted({str(g) for g in verdicts.column("gateway").to_pylist()}):
            told = runtime.announced.get(gateway, -1)
            partition, clock = runtime.tell(gateway)
            part = verdicts.filter(pa.compute.equal(verdicts.column("gateway"), gateway))
            messages = flow_messages(part, told, clock)
            for i, (at, chunk) in enumerate(messages):
                last = named.get(gateway) if i == len(messages) - 1 else None
                sent.append(await send_flows(gateway, partition, at, chunk, last))
        for partition, batch in devices:
            for row in range(batch.num_rows):
                one = batch.slice(row, 1)
                key = f"{one.column('gateway')[0]}|{one.column('host')[0]}".encode()
                sent.append(
                    await devices_topic.send(key=key, value=to_ipc(one), partition=partition)
                )
        for delivery in sent:
            await delivery
        if verdicts is not None and verdicts.num_rows:
            metrics.record_flow_verdicts(verdicts)

    def scored(closed: list[FlowState], gateways: set[str]) -> Step:
        verdicts = runtime.score(closed) if closed else None
        writes = runtime.writes(closed, gateways)
        return writes, verdicts, runtime.device_updates()

    def step(raw: pa.RecordBatch, partition: int) -> Step:
        for gateway in {str(g) for g in raw.column("gateway").to_pylist()}:
            if not runtime.loaded(gateway):
                runtime.load(gateway, list(table.data.items()), partition)
                kinds = [c for c in attack.classes if c != "benign"] if attack else []
                metrics.init_flow_verdicts(gateway, model.classes, kinds)
        done = scored(*runtime.ingest(raw, partition))
        metrics.count_flow_unused(runtime.take_unused())
        return done

    def tick(behind: set[int]) -> Step:
        items = list(table.data.items())
        for gateway, partition in known_gateways(items).items():
            if not runtime.loaded(gateway):
                runtime.load(gateway, items, partition)
        return scored(*runtime.idle(behind=behind))

    async def handle(event: Any) -> None:
        loop = asyncio.get_running_loop()
        try:
            raw = from_ipc(event.value or b"", RAW)
        except BatchDecodeError as exc:
            runtime.invalid_messages += 1
            log.warning("raw message %s is not a batch: %s", event.message.offset, exc)
            return
        metrics.count_batch_in(STEP_FLOWS, raw, len(event.value or b""))
        async with lock:
            done = await loop.run_in_executor(pool, step, raw, event.message.partition)
            # records out first, state after: a stop in between re-delivers the event
            # and the same flows close again (same flow ids); the reverse order would
            # keep state whose verdicts were never sent
            await publish(done)
            await loop.run_in_executor(pool, changelog.commit, done[0])

    in_order = InOrder(app, settings.topic_raw)

    @app.agent(raw_topic, name="flows")
    async def flows(stream: Any) -> None:
        # In offset order, none skipped (the gateways' seq watermarks would otherwise pass
        # events Faust dropped: InOrder), acked by hand once handled: Faust acks an event
        # in its iterator's ``finally`` even when a stop interrupts the agent.
        manual = stream.noack()
        async for event in manual.events():
            admitted, _ = await in_order.gate(event)
            if not admitted:
                continue
            await run_to_end(handle(event))
            await manual.ack(event)

    @app.timer(interval=options.tick_s)
    async def idle_close() -> None:
        await in_order.rewind_held()
        recovery = cast(Any, app.tables).recovery
        if app.rebalancing or not recovery.completed.is_set():
            return
        loop = asyncio.get_running_loop()
        behind = in_order.behind()  # their gateways' packets may still be queued
        async with lock:
            done = await loop.run_in_executor(pool, tick, behind)
            await publish(done)
            await loop.run_in_executor(pool, changelog.commit, done[0])
            await announce()
            metrics.open_flows.set(len(runtime.assembler.open))
            metrics.set_devices(runtime.device_counts())

    async def on_revoked(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        revoked = args[0] if args else kwargs.get("revoked", set())
        gone = {tp.partition for tp in revoked if tp.topic == settings.topic_raw}
        async with lock:
            for gateway, partition in list(runtime.partition_of.items()):
                if partition in gone:
                    runtime.assembler.drop_gateway(gateway)
                    runtime.partition_of.pop(gateway, None)
                    runtime.last_seen.pop(gateway, None)
                    runtime.scorer.emitted.pop(gateway, None)
                    runtime.announced.pop(gateway, None)
                    for device in [d for d in runtime.history if d[0] == gateway]:
                        del runtime.history[device]
                    for host in [d for d in runtime.devices if d[0] == gateway]:
                        del runtime.devices[host]
                        runtime.touched.discard(host)

    cast(Any, app.on_partitions_revoked).connect(on_revoked)

    return app


def flow_messages(
    part: pa.RecordBatch, told: int, clock: int, rows: int = MESSAGE_ROWS
) -> list[tuple[int, pa.RecordBatch]]:
    """One gateway's flow verdicts of a step as messages: (clock header, verdicts).

    An idle close can end thousands of a gateway's flows at once: messages of at most
    ``rows`` verdicts stay far below the broker's size limit. Only the last one tells the
    new ``clock``; the others repeat the clock last ``told``: the alert stage judges a
    gateway's packets as soon as a message's clock has passed them, so an earlier part
    telling it would let those packets be judged before the rest of their flows came
    (:mod:`amlhp.alerts.flow_evidence`)."""
    starts = range(0, max(part.num_rows, 1), rows)
    return [(clock if lo == starts[-1] else told, part.slice(lo, rows)) for lo in starts]


def run_flow_worker(settings: Settings, options: FlowWorkerOptions) -> None:
    """Run the flow worker in the foreground until SIGTERM/SIGINT."""
    app = create_flow_app(settings, options)
    log.info("flow worker starting (app %s)", app.conf.id)
    run_faust_worker(app)


__all__ = [
    "FlowRuntime",
    "FlowWorkerOptions",
    "create_flow_app",
    "flow_messages",
    "parse_key",
    "run_flow_worker",
]
