"""``amlhp replay``: a time window of a topic, read back, re-scored, into a dataset of its own.

A replay reads the offsets its plan fixed (:mod:`amlhp.streams.replay_plan`) by manual
assignment: its consumer group (``<consumer_group>-replay-<run id>``) never commits, so
the live groups and their offsets are untouched. Per message it keeps the packets of the
window (and gateways), encodes them with the replay model's own encoder configuration
through the worker's code (:func:`amlhp.streams.processing.encode_raw`), and at each flush
scores the partition's buffer in large batches with one model and writes verdicts and
dead letters with the shared sink core's file protocol: data files named by offset range,
then a manifest (:mod:`amlhp.pipeline.dataset`). The manifests are the run's durable
progress, so a killed run started again resumes after the last durable range of each
partition and gives the same dataset; ``source="verdicts"`` re-exports the verdict topic
without scoring.

The run manifest ``<out>/_replay.json`` names the plan, the model (version and sha256),
the totals and whether the run finished; it is written when the run starts and when it
ends (totals from the flush manifests, so they count what is durable).
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from amlhp.encoders.layout import EncoderConfig
from amlhp.pipeline import dataset
from amlhp.pipeline.kafka_io import consumer_config
from amlhp.pipeline.parquet_sink import resume_after_durable, write_date_partitions
from amlhp.settings import Settings
from amlhp.streams.deadletter import Origin, dead_message
from amlhp.streams.exceptions import ReplayError
from amlhp.streams.processing import BatchScorer, encode_raw, score_batches
from amlhp.streams.replay_plan import ReplayPlan, iso_ns
from amlhp.wire import RAW, VERDICT, BatchDecodeError, dead_letter_schema, from_ipc

log = logging.getLogger(__name__)

RUN_MANIFEST = "_replay.json"
STAGE = "replay"


@dataclass
class ReplayProgress:
    """Counters of this process's run (a resumed run starts from what is durable)."""

    messages_total: int
    messages_done: int = 0
    packets: int = 0  # in the window, read by this process
    verdicts: int = 0
    dead_letters: int = 0
    outside_window: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        return self.packets / max(1e-9, time.monotonic() - self.started)

    def eta_s(self) -> float | None:
        elapsed = time.monotonic() - self.started
        if self.messages_done == 0:
            return None
        left = self.messages_total - self.messages_done
        return left * elapsed / self.messages_done

    def as_dict(self) -> dict[str, Any]:
        eta = self.eta_s()
        return {
            "messages_done": self.messages_done,
            "messages_total": self.messages_total,
            "packets": self.packets,
            "verdicts": self.verdicts,
            "dead_letters": self.dead_letters,
            "rate_pps": round(self.rate, 1),
            "eta_s": None if eta is None else round(eta, 1),
        }


@dataclass
class _Buffer:
    first: int | None = None
    last: int | None = None
    messages: int = 0
    packets: int = 0
    outside: int = 0
    batches: list[pa.RecordBatch] = field(default_factory=list)
    dead: list[pa.RecordBatch] = field(default_factory=list)


class RateLimiter:
    """At most ``rate`` packets per second on average (``None``: unlimited)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._start = time.monotonic()
        self._count = 0

    def take(self, n: int, stop: threading.Event) -> None:
        if not self.rate:
            return
        self._count += n
        ahead = self._count / self.rate - (time.monotonic() - self._start)
        if ahead > 0:
            stop.wait(ahead)


def identity(plan: ReplayPlan, model: dict[str, Any] | None) -> dict[str, Any]:
    """What makes two runs the same run: a resumed run must match it exactly."""
    return {
        "topic": plan.topic,
        "source": plan.source,
        "window": plan.window.as_dict(),
        "grace_s": plan.grace_s,
        "model_sha256": None if model is None else model.get("sha256"),
    }


def read_run_manifest(out: Path) -> dict[str, Any] | None:
    path = out / RUN_MANIFEST
    if not path.exists():
        return None
    body: dict[str, Any] = json.loads(path.read_text())
    return body


def prepare_output(out: Path, *, restart: bool) -> dict[str, Any] | None:
    """The existing run manifest of ``out`` (None when new); ``restart`` empties it first.

    A folder that holds files but no run manifest is not a replay's: it is never emptied.
    """
    body = read_run_manifest(out)
    if out.exists() and any(out.iterdir()) and body is None:
        raise ReplayError(f"{out} is not empty and holds no {RUN_MANIFEST}: choose another --out")
    if restart and body is not None:
        for child in out.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
        return None
    return body


def durable_totals(out: Path, topic: str) -> dict[str, int]:
    """Totals over the flush manifests of ``topic`` under ``out``: what is durable."""
    totals = {"messages": 0, "packets": 0, "verdicts": 0, "dead_letters": 0, "outside_window": 0}
    for body in dataset.manifest_bodies(out):
        if body.get("topic") != topic:
            continue
        totals["messages"] += int(body["last_offset"]) - int(body["first_offset"]) + 1
        totals["verdicts"] += int(body["rows"])
        for key in ("packets", "dead_letters", "outside_window"):
            totals[key] += int(body.get(key, 0))
    return totals


class Replayer:
    """Runs the partitions ``partitions`` (default: all) of ``plan`` into ``out``."""

    def __init__(
        self,
        settings: Settings,
        plan: ReplayPlan,
        out: Path,
        *,
        scorer: BatchScorer | None,
        run_id: str,
        partitions: list[int] | None = None,
        roll_packets: int = 100_000,
        max_batch: int = 4096,
        max_rate: float | None = None,
        compression: str = "zstd",
        on_scored: Callable[[list[pa.RecordBatch], pa.RecordBatch], None] | None = None,
    ) -> None:
        """``on_scored`` is handed each flush's encoded batches and their verdicts, row
        for row (``amlhp model adapt`` learns the window from them)."""
        if plan.source == "raw" and scorer is None:
            raise ReplayError("re-scoring the raw topic needs a model")
        self.settings = settings
        self.plan = plan
        self.out = out
        self.scorer = scorer
        self.run_id = run_id
        wanted = set(partitions) if partitions is not None else None
        self.ranges = {
            r.partition: r for r in plan.partitions if wanted is None or r.partition in wanted
        }
        self.roll_packets = roll_packets
        self.max_batch = max_batch
        self.limiter = RateLimiter(max_rate)
        self.compression = compression
        self.on_scored = on_scored
        self.gateways = {g.encode() for g in plan.window.gateways}
        self.progress = ReplayProgress(sum(r.messages for r in self.ranges.values()))
        self._buffers: dict[int, _Buffer] = {}
        config = getattr(scorer, "encoder_config", None)
        if plan.source == "raw" and not isinstance(config, EncoderConfig):
            raise ReplayError("the model has no encoder configuration to encode with")
        self._encoder: EncoderConfig | None = config

    # -- per message -------------------------------------------------------------------
    def _keep(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        ts = batch.column("ts_ns")
        window = self.plan.window
        mask = pc.and_(pc.greater_equal(ts, window.from_ns), pc.less(ts, window.to_ns))
        if window.gateways:
            mask = pc.and_(mask, pc.is_in(batch.column("gateway"), pa.array(window.gateways)))
        return batch.filter(mask)

    def _add(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        buf = self._buffers.setdefault(partition, _Buffer())
        if buf.first is None:
            buf.first = offset
        buf.last = offset
        buf.messages += 1
        if self.gateways and key is not None and key not in self.gateways:
            return  # another gateway's raw message (keyed by gateway; verdicts are not)
        origin = Origin(self.plan.topic, partition, offset)
        gateway = key.decode(errors="replace") if key else None
        try:
            batch = from_ipc(value or b"", RAW if self.plan.source == "raw" else VERDICT)
        except BatchDecodeError as exc:
            buf.dead.append(dead_message(origin, STAGE, str(exc), value, gateway))
            return
        kept = self._keep(batch)
        buf.outside += batch.num_rows - kept.num_rows
        buf.packets += kept.num_rows
        self.limiter.take(kept.num_rows, self._stop)
        if kept.num_rows == 0:
            return
        if self.plan.source == "verdicts":
            buf.batches.append(kept)
            return
        assert self._encoder is not None  # checked in __init__ for the raw source
        result = encode_raw(kept, [origin], self._encoder, stage=STAGE)
        if result.encoded is not None:
            buf.batches.append(result.encoded)
        buf.dead.extend(result.dead)

    # -- per flush ---------------------------------------------------------------------
    def _flush(self, partition: int) -> None:
        buf = self._buffers.get(partition)
        if buf is None or buf.first is None or buf.last is None:
            return
        rng = dataset.OffsetRange(self.plan.topic, partition, buf.first, buf.last)
        files: list[Path] = []
        verdicts = 0
        if buf.batches:
            if self.plan.source == "raw":
                assert self.scorer is not None
                scored = score_batches(buf.batches, self.scorer, self.max_batch)
                if self.on_scored is not None:
                    self.on_scored(buf.batches, scored)
                table = pa.Table.from_batches([scored])
            else:
                table = pa.Table.from_batches(buf.batches)
            verdicts = table.num_rows
            files += write_date_partitions(self.out, table, rng, self.compression)
        dead = 0
        if buf.dead:
            dead_table = pa.Table.from_batches(buf.dead, schema=dead_letter_schema())
            dead = dead_table.num_rows
            sink = io.BytesIO()
            pq.write_table(dead_table, sink, compression=self.compression)
            path = self.out / dataset.DEADLETTER_DIR / dataset.data_file_name(rng)
            dataset.write_durably(path, sink.getvalue())
            files.append(path)
        dataset.write_manifest(
            self.out, rng, files, verdicts,
            packets=buf.packets, dead_letters=dead, outside_window=buf.outside,
        )  # fmt: skip
        self.progress.packets += buf.packets
        self.progress.verdicts += verdicts
        self.progress.dead_letters += dead
        self.progress.outside_window += buf.outside
        self._buffers[partition] = _Buffer()

    # -- main loop ---------------------------------------------------------------------
    def _start_offsets(self) -> dict[int, int]:
        """Where each partition continues: after its last durable range, else its start."""
        starts = {}
        for p, rng in self.ranges.items():
            resume, _ = resume_after_durable(self.out, self.plan.topic, p)
            start = rng.start if resume is None else max(rng.start, resume)
            self.progress.messages_total -= max(0, min(start, rng.end) - rng.start)
            if start < rng.end:
                starts[p] = start
        return starts

    def run(
        self,
        stop: threading.Event,
        on_progress: Callable[[ReplayProgress], None] | None = None,
        progress_every_s: float = 1.0,
    ) -> ReplayProgress:
        """Read every partition to its end offset (or until ``stop``); flush; return."""
        from confluent_kafka import Consumer, TopicPartition

        self._stop = stop
        starts = self._start_offsets()
        if not starts:
            return self.progress
        consumer = Consumer(
            consumer_config(
                self.settings,
                group_id=f"{self.settings.consumer_group}-replay-{self.run_id}",
                client_id=f"amlhp-replay-{self.run_id}",
            )
        )
        topic = self.plan.topic
        active = dict(starts)
        consumer.assign([TopicPartition(topic, p, o) for p, o in active.items()])
        last_report = 0.0
        try:
            while active and not stop.is_set():
                for msg in consumer.consume(num_messages=500, timeout=0.5):
                    if msg.error() is not None:
                        log.warning("replay consumer: %s", msg.error())
                        continue
                    p, offset = msg.partition() or 0, msg.offset() or 0
                    if p not in active or offset >= self.ranges[p].end:
                        continue
                    self._add(p, offset, msg.key(), msg.value())
                    self.progress.messages_done += 1
                    if self._buffers[p].packets >= self.roll_packets:
                        self._flush(p)
                    if stop.is_set():
                        break
                done = [
                    tp.partition
                    for tp in consumer.position([TopicPartition(topic, p) for p in active])
                    if tp.offset >= self.ranges[tp.partition].end
                ]
                for p in done:
                    self._flush(p)
                    del active[p]
                if done:
                    consumer.pause([TopicPartition(topic, p) for p in done])
                now = time.monotonic()
                if on_progress is not None and now - last_report >= progress_every_s:
                    on_progress(self.progress)
                    last_report = now
            for p in list(self._buffers):
                self._flush(p)
        except OSError as exc:
            raise ReplayError(f"cannot write the replay dataset under {self.out}: {exc}") from exc
        finally:
            consumer.close()
        if on_progress is not None:
            on_progress(self.progress)
        return self.progress


def finished_summary(out: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The run manifest completed with the durable totals, ``finished_at`` now."""
    totals = durable_totals(out, manifest["plan"]["topic"])
    body = {**manifest, "totals": totals, "status": "finished"}
    body["finished_at"] = iso_ns(time.time_ns())
    gateways = manifest["plan"]["window"]["gateways"]
    if gateways:  # the gateway column only
        found = set()
        if any(out.glob(dataset.DATA_GLOB)):
            column = dataset.open_dataset(out).to_table(columns=["gateway"]).column("gateway")
            found = {str(g) for g in pc.unique(column).to_pylist()}
        body["gateways_without_packets"] = sorted(set(gateways) - found)
    return body


def write_run_manifest(out: Path, body: dict[str, Any]) -> None:
    dataset.write_durably(out / RUN_MANIFEST, (json.dumps(body, indent=2) + "\n").encode())


def split_partitions(partitions: list[int], processes: int) -> list[list[int]]:
    """Round-robin ``partitions`` over at most ``processes`` non-empty groups."""
    groups = [partitions[i::processes] for i in range(processes)]
    return [g for g in groups if g]
