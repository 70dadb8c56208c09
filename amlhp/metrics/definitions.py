"""What the pipeline measures: step names, buckets, bounded labels and the metric families.

It exists so that every process (tap, worker, sink, and later stages) declares the same
families, with the same names, help texts and labels, in one registry per process
(:func:`process_metrics`); dashboards (``dashboards/``) and their tests query these names.
The families are data (:data:`FAMILIES`), built once by :class:`PipelineMetrics`; the
stages update them once per batch, never per packet, so metrics cost a few dictionary
look-ups per Kafka message.

Every step of the pipeline has an id that reappears as the ``step`` label of its metrics,
as Bytewax names its steps: ``tap`` (gateway sensor), ``encode`` and ``score`` (the Faust
worker's agents) and ``sink`` (Parquet writer).

Label cardinality is bounded on purpose: labels carry the step, the gateway id (an
operator-chosen name, capped at :data:`MAX_GATEWAYS` distinct values per process, the
rest folded into ``_other``), the model's class names, the encoder's reason codes and
Kafka topic-partitions; never a packet's address or port.

The verdict counter carries each verdict's ``decision`` (``malicious``, ``benign`` or
``uncertain``, from the model's calibrated score and out-of-distribution test, see
:mod:`amlhp.model.decision`) as a label, so that dashboards count what an operator acts
on and need no class-name rule.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from amlhp.metrics.families import (  # noqa: F401 (re-exported)
    _FLOW_DECISION,
    _STEP_GW,
    ALERT_STEPS,
    BATCH_BUCKETS,
    EXPLAIN_BUCKETS,
    EXPLAIN_OUTCOMES,
    FAMILIES,
    INFERENCE_BATCH_BUCKETS,
    INFERENCE_PACKET_BUCKETS,
    LATENCY_BUCKETS,
    MAX_CLASSES,
    MAX_GATEWAYS,
    MAX_REASONS,
    OTHER,
    PROCESS_STEPS,
    SCORE_BUCKETS,
    STEP_ALERT_SINK,
    STEP_ALERTS,
    STEP_ENCODE,
    STEP_FLOWS,
    STEP_SCORE,
    STEP_SINK,
    STEP_TAP,
    STEPS,
    Kind,
    MetricFamily,
)
from amlhp.metrics.histogram import BulkHistogram

if TYPE_CHECKING:
    from pathlib import Path

    import pyarrow as pa


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
    """The metrics of one process, in their own registry; see the module docstring.

    Each attribute below is the collector of the :data:`FAMILIES` entry of that name.
    """

    packets_in: Counter
    packets_out: Counter
    bytes_in: Counter
    bytes_out: Counter
    batch_packets: Histogram
    inference_batch: Histogram
    inference_packet: Histogram
    latency: BulkHistogram
    verdicts: Counter
    score: BulkHistogram
    dead_letters: Counter
    skipped_messages: Counter
    delivery_failures: Counter
    model_info: Gauge
    site_profiles: Gauge
    model_loads: Counter
    explanations: Counter
    explain_seconds: Histogram
    alerts: Counter
    open_incidents: Gauge
    flow_verdicts: Counter
    flow_alarms: Counter
    devices: Gauge
    flow_packets_unused: Counter
    open_flows: Gauge
    last_seen: Gauge
    suppressed: Counter
    exported: Counter

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.gateway_label = BoundedLabel(MAX_GATEWAYS)
        self.class_label = BoundedLabel(MAX_CLASSES)
        self.reason_label = BoundedLabel(MAX_REASONS)
        self._model_version: str | None = None
        self._model_lock = threading.Lock()
        for family in FAMILIES:
            setattr(self, family.attr, family.build(self.registry))
        self._loads_seen = (0, 0)
        self._sites_seen: set[tuple[str, str]] = set()
        self._open_labels: set[tuple[str, str]] = set()
        self._device_labels: set[tuple[str, str]] = set()

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
            if step in (STEP_SINK, STEP_ALERTS, STEP_ALERT_SINK):
                self.skipped_messages.labels(step, "invalid_batch")

    def count_alerts(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Count emitted alert rows (one per incident revision)."""
        counts: dict[tuple[str, str, str], int] = {}
        for row in rows:
            key = (self.gateway(row["gateway"]), str(row["kind"]), str(row["status"]))
            counts[key] = counts.get(key, 0) + 1
        for (gateway, kind, status), n in counts.items():
            self.alerts.labels(gateway, kind, status).inc(n)

    def count_suppressed(self, rows: Sequence[Mapping[str, Any]], rules: Iterable[str]) -> None:
        """Count alert rows by the rule that covers them; zero series for ``rules``."""
        for rule in rules:
            self.suppressed.labels(self.reason_label(rule))
        for row in rows:
            if row.get("suppressed_by"):
                self.suppressed.labels(self.reason_label(str(row["suppressed_by"]))).inc()

    def set_open_incidents(self, open_by: Mapping[tuple[str, str], int]) -> None:
        """Replace the open-incident gauge with ``(gateway, kind) -> count``; series of
        pairs no longer open drop to 0 (they stay, so a graph shows the close)."""
        seen = set()
        for (gateway, kind), n in open_by.items():
            label = (self.gateway(gateway), kind)
            seen.add(label)
            self.open_incidents.labels(*label).set(n)
        for labels in list(self._open_labels - seen):
            self.open_incidents.labels(*labels).set(0)
        self._open_labels |= seen

    def record_flow_verdicts(self, verdicts: pa.RecordBatch) -> None:
        """Count one batch of flow verdicts by gateway, class and decision."""
        counts: dict[tuple[str, str, str], int] = {}
        cols = verdicts.select(["gateway", "label", "uncertain"]).to_pydict()
        for gateway, label, uncertain in zip(
            cols["gateway"], cols["label"], cols["uncertain"], strict=True
        ):
            key = (self.gateway(gateway), self.class_label(label), _FLOW_DECISION[bool(uncertain)])
            counts[key] = counts.get(key, 0) + 1
        for labels, n in counts.items():
            self.flow_verdicts.labels(*labels).inc(n)
        if "attack_alarm" in verdicts.schema.names:
            alarms = verdicts.select(["gateway", "attack_kind", "attack_alarm"]).to_pydict()
            for gateway, kind, alarm in zip(*alarms.values(), strict=True):
                if alarm:
                    self.flow_alarms.labels(self.gateway(gateway), self.class_label(kind)).inc()

    def count_flow_unused(self, by_reason: Mapping[str, int]) -> None:
        """Packets the flow worker put in no flow, by reason."""
        for reason, n in by_reason.items():
            if n:
                self.flow_packets_unused.labels(self.reason_label(reason)).inc(n)

    def init_flow_verdicts(
        self, gateway: str, classes: Sequence[str], kinds: Sequence[str] = ()
    ) -> None:
        """Zero series of every class and decision (and alarm kind) for a gateway the flow
        worker meets, so that a rate over its flows has data from the first verdicts on."""
        for label in classes:
            for decision in _FLOW_DECISION.values():
                self.flow_verdicts.labels(self.gateway(gateway), self.class_label(label), decision)
        for kind in kinds:
            self.flow_alarms.labels(self.gateway(gateway), self.class_label(kind))

    def set_devices(self, by_type: Mapping[tuple[str, str], int]) -> None:
        """The inventory gauge: ``(gateway, device type) -> hosts`` (absent pairs: 0)."""
        for labels in self._device_labels - set(by_type):
            self.devices.labels(*labels).set(0)
        for (gateway, device_type), n in by_type.items():
            labels = (self.gateway(gateway), self.class_label(device_type))
            self.devices.labels(*labels).set(n)
            self._device_labels.add(labels)

    def init_explanations(self) -> None:
        """Zero series of every explanation outcome (only workers that explain have them)."""
        for outcome in EXPLAIN_OUTCOMES:
            self.explanations.labels(STEP_SCORE, outcome)

    def count_explanations(self, outcome: str, packets: int = 1) -> None:
        if packets:
            self.explanations.labels(STEP_SCORE, outcome).inc(packets)

    # -- updates, one call per batch ----------------------------------------------------
    def count_in(self, step: str, gateway: str | None, packets: int, nbytes: int) -> None:
        self._count(self.packets_in, self.bytes_in, step, gateway, packets, nbytes)
        if packets and gateway is not None:
            self.last_seen.labels(step, self.gateway(gateway)).set_to_current_time()

    def count_out(self, step: str, gateway: str | None, packets: int, nbytes: int) -> None:
        self._count(self.packets_out, self.bytes_out, step, gateway, packets, nbytes)

    def _count(
        self,
        packet_counter: Counter,
        byte_counter: Counter,
        step: str,
        gateway: str | None,
        packets: int,
        nbytes: int,
    ) -> None:
        gw = self.gateway(gateway)
        if packets:
            packet_counter.labels(step, gw).inc(packets)
        if nbytes:
            byte_counter.labels(step, gw).inc(nbytes)

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
        sites = getattr(holder.current, "sites", None)
        served = {(g, p.version) for g, p in sites.by_gateway.items()} if sites else set()
        with self._model_lock:
            for gone in self._sites_seen - served:
                self.site_profiles.remove(*gone)
            for pair in served - self._sites_seen:
                self.site_profiles.labels(*pair).set(1)
            self._sites_seen = served
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

    def count_score_input(self, encoded: pa.RecordBatch | pa.Table) -> None:
        """The score step's input: the packets the encoder passed, by gateway."""
        for gw, n in _value_counts(encoded.column("gateway")).items():
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
        keys = pc.binary_join_element_wise(
            pc.fill_null(gateways, "unknown"),
            pc.fill_null(labels, "unknown"),
            pc.fill_null(table.column("decision"), "unknown"),
            "\x1f",
        )
        for key, count in _value_counts(keys).items():
            gw, cls, decision = key.split("\x1f", 2)
            self.verdicts.labels(self.gateway(gw), self.class_label(cls), decision).inc(count)
        scores = table.column("score").to_numpy(zero_copy_only=False)
        label_arr = labels.to_numpy(zero_copy_only=False)
        model = table.column("score").is_valid().to_numpy(zero_copy_only=False)
        for cls in np.unique(label_arr[model].astype(str)):  # not the ARP rows: unscored
            self.score.observe_many(scores[model & (label_arr == cls)], self.class_label(str(cls)))
        scored = table.column("scored_at_ns").to_numpy(zero_copy_only=False)
        self._observe_latency(STEP_SCORE, table, scored)
        per_packet = table.column("inference_ns").to_numpy(zero_copy_only=False)[model]
        if len(per_packet):
            pp = float(per_packet[0]) / 1e9
            self.inference_packet.observe(pp)
            self.inference_batch.observe(pp * int(model.sum()))
        self.observe_batch(STEP_SCORE, n)

    def record_stored(self, table: pa.Table, files: Sequence[Path], now_ns: int) -> None:
        """A sink flush: verdicts durably written, Parquet bytes per gateway (a file holds
        many gateways: its bytes are shared out by rows), latency."""
        if table.num_rows == 0:
            return
        size = 0
        for path in files:
            try:
                size += path.stat().st_size
            except OSError:
                continue
        for gw, count in _value_counts(table.column("gateway")).items():
            label = self.gateway(gw)
            self.packets_out.labels(STEP_SINK, label).inc(count)
            if size:
                self.bytes_out.labels(STEP_SINK, label).inc(size * count / table.num_rows)
        stamps = np.full(table.num_rows, now_ns, dtype=np.int64)
        self._observe_latency(STEP_SINK, table, stamps)
        self.observe_batch(STEP_SINK, table.num_rows)

    def _observe_latency(self, step: str, table: pa.Table, at_ns: np.ndarray) -> None:
        ts = table.column("ts_ns").to_numpy(zero_copy_only=False).astype(np.int64)
        latency = (at_ns.astype(np.int64) - ts) / 1e9
        gws = table.column("gateway").to_numpy(zero_copy_only=False).astype(str)
        # one pass per series (the gateway label is capped), not per gateway: a fleet's
        # flush holds thousands of gateways, and a mask per gateway grows with rows x them
        names, of_row = np.unique(gws, return_inverse=True)
        labels, of_name = np.unique([self.gateway(str(g)) for g in names], return_inverse=True)
        series = of_name[of_row]
        for i, label in enumerate(labels.tolist()):
            self.latency.observe_many(latency[series == i], step, label)


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
