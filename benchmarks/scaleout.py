"""Scale-out: capacity with 1 and with 2 workers in one consumer group.

Workers of one Faust app share the topics' partitions, and Kafka's parallelism is per
partition: a second worker takes work only when the load is spread over partitions. The
tap keys every message by its gateway id, so one gateway is one key and fills one
partition, whatever the partition count. The scale-out run therefore drives the pipeline
with several taps at once, one gateway per partition, with gateway ids chosen so that
their keys land on distinct partitions (:func:`scaleout_gateways`). Capacity is the
packets of all taps divided by the time from the first tap's first packet to the last
verdict, on a fresh pipeline per worker count. On a 2-core machine that also hosts the
broker, the taps and the sink, the second worker competes for the same cores: the figure
says what scaling out buys here, not on a real cluster.
"""

from __future__ import annotations

import math
import time
import zlib
from pathlib import Path
from typing import Any

from amlhp.benchmarks.e2e import E2EConfig, load_result, said_if_inexact
from amlhp.benchmarks.exceptions import BenchmarksError
from amlhp.benchmarks.machine import machine_facts
from amlhp.benchmarks.pipeline_run import PipelineRun, StatusFn, combined_tap, pipeline
from amlhp.benchmarks.pipeline_run import quiet as _quiet
from amlhp.settings import Settings

GATEWAY_PREFIX = "scaleout-gw"


def key_partition(key: str, partitions: int) -> int:
    """The partition librdkafka's default partitioner gives a non-empty key.

    The tap's producer (``amlhp.pipeline.kafka_io.producer_config``) sets no
    ``partitioner``, so librdkafka's default ``consistent_random`` applies: CRC32 of the
    key bytes modulo the partition count (random only for an empty key).
    """
    if partitions < 1:
        raise BenchmarksError("partitions must be at least 1")
    return zlib.crc32(key.encode()) % partitions


def scaleout_gateways(
    partitions: int, prefix: str = GATEWAY_PREFIX, max_tries: int = 10_000
) -> dict[str, int]:
    """One gateway id per partition: ``prefix<i>`` with the smallest ``i`` for each.

    Deterministic (same ids every run), so results are comparable between runs.
    """
    chosen: dict[int, str] = {}
    for i in range(max_tries):
        name = f"{prefix}{i}"
        chosen.setdefault(key_partition(name, partitions), name)
        if len(chosen) == partitions:
            return {chosen[p]: p for p in range(partitions)}
    raise BenchmarksError(f"no gateway ids covering {partitions} partitions in {max_tries} tries")


def raw_partition_offsets(settings: Settings) -> dict[int, int]:
    """Messages per partition of the raw-packets topic (high watermarks of a fresh topic)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        settings.kafka_config(
            **{"group.id": f"{settings.consumer_group}-offsets", "enable.auto.commit": False}
        )
    )
    try:
        meta = consumer.list_topics(settings.topic_raw, timeout=10)
        parts = sorted(meta.topics[settings.topic_raw].partitions)
        return {
            p: int(consumer.get_watermark_offsets(TopicPartition(settings.topic_raw, p), 10)[1])
            for p in parts
        }
    finally:
        consumer.close()


def worker_assignment(settings: Settings) -> list[list[int]]:
    """Raw-topic partitions of each member of the workers' group (sorted per member)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka_config())
    group = settings.consumer_group
    desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    members = [
        sorted(
            tp.partition
            for tp in member.assignment.topic_partitions
            if tp.topic == settings.topic_raw
        )
        for member in desc.members
    ]
    return sorted(members)


def _measure(
    run: PipelineRun,
    cfg: E2EConfig,
    gateways: dict[str, int],
    loops_per_tap: int,
    on_status: StatusFn,
) -> dict[str, Any]:
    """All gateways' taps at full speed at once, then drain, account and summarise."""
    origin = time.time()
    on_status(f"{len(gateways)} taps at full speed, {loops_per_tap} pass(es) over the capture each")
    assignment = worker_assignment(run.settings)
    taps = run.run_taps(cfg.capture, list(gateways), loops=loops_per_tap)
    drain = run.wait_drained(taps, cfg.drain_timeout_s)
    result = load_result(run, combined_tap(taps), drain, target_pps=None, origin=origin)
    offsets = raw_partition_offsets(run.settings)
    result["per_gateway"] = {
        t.gateway: {"partition": gateways[t.gateway], "packets": t.packets} for t in taps
    }
    result["raw_messages_per_partition"] = offsets
    result["worker_partitions"] = assignment
    return said_if_inexact(result, "scale-out", on_status)


def run_scaleout(
    settings: Settings,
    *,
    worker_counts: tuple[int, ...] = (1, 2),
    partitions: int = 4,
    capacity_loops: int = 4,
    work_dir: Path = Path("out/bench"),
    quick: bool = False,
    on_status: StatusFn = _quiet,
) -> dict[str, Any]:
    """Full-speed capacity per worker count; one fresh pipeline each.

    ``capacity_loops`` passes over the capture in total are split between the taps (one
    per partition), at least one pass each.
    """
    gateways = scaleout_gateways(partitions)
    loops_per_tap = max(1, math.ceil(capacity_loops / len(gateways)))
    rows: list[dict[str, Any]] = []
    cfg = E2EConfig(capacity_loops=capacity_loops, partitions=partitions, quick=quick)
    for workers in worker_counts:
        with pipeline(
            settings, work_dir, workers=workers, partitions=partitions, on_status=on_status
        ) as run:
            result = _measure(run, cfg, gateways, loops_per_tap, on_status)
        rows.append(
            {
                "workers": workers,
                "capacity_pps": result["achieved_pps"],
                "packets": result["packets"],
                "latency_ms": result["latency_ms"],
                "cpu_cores": result["cpu_cores"],
                "exact": result["accounting"]["exact"],
                "accounting": result["accounting"],
                "per_gateway": result["per_gateway"],
                "raw_messages_per_partition": result["raw_messages_per_partition"],
                "worker_partitions": result["worker_partitions"],
            }
        )
        on_status(f"{workers} worker(s): {result['achieved_pps']:,.0f} packets/s")
    base = rows[0]["capacity_pps"] or 0.0
    for row in rows:
        row["speedup"] = (
            round(row["capacity_pps"] / base, 3) if base and row["capacity_pps"] else None
        )
    return {
        "kind": "scaleout",
        "what": (
            "capacity with 1 vs 2 workers in one consumer group "
            "(full-speed taps, one gateway per partition)"
        ),
        "partitions": partitions,
        "gateways": gateways,
        "passes_per_tap": loops_per_tap,
        "quick": quick,
        "rows": rows,
        "machine": machine_facts(),
    }
