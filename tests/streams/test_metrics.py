"""Prometheus metrics of the pipeline processes: definitions, endpoint, lag, tap counters."""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from amlhp.data import DEMO_CAPTURE
from amlhp.metrics.definitions import (
    LATENCY_BUCKETS,
    OTHER,
    BoundedLabel,
    PipelineMetrics,
    process_metrics,
)
from amlhp.metrics.histogram import BulkHistogram
from amlhp.metrics.lag import ConsumerLagCollector, PartitionLag
from amlhp.metrics.server import serve_metrics
from amlhp.settings import Settings
from amlhp.streams.deadletter import Origin, dead_message, dead_packets
from tests.support.synthetic import synthetic_verdicts


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry's exposition, keyed by (name, sorted labels)."""
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return samples(registry).get((name, tuple(sorted(labels.items()))), 0.0)


def test_bulk_histogram_matches_prometheus_client_histogram() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.exponential(0.3, 500), list(LATENCY_BUCKETS), [0.0, 1e9]])
    reference_registry, bulk_registry = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("lat", "h", ["gw"], buckets=LATENCY_BUCKETS, registry=reference_registry)
    for v in values:
        reference.labels("a").observe(float(v))
    bulk = BulkHistogram("lat", "h", ["gw"], LATENCY_BUCKETS, registry=bulk_registry)
    bulk.observe_many(values[:100], "a")
    bulk.observe_many(values[100:], "a")
    got = {k: v for k, v in samples(bulk_registry).items() if not k[0].endswith("_created")}
    want = {k: v for k, v in samples(reference_registry).items() if not k[0].endswith("_created")}
    assert got.keys() == want.keys()
    for key, expected in want.items():
        assert got[key] == pytest.approx(expected), key
    with pytest.raises(ValueError, match="takes labels"):
        bulk.observe_many([1.0], "a", "b")


def test_bounded_label_folds_values_past_the_limit() -> None:
    label = BoundedLabel(3)
    assert [label(v) for v in ("a", "b", "a", "c", "d", None)] == ["a", "b", "a", "c", OTHER, OTHER]
    assert label("b") == "b"


def test_record_verdicts_counts_per_class_gateway_and_latency() -> None:
    metrics = PipelineMetrics()
    table = synthetic_verdicts(2000, seed=11)
    metrics.record_verdicts(table)
    reg = metrics.registry
    labels = np.array(table.column("label").to_pylist())
    gateways = np.array(table.column("gateway").to_pylist())
    decisions = np.array(table.column("decision").to_pylist())
    assert len(set(decisions)) == 3  # the synthetic verdicts have all three
    for gw in set(gateways):
        for cls in set(labels):
            for decision in set(decisions):
                n = int(((gateways == gw) & (labels == cls) & (decisions == decision)).sum())
                got = value(
                    reg, "amlhp_verdicts_total", gateway=gw, **{"class": cls}, decision=decision
                )
                assert got == n, (gw, cls, decision)
        latency_count = value(reg, "amlhp_e2e_latency_seconds_count", step="score", gateway=gw)
        assert latency_count == int((gateways == gw).sum())
    lat = (
        np.array(table.column("scored_at_ns").to_pylist())
        - np.array(table.column("ts_ns").to_pylist())
    ) / 1e9
    total_sum = sum(
        value(reg, "amlhp_e2e_latency_seconds_sum", step="score", gateway=gw)
        for gw in set(gateways)
    )
    assert total_sum == pytest.approx(lat.sum())
    score_count = sum(
        value(reg, "amlhp_verdict_score_count", **{"class": c}) for c in set(labels.tolist())
    )
    assert score_count == table.num_rows
    assert value(reg, "amlhp_inference_batch_seconds_count") == 1
    assert value(reg, "amlhp_inference_batch_seconds_sum") == pytest.approx(2e-6 * 2000)
    assert value(reg, "amlhp_batch_packets_count", step="score") == 1


def test_latency_of_gateways_past_the_label_cap_folds_into_one_series() -> None:
    """A flush of more gateways than the label cap: each latency lands in its gateway's
    series or in the one ``_other`` series, none lost and none twice."""
    metrics = PipelineMetrics()
    metrics.gateway_label = BoundedLabel(1)
    table = synthetic_verdicts(500, seed=3)
    gateways = np.array(table.column("gateway").to_pylist())
    assert len(set(gateways)) > 1
    metrics.record_verdicts(table)
    reg = metrics.registry
    kept = [metrics.gateway(str(g)) for g in sorted(set(gateways))]
    named = sorted({k for k in kept if k != OTHER})
    assert len(named) == 1
    counts = {
        label: value(reg, "amlhp_e2e_latency_seconds_count", step="score", gateway=label)
        for label in [*named, OTHER]
    }
    for label in named:
        assert counts[label] == int((gateways == label).sum())
    assert sum(counts.values()) == table.num_rows


def test_dead_letters_are_counted_by_reason_and_kind() -> None:
    metrics = PipelineMetrics()
    rows = pa.RecordBatch.from_pydict(
        {
            "gateway": ["g"] * 3,
            "seq": pa.array([1, 2, 3], pa.uint64()),
            "ts_ns": [1, 2, 3],
            "wire_len": pa.array([60] * 3, pa.uint32()),
            "linktype": pa.array([1] * 3, pa.uint16()),
            "status": ["non_ip", "non_ip", "truncated_transport"],
        }
    )
    origin = Origin("t", 0, 5)
    metrics.count_dead_batch("encode", dead_packets(rows, None, origin, "encode"))
    metrics.count_dead_batch("encode", dead_message(origin, "encode", "bad", b"xx", "g"))
    reg = metrics.registry
    assert (
        value(reg, "amlhp_dead_letters_total", step="encode", reason="non_ip", kind="packet") == 2
    )
    assert (
        value(
            reg,
            "amlhp_dead_letters_total",
            step="encode",
            reason="truncated_transport",
            kind="packet",
        )
        == 1
    )
    assert (
        value(
            reg, "amlhp_dead_letters_total", step="encode", reason="invalid_batch", kind="message"
        )
        == 1
    )


def test_model_version_gauge_follows_the_serving_model() -> None:
    metrics = PipelineMetrics()
    metrics.set_model_version("v1")
    metrics.set_model_version("v2")
    series = {k for k in samples(metrics.registry) if k[0] == "amlhp_model_info"}
    assert series == {("amlhp_model_info", (("version", "v2"),))}


def test_metrics_endpoint_serves_the_registry() -> None:
    metrics = PipelineMetrics()
    metrics.count_in("tap", "gw-x", 7, 700)
    server = serve_metrics(metrics.registry, 0)
    try:
        assert server.port > 0
        with urllib.request.urlopen(server.url, timeout=5) as resp:
            body = resp.read().decode()
        assert 'amlhp_packets_in_total{gateway="gw-x",step="tap"} 7.0' in body
        assert 'amlhp_bytes_in_total{gateway="gw-x",step="tap"} 700.0' in body
    finally:
        server.close()


def test_partition_lag_arithmetic() -> None:
    caught_up = PartitionLag("g", "t", 0, committed=10, low=0, high=10, oldest_unprocessed_ts_ms=1)
    assert caught_up.records == 0
    assert caught_up.seconds(5_000) == 0
    behind = PartitionLag("g", "t", 1, committed=4, low=0, high=10, oldest_unprocessed_ts_ms=1_000)
    assert behind.records == 6
    assert behind.seconds(4_000) == pytest.approx(3.0)
    never = PartitionLag("g", "t", 2, committed=None, low=3, high=10)
    assert never.records == 7
    assert never.start == 3
    truncated = PartitionLag("g", "t", 3, committed=1, low=5, high=8)
    assert truncated.records == 3


def test_consumer_lag_from_the_real_broker(kafka_settings: Settings) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = kafka_settings.topic_raw
    admin = AdminClient(kafka_settings.kafka_config())
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(30)
    producer = Producer(kafka_settings.kafka_config())
    produced_at = time.time()
    for i in range(10):
        producer.produce(topic, value=b"x", partition=i % 2)
    assert producer.flush(30) == 0
    group = f"{kafka_settings.consumer_group}.lag"
    consumer = Consumer(kafka_settings.kafka_config(**{"group.id": group}))
    consumer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    consumer.close()
    collector = ConsumerLagCollector(kafka_settings, group, [topic])
    try:
        lags = {lag.partition: lag for lag in collector.poll_once()}
    finally:
        collector.close()
    assert lags[0].committed == 2
    assert lags[0].records == 3
    assert lags[1].committed is None
    assert lags[1].records == 5
    now_ms = int(time.time() * 1000)
    for lag in lags.values():
        assert lag.oldest_unprocessed_ts_ms is not None
        assert 0 <= lag.seconds(now_ms) <= time.time() - produced_at + 5
    registry = CollectorRegistry()
    registry.register(collector)
    assert (
        value(registry, "amlhp_consumer_lag_records", group=group, topic=topic, partition="0") == 3
    )
    assert (
        value(registry, "amlhp_consumer_lag_records", group=group, topic=topic, partition="1") == 5
    )


def test_tap_counts_packets_and_bytes_per_batch(kafka_settings: Settings) -> None:
    from amlhp.streams.tap import Tap, pcap_packets, run_tap
    from amlhp.streams.topics import ensure_pipeline_topics

    ensure_pipeline_topics(kafka_settings)
    registry = process_metrics().registry
    gateway = f"gw-metrics-{kafka_settings.consumer_group[-8:]}"
    stop = threading.Event()
    tap = Tap(kafka_settings, gateway, batch_size=400)
    stats = run_tap(tap, pcap_packets([Path(DEMO_CAPTURE)], stop=stop), stop=stop)
    assert stats.failed_packets == 0
    assert value(registry, "amlhp_packets_in_total", step="tap", gateway=gateway) == stats.packets
    assert (
        value(registry, "amlhp_bytes_in_total", step="tap", gateway=gateway) == stats.bytes_captured
    )
    assert value(registry, "amlhp_packets_out_total", step="tap", gateway=gateway) == stats.packets
    assert value(registry, "amlhp_bytes_out_total", step="tap", gateway=gateway) == stats.bytes_sent


def test_port_or_free_keeps_a_free_port_and_replaces_a_taken_one() -> None:
    import socket

    from amlhp.streams.demo_metrics import port_or_free

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    assert port_or_free(free) == free
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        other = port_or_free(taken)
        assert other != taken
        assert other > 0


def test_stage_metrics_listen_on_the_settings_metrics_host() -> None:
    """AMLHP_METRICS_HOST moves a stage's /metrics off the default loopback address (here
    to another loopback address, so that nothing is exposed during the test)."""
    from amlhp.streams.pipeline_cli import start_metrics

    settings = Settings.model_validate({"metrics_host": "127.0.0.2"})
    started = start_metrics("tap", 0, settings)
    try:
        assert started.server is not None
        assert started.server.host == "127.0.0.2"
        with urllib.request.urlopen(started.server.url, timeout=10) as page:
            assert b"amlhp_" in page.read()
    finally:
        started.close()
