"""Prometheus metrics of the pipeline's processes: definitions, HTTP endpoint, consumer lag.

Every step of the pipeline has an id that reappears as the ``step`` label of its metrics,
as Bytewax names its steps: ``tap`` (gateway sensor), ``encode`` and ``score`` (the Faust
worker's agents) and ``sink`` (Parquet writer). One process serves one registry on
``/metrics`` (:func:`serve_metrics`); the stages update it once per batch, never per
packet, so metrics cost a few dictionary look-ups per Kafka message.

Label cardinality is bounded on purpose: labels carry the step, the gateway id (an
operator-chosen name, capped at :data:`MAX_GATEWAYS` distinct values per process, the
rest folded into ``_other``), the model's class names, the encoder's reason codes and
Kafka topic-partitions; never a packet's address or port.

"Malicious" is every class that is not benign. The benign set comes from the serving
model when it says so (a ``benign_classes`` attribute); otherwise a class is benign when
its name starts with ``benign`` or ``mqtt_benign`` (the naming rule of
``model/labels/public.yaml``). The verdict counter carries the answer as its
``malicious`` label so that dashboards need no class-name regex.

Consumer lag (:class:`ConsumerLagCollector`) is computed in a background thread from the
group's committed offsets and the partitions' offsets through the Kafka admin API, plus
the timestamp of the oldest unprocessed message for the lag in seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from pathlib import Path

    import pyarrow as pa

    from amlhp.settings import Settings

log = logging.getLogger(__name__)

STEP_TAP = "tap"
STEP_ENCODE = "encode"
STEP_SCORE = "score"
STEP_SINK = "sink"
#: The pipeline's steps in data-flow order: the values of every ``step`` label.
STEPS: tuple[str, ...] = (STEP_TAP, STEP_ENCODE, STEP_SCORE, STEP_SINK)

#: Which steps each process kind runs (the ``amlhp`` command that starts it).
PROCESS_STEPS: dict[str, tuple[str, ...]] = {
    "tap": (STEP_TAP,),
    "worker": (STEP_ENCODE, STEP_SCORE),
    "sink": (STEP_SINK,),
}

OTHER = "_other"
MAX_GATEWAYS = 100
MAX_CLASSES = 64
MAX_REASONS = 32
BENIGN_PREFIXES = ("benign", "mqtt_benign")

#: Packets per batch: tap messages, worker micro-batches, sink flushes.
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 50000, 200000)
#: Capture -> verdict / capture -> stored, seconds.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
INFERENCE_BATCH_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
INFERENCE_PACKET_BUCKETS = (
    1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3,
)  # fmt: skip
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
#: Seconds to explain one sampled packet (Shapley value sampling, off the scoring thread).
EXPLAIN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: What became of a packet the explanation sampler picked (``outcome`` label values).
EXPLAIN_OUTCOMES: tuple[str, ...] = ("emitted", "rate_limited", "queue_full", "failed")


def is_benign(class_name: str, benign: Iterable[str] | None = None) -> bool:
    """The module docstring's rule: the model's benign set if given, else the name prefix."""
    if benign is not None:
        return class_name in set(benign)
    return class_name.startswith(BENIGN_PREFIXES)


class BoundedLabel:
    """Maps label values to themselves until ``limit`` distinct ones were seen, then to
    ``_other``: a misbehaving source cannot blow up the number of series."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        text = value if value else "unknown"
        if text in self._seen:
            return text
        with self._lock:
            if len(self._seen) < self.limit:
                self._seen.add(text)
                return text
        return OTHER


@dataclass
class _HistogramState:
    counts: np.ndarray
    total: float = 0.0


class BulkHistogram(Collector):
    """A Prometheus histogram fed with whole NumPy arrays (one call per batch).

    ``prometheus_client.Histogram.observe`` costs a lock and a bucket search per value;
    a verdict batch holds hundreds of packets, so this one bins the array with
    ``np.searchsorted`` and adds the counts in one step.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = np.asarray(sorted(buckets), dtype=np.float64)
        self._series: dict[tuple[str, ...], _HistogramState] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe_many(self, values: np.ndarray | Sequence[float], *labelvalues: str) -> None:
        """Add every value of ``values`` to the series with these label values."""
        if len(labelvalues) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {labelvalues}")
        arr = np.asarray(values, dtype=np.float64)
        if arr.size == 0:
            return
        # le semantics: a value equal to a bound belongs to that bound's bucket.
        idx = np.searchsorted(self.bounds, arr, side="left")
        counts = np.bincount(idx, minlength=len(self.bounds) + 1)
        total = float(arr.sum())
        with self._lock:
            state = self._series.get(labelvalues)
            if state is None:
                state = _HistogramState(np.zeros(len(self.bounds) + 1, dtype=np.int64))
                self._series[labelvalues] = state
            state.counts += counts
            state.total += total

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            snapshot = [(k, s.counts.copy(), s.total) for k, s in sorted(self._series.items())]
        for labels, counts, total in snapshot:
            cumulative = np.cumsum(counts)
            buckets: list[tuple[str, float]] = [
                (_le(bound), float(c))
                for bound, c in zip(self.bounds, cumulative[:-1], strict=True)
            ]
            buckets.append(("+Inf", float(cumulative[-1])))
            family.add_metric(list(labels), buckets, total)
        return [family]


def _le(bound: float) -> str:
    return repr(float(bound))


def _value_counts(column: Any) -> dict[str, int]:
    """Counts of the distinct values of an Arrow column (nulls as ``unknown``)."""
    import pyarrow.compute as pc

    if len(column) == 0:
        return {}
    out: dict[str, int] = {}
    for item in pc.value_counts(column).to_pylist():
        key = "unknown" if item["values"] is None else str(item["values"])
        out[key] = out.get(key, 0) + int(item["counts"])
    return out


class PipelineMetrics:
    """The metrics of one process, in their own registry; see the module docstring."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        self.gateway_label = BoundedLabel(MAX_GATEWAYS)
        self.class_label = BoundedLabel(MAX_CLASSES)
        self.reason_label = BoundedLabel(MAX_REASONS)
        self.benign_classes: frozenset[str] | None = None
        self._model_version: str | None = None
        self._model_lock = threading.Lock()

        self.packets_in = Counter(
            "amlhp_packets_in",
            "Packets a step received (tap: captured), by step and gateway",
            ["step", "gateway"],
            registry=reg,
        )
        self.packets_out = Counter(
            "amlhp_packets_out",
            "Packets a step passed on (tap: delivered to Kafka; encode: encoded; "
            "score: verdicts published; sink: verdicts durably written)",
            ["step", "gateway"],
            registry=reg,
        )
        self.bytes_in = Counter(
            "amlhp_bytes_in",
            "Bytes a step received (tap: captured frame bytes; others: Kafka message values)",
            ["step", "gateway"],
            registry=reg,
        )
        self.bytes_out = Counter(
            "amlhp_bytes_out",
            "Bytes a step passed on (Kafka message values; sink: Parquet bytes written)",
            ["step", "gateway"],
            registry=reg,
        )
        self.batch_packets = Histogram(
            "amlhp_batch_packets",
            "Packets per batch: tap messages, encode messages, score micro-batches, sink flushes",
            ["step"],
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        self.inference_batch = Histogram(
            "amlhp_inference_batch_seconds",
            "Model inference time per scored micro-batch",
            buckets=INFERENCE_BATCH_BUCKETS,
            registry=reg,
        )
        self.inference_packet = Histogram(
            "amlhp_inference_packet_seconds",
            "Model inference time per packet (batch time / batch size), one sample per batch",
            buckets=INFERENCE_PACKET_BUCKETS,
            registry=reg,
        )
        self.latency = BulkHistogram(
            "amlhp_e2e_latency_seconds",
            "Capture timestamp -> verdict (step=score) or -> durably stored (step=sink)",
            ["step", "gateway"],
            LATENCY_BUCKETS,
            registry=reg,
        )
        self.verdicts = Counter(
            "amlhp_verdicts",
            "Verdicts published, by gateway and predicted class",
            ["gateway", "class", "malicious"],
            registry=reg,
        )
        self.score = BulkHistogram(
            "amlhp_verdict_score",
            "Probability of the predicted class, by class",
            ["class"],
            SCORE_BUCKETS,
            registry=reg,
        )
        self.dead_letters = Counter(
            "amlhp_dead_letters",
            "Dead letters published, by step, reason code and kind "
            "(packet: one packet refused; message: a whole Kafka message was not a batch)",
            ["step", "reason", "kind"],
            registry=reg,
        )
        self.skipped_messages = Counter(
            "amlhp_skipped_messages",
            "Kafka messages a step skipped without a dead letter (sink: not a verdict batch)",
            ["step", "reason"],
            registry=reg,
        )
        self.delivery_failures = Counter(
            "amlhp_producer_delivery_failures",
            "Kafka messages a producer failed to deliver",
            ["step"],
            registry=reg,
        )
        self.model_info = Gauge(
            "amlhp_model_info",
            "The serving model version (value 1 on the version that serves)",
            ["version"],
            registry=reg,
        )
        self.model_loads = Counter(
            "amlhp_model_loads",
            "Model artifacts loaded (the first one included) or refused by the reload watcher",
            ["result"],
            registry=reg,
        )
        self.explanations = Counter(
            "amlhp_explanations",
            "Packets the explanation sampler picked, by outcome (emitted: published to the "
            "explanation topic; rate_limited / queue_full: dropped so that scoring never "
            "waits; failed: the explanation or its delivery failed)",
            ["step", "outcome"],
            registry=reg,
        )
        self.explain_seconds = Histogram(
            "amlhp_explanation_seconds",
            "Time to explain one sampled packet, off the scoring thread",
            buckets=EXPLAIN_BUCKETS,
            registry=reg,
        )
        self._loads_seen = (0, 0)

    # -- label helpers -----------------------------------------------------------------
    def gateway(self, value: str | None) -> str:
        return self.gateway_label(value)

    def init_steps(self, steps: Iterable[str], reasons: Iterable[str] = ()) -> None:
        """Create the zero-valued series a process will update, so that a dashboard shows
        0 rather than "no data" before the first event (standard Prometheus practice)."""
        for step in steps:
            self.batch_packets.labels(step)
            if step == STEP_TAP:
                self.delivery_failures.labels(step)
            if step in (STEP_ENCODE, STEP_SCORE):
                self.dead_letters.labels(step, "invalid_batch", "message")
            if step == STEP_ENCODE:
                for reason in reasons:
                    self.dead_letters.labels(step, self.reason_label(reason), "packet")
            if step == STEP_SINK:
                self.skipped_messages.labels(step, "invalid_batch")

    def init_explanations(self) -> None:
        """Zero series of every explanation outcome (only workers that explain have them)."""
        for outcome in EXPLAIN_OUTCOMES:
            self.explanations.labels(STEP_SCORE, outcome)

    def count_explanations(self, outcome: str, packets: int = 1) -> None:
        if packets:
            self.explanations.labels(STEP_SCORE, outcome).inc(packets)

    def set_benign_classes(self, classes: Iterable[str] | None) -> None:
        self.benign_classes = frozenset(classes) if classes is not None else None

    # -- updates, one call per batch ----------------------------------------------------
    def count_in(self, step: str, gateway: str | None, packets: int, nbytes: int) -> None:
        gw = self.gateway(gateway)
        if packets:
            self.packets_in.labels(step, gw).inc(packets)
        if nbytes:
            self.bytes_in.labels(step, gw).inc(nbytes)

    def count_out(self, step: str, gateway: str | None, packets: int, nbytes: int) -> None:
        gw = self.gateway(gateway)
        if packets:
            self.packets_out.labels(step, gw).inc(packets)
        if nbytes:
            self.bytes_out.labels(step, gw).inc(nbytes)

    def observe_batch(self, step: str, packets: int) -> None:
        self.batch_packets.labels(step).observe(packets)

    def count_dead(self, step: str, reasons: Mapping[str, int], kind: str) -> None:
        for reason, n in reasons.items():
            if n:
                self.dead_letters.labels(step, self.reason_label(reason), kind).inc(n)

    def count_dead_batch(self, step: str, dead: pa.RecordBatch | pa.Table) -> None:
        """Dead letters of one dead-letter batch: packets (seq set) and whole messages."""
        import pyarrow.compute as pc

        if dead.num_rows == 0:
            return
        is_packet = pc.is_valid(dead.column("seq"))
        self.count_dead(step, _value_counts(dead.filter(is_packet).column("reason")), "packet")
        self.count_dead(
            step, _value_counts(dead.filter(pc.invert(is_packet)).column("reason")), "message"
        )

    def set_model_version(self, version: str) -> None:
        """Point ``amlhp_model_info`` at the serving version (the old one is removed)."""
        if version == self._model_version:
            return
        with self._model_lock:
            if self._model_version is not None:
                self.model_info.remove(self._model_version)
            self.model_info.labels(version).set(1)
            self._model_version = version

    def sync_model(self, holder: Any) -> None:
        """Catch up with a :class:`~amlhp.streams.model_holder.ModelHolder`: serving
        version and the loads/refusals it counted since the last call."""
        self.set_model_version(str(holder.current.version))
        loaded, refused = int(holder.loaded), int(holder.refused)
        with self._model_lock:
            seen_loaded, seen_refused = self._loads_seen
            self._loads_seen = (loaded, refused)
        self.model_loads.labels("loaded").inc(max(0, loaded - seen_loaded))
        self.model_loads.labels("refused").inc(max(0, refused - seen_refused))

    def count_batch_in(self, step: str, batch: Any, nbytes: int) -> None:
        """One received Kafka message holding a batch with a ``gateway`` column; its bytes
        go to the batch's first gateway (the pipeline keys every batch by gateway)."""
        counts = _value_counts(batch.column("gateway"))
        for gw, n in counts.items():
            self.count_in(step, gw, n, 0)
        self.count_in(step, next(iter(counts), None), 0, nbytes)

    def count_score_input(self, messages: Sequence[Any], batches: Sequence[Any]) -> None:
        """The score step's input: message bytes by Kafka key, valid packets by gateway."""
        for msg in messages:
            self.count_in(STEP_SCORE, msg.gateway, 0, len(msg.value or b""))
        for batch in batches:
            for gw, n in _value_counts(batch.column("gateway")).items():
                self.count_in(STEP_SCORE, gw, n, 0)

    def record_verdicts(self, verdicts: pa.RecordBatch | pa.Table) -> None:
        """Counts, score distribution, latency and inference time of one scored batch.

        ``inference_ns`` of a verdict row is its batch's inference time divided by the
        batch size (see :func:`amlhp.streams.processing.build_verdicts`); the verdicts
        of one call come from one ``score_batches`` call.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        n = verdicts.num_rows
        if n == 0:
            return
        table = verdicts if isinstance(verdicts, pa.Table) else pa.Table.from_batches([verdicts])
        gateways = table.column("gateway")
        labels = table.column("label")
        pairs = pc.binary_join_element_wise(
            pc.fill_null(gateways, "unknown"), pc.fill_null(labels, "unknown"), "\x1f"
        )
        for key, count in _value_counts(pairs).items():
            gw, _, cls = key.partition("\x1f")
            malicious = "false" if is_benign(cls, self.benign_classes) else "true"
            self.verdicts.labels(self.gateway(gw), self.class_label(cls), malicious).inc(count)
        scores = table.column("score").to_numpy(zero_copy_only=False)
        label_arr = labels.to_numpy(zero_copy_only=False)
        for cls in np.unique(label_arr.astype(str)):
            self.score.observe_many(scores[label_arr == cls], self.class_label(str(cls)))
        scored = table.column("scored_at_ns").to_numpy(zero_copy_only=False)
        self._observe_latency(STEP_SCORE, table, scored)
        per_packet = table.column("inference_ns").to_numpy(zero_copy_only=False)
        if len(per_packet):
            pp = float(per_packet[0]) / 1e9
            self.inference_packet.observe(pp)
            self.inference_batch.observe(pp * n)
        self.observe_batch(STEP_SCORE, n)

    def record_stored(self, table: pa.Table, files: Sequence[Path], now_ns: int) -> None:
        """A sink flush: verdicts durably written, Parquet bytes per gateway, latency."""
        if table.num_rows == 0:
            return
        for gw, count in _value_counts(table.column("gateway")).items():
            self.packets_out.labels(STEP_SINK, self.gateway(gw)).inc(count)
        for path in files:
            name = path.parent.name
            file_gw = unquote(name.split("=", 1)[1]) if name.startswith("gateway=") else None
            try:
                size = path.stat().st_size
            except OSError:
                continue
            self.bytes_out.labels(STEP_SINK, self.gateway(file_gw)).inc(size)
        stamps = np.full(table.num_rows, now_ns, dtype=np.int64)
        self._observe_latency(STEP_SINK, table, stamps)
        self.observe_batch(STEP_SINK, table.num_rows)

    def _observe_latency(self, step: str, table: pa.Table, at_ns: np.ndarray) -> None:
        ts = table.column("ts_ns").to_numpy(zero_copy_only=False).astype(np.int64)
        latency = (at_ns.astype(np.int64) - ts) / 1e9
        gws = table.column("gateway").to_numpy(zero_copy_only=False).astype(str)
        for gw in np.unique(gws):
            self.latency.observe_many(latency[gws == gw], step, self.gateway(str(gw)))


@lru_cache(maxsize=1)
def process_metrics() -> PipelineMetrics:
    """The metrics of this process (created on first use, with the standard process,
    platform and garbage-collector collectors of prometheus-client)."""
    from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return PipelineMetrics(registry)


# -- the HTTP endpoint -------------------------------------------------------------------
@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it."""

    host: str
    port: int
    _server: Any = field(repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    @property
    def target(self) -> str:
        """``host:port`` as Prometheus scrape configs want it."""
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)


def serve_metrics(
    registry: CollectorRegistry, port: int = 0, host: str = "127.0.0.1"
) -> MetricsServer:
    """Serve ``registry`` on ``http://host:port/metrics`` from a daemon thread.

    ``port=0`` picks a free port (read it back from the result).
    """
    from prometheus_client import start_http_server

    from amlhp.streams.exceptions import StreamsError

    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise StreamsError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
    return MetricsServer(host, int(server.server_port), server, thread)


# -- consumer lag ------------------------------------------------------------------------
@dataclass(frozen=True)
class PartitionLag:
    """Lag of one consumer group on one topic-partition."""

    group: str
    topic: str
    partition: int
    committed: int | None
    low: int
    high: int
    oldest_unprocessed_ts_ms: int | None = None

    @property
    def start(self) -> int:
        """Where the group resumes: its committed offset, or the log start when none."""
        if self.committed is None or self.committed < self.low:
            return self.low
        return self.committed

    @property
    def records(self) -> int:
        return max(0, self.high - self.start)

    def seconds(self, now_ms: int) -> float:
        """Age of the oldest unprocessed message (0 when caught up or unknown)."""
        if self.records == 0 or self.oldest_unprocessed_ts_ms is None:
            return 0.0
        return max(0.0, (now_ms - self.oldest_unprocessed_ts_ms) / 1000.0)


class ConsumerLagCollector(Collector):
    """Lag of one group on its topics, refreshed every ``interval_s`` in a thread.

    Committed offsets come from ``AdminClient.list_consumer_group_offsets``, the log
    start and end (last stable offset) from ``AdminClient.list_offsets``; for each
    lagging partition one message is fetched at the committed offset with an
    assign-only consumer (it never joins the group nor commits) to read its timestamp.
    A scrape only reads the last snapshot, so it never waits for Kafka.
    """

    def __init__(
        self,
        settings: Settings,
        group: str,
        topics: Sequence[str],
        *,
        interval_s: float = 5.0,
        timeout_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self.group = group
        self.topics = list(topics)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.errors = 0
        self._snapshot: list[PartitionLag] = []
        self._updated_at: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._admin: Any = None
        self._reader: Any = None

    # -- Kafka ---------------------------------------------------------------------------
    def _clients(self) -> tuple[Any, Any]:
        from confluent_kafka import Consumer
        from confluent_kafka.admin import AdminClient

        if self._admin is None:
            self._admin = AdminClient(self.settings.kafka_config(**{"client.id": "amlhp-lag"}))
        if self._reader is None:
            self._reader = Consumer(
                self.settings.kafka_config(
                    **{
                        "group.id": f"{self.group}.amlhp-lag-reader",
                        "client.id": "amlhp-lag-reader",
                        "enable.auto.commit": False,
                        "enable.auto.offset.store": False,
                        "auto.offset.reset": "earliest",
                        "queued.max.messages.kbytes": 16384,
                    }
                )
            )
        return self._admin, self._reader

    def poll_once(self) -> list[PartitionLag]:
        """Read offsets and oldest-message timestamps now; store and return the snapshot."""
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
        from confluent_kafka.admin import OffsetSpec

        admin, _ = self._clients()
        meta = admin.list_topics(timeout=self.timeout_s)
        tps = [
            TopicPartition(topic, p)
            for topic in self.topics
            if topic in meta.topics
            for p in sorted(meta.topics[topic].partitions)
        ]
        if not tps:
            self._store([])
            return []
        request = [ConsumerGroupTopicPartitions(self.group, tps)]
        result = admin.list_consumer_group_offsets(request, request_timeout=self.timeout_s)
        committed: dict[tuple[str, int], int | None] = {}
        for tp in result[self.group].result(self.timeout_s).topic_partitions:
            committed[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
        lows = admin.list_offsets(
            {tp: OffsetSpec.earliest() for tp in tps}, request_timeout=self.timeout_s
        )
        highs = admin.list_offsets(
            {tp: OffsetSpec.latest() for tp in tps}, request_timeout=self.timeout_s
        )
        low_by = {
            (tp.topic, tp.partition): f.result(self.timeout_s).offset for tp, f in lows.items()
        }
        high_by = {
            (tp.topic, tp.partition): f.result(self.timeout_s).offset for tp, f in highs.items()
        }
        lags = [
            PartitionLag(
                self.group,
                tp.topic,
                tp.partition,
                committed.get((tp.topic, tp.partition)),
                low_by[(tp.topic, tp.partition)],
                high_by[(tp.topic, tp.partition)],
            )
            for tp in tps
        ]
        stamps = self._oldest_timestamps([lag for lag in lags if lag.records > 0])
        lags = [
            PartitionLag(
                lag.group,
                lag.topic,
                lag.partition,
                lag.committed,
                lag.low,
                lag.high,
                stamps.get((lag.topic, lag.partition)),
            )
            for lag in lags
        ]
        self._store(lags)
        return lags

    def _oldest_timestamps(self, lagging: list[PartitionLag]) -> dict[tuple[str, int], int]:
        """Timestamp (ms) of the message at each lagging partition's resume offset."""
        from confluent_kafka import TopicPartition

        if not lagging:
            return {}
        _, reader = self._clients()
        reader.assign([TopicPartition(lag.topic, lag.partition, lag.start) for lag in lagging])
        wanted = {(lag.topic, lag.partition) for lag in lagging}
        found: dict[tuple[str, int], int] = {}
        deadline = time.monotonic() + min(self.timeout_s, 3.0)
        try:
            while wanted - set(found) and time.monotonic() < deadline:
                for msg in reader.consume(num_messages=len(wanted), timeout=0.2):
                    if msg.error() is not None:
                        continue
                    key = (msg.topic() or "", msg.partition() or 0)
                    if key in wanted and key not in found:
                        _, ts = msg.timestamp()
                        if ts >= 0:
                            found[key] = int(ts)
                        reader.pause([TopicPartition(key[0], key[1])])
        finally:
            reader.unassign()
        return found

    def _store(self, lags: list[PartitionLag]) -> None:
        with self._lock:
            self._snapshot = lags
            self._updated_at = time.time()

    @property
    def snapshot(self) -> list[PartitionLag]:
        with self._lock:
            return list(self._snapshot)

    # -- background thread ---------------------------------------------------------------
    def start(self) -> ConsumerLagCollector:
        self._thread = threading.Thread(target=self._run, name="amlhp-lag", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        from confluent_kafka import KafkaException

        while not self._stop.is_set():
            try:
                self.poll_once()
            except (KafkaException, TimeoutError, KeyError, ValueError, RuntimeError) as exc:
                # Kafka unreachable or a partition moving: keep the last snapshot, retry.
                self.errors += 1
                log.warning("consumer lag of %s not refreshed: %s", self.group, exc)
            self._stop.wait(self.interval_s)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 5)
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # -- Prometheus ----------------------------------------------------------------------
    def describe(self) -> Iterable[Metric]:
        return list(self._families([], None))

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            lags, updated = list(self._snapshot), self._updated_at
        return list(self._families(lags, updated))

    def _families(self, lags: list[PartitionLag], updated: float | None) -> Iterator[Metric]:
        labels = ["group", "topic", "partition"]
        records = GaugeMetricFamily(
            "amlhp_consumer_lag_records",
            "Messages of a topic-partition the group has not processed (end - committed)",
            labels=labels,
        )
        seconds = GaugeMetricFamily(
            "amlhp_consumer_lag_seconds",
            "Age of the oldest message of a topic-partition the group has not processed",
            labels=labels,
        )
        now_ms = int(time.time() * 1000)
        for lag in lags:
            key = [lag.group, lag.topic, str(lag.partition)]
            records.add_metric(key, float(lag.records))
            seconds.add_metric(key, lag.seconds(now_ms))
        yield records
        yield seconds
        age = GaugeMetricFamily(
            "amlhp_consumer_lag_snapshot_age_seconds",
            "Seconds since the lag was last read from Kafka",
            labels=["group"],
        )
        if updated is not None:
            age.add_metric([self.group], max(0.0, time.time() - updated))
        yield age


# -- one call per process --------------------------------------------------------------
@dataclass
class StageMetrics:
    """What :func:`start_stage_metrics` started; :meth:`close` stops all of it."""

    metrics: PipelineMetrics
    server: MetricsServer | None
    lag: ConsumerLagCollector | None = None

    def close(self) -> None:
        if self.lag is not None:
            self.lag.close()
        if self.server is not None:
            self.server.close()


def start_stage_metrics(
    process: str,
    port: int | None,
    *,
    host: str = "127.0.0.1",
    settings: Settings | None = None,
    lag_group: str | None = None,
    lag_topics: Sequence[str] = (),
    lag_interval_s: float = 5.0,
) -> StageMetrics:
    """Initialise this process's metrics, serve them unless ``port`` is ``None``, and
    start the lag collector of ``lag_group`` on ``lag_topics`` when given."""
    from amlhp.encoders.reasons import OK, REASON_NAMES

    metrics = process_metrics()
    metrics.init_steps(PROCESS_STEPS[process], [r for r in REASON_NAMES if r != OK])
    lag = None
    if settings is not None and lag_group and lag_topics:
        lag = ConsumerLagCollector(settings, lag_group, lag_topics, interval_s=lag_interval_s)
        metrics.registry.register(lag)
        lag.start()
    server = serve_metrics(metrics.registry, port, host) if port is not None else None
    return StageMetrics(metrics, server, lag)


def install_faust_monitor(app: Any, metrics: PipelineMetrics) -> None:
    """Faust's own Prometheus sensor (``amlhp_faust_*``: events, sends, commits,
    rebalances) in this process's registry; failed sends also count as
    ``amlhp_producer_delivery_failures_total{step="worker"}``."""
    from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor

    failures = metrics.delivery_failures

    class _Monitor(PrometheusMonitor):
        def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
            super().on_send_error(producer, exc, state)
            failures.labels("worker").inc()

    failures.labels("worker")
    app.monitor = _Monitor(metrics=FaustMetrics.create(metrics.registry, "amlhp_faust"))


# -- the demo's endpoints ----------------------------------------------------------------
#: Where `amlhp demo` serves each process's metrics (infra/prometheus-compose.yml scrapes
#: these); a port already taken is replaced by a free one.
DEMO_PORTS = {"tap": 9470, "worker": 9471, "sink": 9472}


def port_or_free(preferred: int, host: str = "127.0.0.1") -> int:
    """``preferred`` when nothing listens there, else a free port the OS picks."""
    import socket

    for candidate in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind((host, candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError(f"no free TCP port on {host}")


@dataclass
class DemoMetrics:
    """The demo's metric endpoints; the tap's is served by the demo process itself."""

    ports: dict[str, int]
    tap: StageMetrics
    prometheus_url: str | None = None
    _targets: list[str] = field(default_factory=list)

    @property
    def endpoints(self) -> dict[str, str]:
        return {name: f"http://127.0.0.1:{port}/metrics" for name, port in self.ports.items()}

    def describe(self) -> list[str]:
        """Lines for the user: where to scrape, and whether Prometheus records them."""
        lines = [f"metrics of {name}: {url}" for name, url in self.endpoints.items()]
        if self.prometheus_url:
            lines.append(f"Prometheus at {self.prometheus_url} scrapes them (job amlhp)")
        else:
            lines.append("Prometheus is not running: `make prometheus-up` records them")
        return lines

    def close(self) -> None:
        from amlhp.infra import prometheus_server

        layout = prometheus_server.prometheus_layout()
        for name in self._targets:
            prometheus_server.unregister_target(layout, name)
        self.tap.close()


def start_demo_metrics(run_id: str) -> DemoMetrics:
    """Pick the demo's ports, serve the tap's metrics here, and register all three with
    the local Prometheus (``make prometheus-up``) when it runs."""
    from amlhp.infra import prometheus_server

    ports = {name: port_or_free(port) for name, port in DEMO_PORTS.items()}
    demo = DemoMetrics(ports, start_stage_metrics("tap", ports["tap"]))
    layout = prometheus_server.prometheus_layout()
    if prometheus_server.pid(layout) is not None:
        demo.prometheus_url = layout.url
        for name, port in ports.items():
            target = f"demo-{name}"
            prometheus_server.register_target(
                layout, target, f"127.0.0.1:{port}", {"run": run_id, "process": name}
            )
            demo._targets.append(target)
    return demo
