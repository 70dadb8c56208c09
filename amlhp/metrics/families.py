"""The pipeline's metric families as data: step names, buckets and every family's name,
help text and labels (:data:`FAMILIES`), read by :class:`amlhp.metrics.definitions.
PipelineMetrics` to build a process's registry and by the dashboards and their tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from amlhp.metrics.histogram import BulkHistogram

STEP_TAP = "tap"
STEP_ENCODE = "encode"
STEP_SCORE = "score"
STEP_SINK = "sink"
STEP_ALERTS = "alerts"
STEP_ALERT_SINK = "alert_sink"
STEP_FLOWS = "flows"
#: The pipeline's steps in data-flow order: the values of every ``step`` label.
STEPS: tuple[str, ...] = (STEP_TAP, STEP_ENCODE, STEP_SCORE, STEP_SINK)
#: The steps after the verdicts: incidents (``amlhp alerts-stage``) and their dataset.
ALERT_STEPS: tuple[str, ...] = (STEP_ALERTS, STEP_ALERT_SINK)

#: Which steps each process kind runs (the ``amlhp`` command that starts it).
PROCESS_STEPS: dict[str, tuple[str, ...]] = {
    "tap": (STEP_TAP,),
    "worker": (STEP_ENCODE, STEP_SCORE),
    "sink": (STEP_SINK,),
    "alerts": (STEP_ALERTS,),
    "alert-sink": (STEP_ALERT_SINK,),
    "flows": (STEP_FLOWS,),
    "flow-sink": (),  # its consumer lag only
    "alerts-export": (),  # its deliveries (amlhp_exported_total) and consumer lag
}

OTHER = "_other"
MAX_GATEWAYS = 100
MAX_CLASSES = 64
MAX_REASONS = 32

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


Kind = Literal["counter", "gauge", "histogram", "bulk"]


@dataclass(frozen=True)
class MetricFamily:
    """One metric family of :class:`PipelineMetrics`: the attribute that holds it, its
    kind (``bulk``: a :class:`BulkHistogram`), Prometheus name, help text and labels."""

    attr: str
    kind: Kind
    name: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    def build(self, registry: CollectorRegistry) -> Any:
        """The collector of this family, registered in ``registry``."""
        if self.kind == "counter":
            return Counter(self.name, self.help, self.labels, registry=registry)
        if self.kind == "gauge":
            return Gauge(self.name, self.help, self.labels, registry=registry)
        if self.kind == "histogram":
            return Histogram(
                self.name, self.help, self.labels, buckets=self.buckets, registry=registry
            )
        return BulkHistogram(self.name, self.help, self.labels, self.buckets, registry=registry)


_STEP_GW = ("step", "gateway")

_FLOW_DECISION = {False: "accepted", True: "uncertain"}

#: Every family of a process's registry, in exposition order.
FAMILIES: tuple[MetricFamily, ...] = (
    MetricFamily(
        "packets_in", "counter", "amlhp_packets_in",
        "Packets a step received (tap: captured), by step and gateway",
        _STEP_GW,
    ),
    MetricFamily(
        "last_seen", "gauge", "amlhp_gateway_last_seen_timestamp_seconds",
        "Wall-clock time (Unix seconds) this process last received packets of the gateway, "
        "by step: time() minus it is how long a gateway has been silent",
        ("step", "gateway"),
    ),
    MetricFamily(
        "packets_out", "counter", "amlhp_packets_out",
        "Packets a step passed on (tap: delivered to Kafka; encode: encoded; "
        "score: verdicts published; sink: verdicts durably written)",
        _STEP_GW,
    ),
    MetricFamily(
        "bytes_in", "counter", "amlhp_bytes_in",
        "Bytes a step received (tap: captured frame bytes; others: Kafka message values)",
        _STEP_GW,
    ),
    MetricFamily(
        "bytes_out", "counter", "amlhp_bytes_out",
        "Bytes a step passed on (Kafka message values; sink: Parquet bytes written)",
        _STEP_GW,
    ),
    MetricFamily(
        "batch_packets", "histogram", "amlhp_batch_packets",
        "Packets per batch: tap messages, encode messages, score micro-batches, sink flushes",
        ("step",), BATCH_BUCKETS,
    ),
    MetricFamily(
        "inference_batch", "histogram", "amlhp_inference_batch_seconds",
        "Model inference time per scored micro-batch",
        (), INFERENCE_BATCH_BUCKETS,
    ),
    MetricFamily(
        "inference_packet", "histogram", "amlhp_inference_packet_seconds",
        "Model inference time per packet (batch time / batch size), one sample per batch",
        (), INFERENCE_PACKET_BUCKETS,
    ),
    MetricFamily(
        "latency", "bulk", "amlhp_e2e_latency_seconds",
        "Capture timestamp -> verdict (step=score) or -> durably stored (step=sink)",
        _STEP_GW, LATENCY_BUCKETS,
    ),
    MetricFamily(
        "verdicts", "counter", "amlhp_verdicts",
        "Verdicts published, by gateway, predicted class and decision",
        ("gateway", "class", "decision"),
    ),
    MetricFamily(
        "score", "bulk", "amlhp_verdict_score",
        "Probability of the predicted class, by class",
        ("class",), SCORE_BUCKETS,
    ),
    MetricFamily(
        "dead_letters", "counter", "amlhp_dead_letters",
        "Dead letters published, by step, reason code and kind "
        "(packet: one packet refused; message: a whole Kafka message was not a batch)",
        ("step", "reason", "kind"),
    ),
    MetricFamily(
        "skipped_messages", "counter", "amlhp_skipped_messages",
        "Kafka messages a step skipped without a dead letter (sink: not a verdict batch)",
        ("step", "reason"),
    ),
    MetricFamily(
        "delivery_failures", "counter", "amlhp_producer_delivery_failures",
        "Kafka messages a producer failed to deliver",
        ("step",),
    ),
    MetricFamily(
        "model_info", "gauge", "amlhp_model_info",
        "The serving model version (value 1 on the version that serves)",
        ("version",),
    ),
    MetricFamily(
        "site_profiles", "gauge", "amlhp_site_profile_info",
        "Gateways judged by a learnt site profile over the serving model (amlhp model "
        "adapt; value 1 on each gateway's profile version)",
        ("gateway", "version"),
    ),
    MetricFamily(
        "model_loads", "counter", "amlhp_model_loads",
        "Model artifacts loaded (the first one included) or refused by the reload watcher",
        ("result",),
    ),
    MetricFamily(
        "explanations", "counter", "amlhp_explanations",
        "Packets the explanation sampler picked, by outcome (emitted: published to the "
        "explanation topic; rate_limited / queue_full: dropped so that scoring never "
        "waits; failed: the explanation or its delivery failed)",
        ("step", "outcome"),
    ),
    MetricFamily(
        "explain_seconds", "histogram", "amlhp_explanation_seconds",
        "Time to explain one sampled packet, off the scoring thread",
        (), EXPLAIN_BUCKETS,
    ),
    MetricFamily(
        "alerts", "counter", "amlhp_alerts",
        "Alert rows the alert stage emitted, by gateway, kind and status "
        "(opened: an incident was raised; updated; closed)",
        ("gateway", "kind", "status"),
    ),
    MetricFamily(
        "suppressed", "counter", "amlhp_suppressed",
        "Alert rows an allow-list rule covers (kept, marked suppressed_by), by rule id; "
        "every loaded rule has a series, so a rule that never matches shows 0",
        ("rule",),
    ),
    MetricFamily(
        "exported", "counter", "amlhp_exported",
        "Alert rows `amlhp alerts-export` handled, by result (delivered; retried: one "
        "failed try; dead_lettered: refused or failing after the retries; skipped: "
        "filtered by status or suppressed)",
        ("result",),
    ),
    MetricFamily(
        "open_incidents", "gauge", "amlhp_open_incidents",
        "Incidents open now in this alert process, by gateway and kind",
        ("gateway", "kind"),
    ),
    MetricFamily(
        "flow_verdicts", "counter", "amlhp_flow_verdicts",
        "Flow verdicts the flow worker published, by gateway, class and decision "
        "(accepted: the flow model is sure; uncertain)",
        ("gateway", "class", "decision"),
    ),
    MetricFamily(
        "flow_alarms", "counter", "amlhp_flow_alarms",
        "Flow verdicts that raised the attack flow model's alarm, by gateway and kind "
        "(evidence for the alert stage)",
        ("gateway", "kind"),
    ),
    MetricFamily(
        "devices", "gauge", "amlhp_devices",
        "Hosts in this flow worker's device inventory, by gateway and device type",
        ("gateway", "device_type"),
    ),
    MetricFamily(
        "flow_packets_unused", "counter", "amlhp_flow_packets_unused",
        "Packets the flow worker put in no flow, by reason (the encoder's reason codes, "
        "as dead letters of the packet worker; no_local_endpoint: neither address in the "
        "flow model's local networks)",
        ("reason",),
    ),
    MetricFamily(
        "open_flows", "gauge", "amlhp_open_flows",
        "Flow records this flow worker holds open (state in its table)",
        (),
    ),
)  # fmt: skip
