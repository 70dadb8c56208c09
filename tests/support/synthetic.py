"""Synthetic verdicts in the pipeline's verdict schema, for the tests (not installed).

Real runs need Kafka and a model; the report and the metrics code only need verdict
rows. These are made with a seeded generator so a test can compute the expected counts
from the same table it feeds in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

DEFAULT_CLASSES = (
    "benign_iot",
    "mqtt_benign",
    "dos_synflood",
    "ddos_udp_amplification",
    "mqtt_bruteforce",
)


def synthetic_verdicts(
    n: int,
    *,
    gateways: Sequence[str] = ("gw-1", "gw-2"),
    classes: Sequence[str] = DEFAULT_CLASSES,
    seed: int = 7,
    start_ns: int = 1_700_000_000 * 10**9,
    span_s: float = 60.0,
    model_version: str = "synthetic-1",
) -> pa.Table:
    """``n`` verdict rows: random gateways, classes, scores, destinations and latencies."""
    from amlhp.wire import verdict_schema

    rng = np.random.default_rng(seed)
    k = len(classes)
    class_ids = rng.integers(0, k, n).astype(np.int16)
    probs = rng.dirichlet(np.ones(k), n).astype(np.float32)
    probs[np.arange(n), class_ids] += 1.0
    probs /= probs.sum(axis=1, keepdims=True)
    ts = start_ns + np.sort(rng.integers(0, int(span_s * 1e9), n)).astype(np.int64)
    latency_ns = rng.lognormal(np.log(20e6), 0.6, n).astype(np.int64)
    gw = np.asarray(gateways, dtype=object)[rng.integers(0, len(gateways), n)]
    dst_last = rng.integers(1, 6, n)
    ports = np.asarray([1883, 53, 80, 443, 5683], dtype=np.int64)[rng.integers(0, 5, n)]
    labels = np.asarray(classes, dtype=object)[class_ids]
    seqs = np.zeros(n, dtype=np.uint64)
    for name in gateways:
        mask = gw == name
        seqs[mask] = np.arange(int(mask.sum()), dtype=np.uint64)
    # benign classes: names starting with "benign"; the rest share one attack score
    attack = np.array([not str(c).startswith("benign") for c in classes])
    malicious = probs[:, attack].sum(axis=1).astype(np.float32)
    decisions = np.where(
        malicious >= 0.8, "malicious", np.where(malicious < 0.3, "benign", "uncertain")
    )
    schema = verdict_schema()
    columns: dict[str, pa.Array] = {
        "gateway": pa.array(gw, pa.string()),
        "ts_ns": pa.array(ts, pa.int64()),
        "seq": pa.array(seqs, pa.uint64()),
        "wire_len": pa.array(rng.integers(60, 1500, n), pa.uint32()),
        "linktype": pa.array(np.ones(n, np.uint16), pa.uint16()),
        "src_ip": pa.array([f"192.0.2.{i % 250 + 1}" for i in range(n)], pa.string()),
        "dst_ip": pa.array([f"198.51.100.{d}" for d in dst_last], pa.string()),
        "src_port": pa.array(rng.integers(1024, 65535, n), pa.uint16()),
        "dst_port": pa.array(ports, pa.uint16()),
        "proto": pa.array(np.full(n, 6, np.uint8), pa.uint8()),
        "status": pa.array(["ok"] * n, pa.string()),
        "label": pa.array(labels, pa.string()),
        "class_id": pa.array(class_ids, pa.int16()),
        "score": pa.array(probs[np.arange(n), class_ids], pa.float32()),
        "probs": pa.array(list(probs), pa.list_(pa.float32())),
        "malicious_score": pa.array(malicious, pa.float32()),
        "decision": pa.array(decisions, pa.string()),
        "ood_score": pa.array(rng.normal(-8.0, 1.0, n).astype(np.float32), pa.float32()),
        "tcp_flags": pa.array(np.full(n, 0x18, np.uint8), pa.uint8()),
        "payload_len": pa.array(rng.integers(0, 1400, n), pa.uint32()),
        "dns_qname": pa.nulls(n, pa.string()),
        "modbus_fc": pa.nulls(n, pa.uint8()),
        "icmp_type": pa.nulls(n, pa.uint8()),
        "arp_op": pa.nulls(n, pa.uint16()),
        "arp_mac": pa.nulls(n, pa.string()),
        "model_version": pa.array([model_version] * n, pa.string()),
        "ingested_at_ns": pa.array(ts + latency_ns // 4, pa.int64()),
        "encoded_at_ns": pa.array(ts + latency_ns // 2, pa.int64()),
        "scored_at_ns": pa.array(ts + latency_ns, pa.int64()),
        "inference_ns": pa.array(np.full(n, 2_000, np.int64), pa.int64()),
    }
    return pa.table([columns[f.name].cast(f.type) for f in schema], schema=schema)


def write_dataset(table: pa.Table, root: Path, topic: str = "synthetic.verdicts") -> list[Path]:
    """Write ``table`` as the sink would (by date, one manifest); return the files."""
    from amlhp.pipeline import dataset
    from amlhp.pipeline.parquet_sink import write_date_partitions

    rng = dataset.OffsetRange(topic, 0, 0, max(0, table.num_rows - 1))
    files = write_date_partitions(root, table, rng, "zstd")
    dataset.write_manifest(root, rng, files, table.num_rows)
    return files
