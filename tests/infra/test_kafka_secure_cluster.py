"""The secured 3-broker cluster (``amlhp infra kafka up --secure --cluster``): brokers
replicate to each other over mutual TLS, the gateways' principal writes the raw topic
with RF 3 and may not read it back. Long (a cluster start): ``make test-long``."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from amlhp.infra import kafka_broker
from amlhp.infra.kafka_acls import apply_acls, stage_acls
from amlhp.infra.kafka_config import principal_settings, secure_cluster_layout
from amlhp.infra.paths import InfraPaths
from amlhp.pipeline.children import amlhp_command, child_env
from amlhp.settings import Settings
from amlhp.streams.topics import admin_client, ensure_pipeline_topics

pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.cluster]

CHECKOUT = InfraPaths(root=Path(__file__).resolve().parents[2])


def test_secure_cluster_replicates_over_mtls_and_keeps_least_privilege() -> None:
    from confluent_kafka import Consumer, TopicPartition

    from amlhp.data import DEMO_CAPTURE

    layout = secure_cluster_layout(CHECKOUT, name="pytest-cluster-secure")
    if any(kafka_broker.node_pid(n) is not None for n in secure_cluster_layout(CHECKOUT).nodes):
        pytest.skip("a developer's secured cluster runs on these ports")
    kafka_broker.up(layout, paths=CHECKOUT)
    try:
        prefix = f"test.secure-cluster.{uuid.uuid4().hex[:8]}"
        base = Settings.model_validate(
            {"topic_raw": f"{prefix}.raw", "consumer_group": prefix, "partitions": 3,
             "replication_factor": 3}
        )  # fmt: skip
        admin = principal_settings(base, layout, "admin")
        ensure_pipeline_topics(admin)
        apply_acls(admin_client(admin.kafka_config()), stage_acls(admin))
        tap = principal_settings(base, layout, "tap")
        env = child_env(tap, dict(os.environ))
        done = subprocess.run([*amlhp_command(), "tap", "-g", "gw-1", str(DEMO_CAPTURE)],
                              env=env, capture_output=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        meta = admin_client(admin.kafka_config()).list_topics(base.topic_raw, timeout=30)
        partitions = meta.topics[base.topic_raw].partitions
        assert all(len(p.isrs) == 3 for p in partitions.values())  # replicated over mTLS
        consumer = Consumer({**admin.kafka_config(), "group.id": f"{prefix}.check"})
        try:
            tps = [TopicPartition(base.topic_raw, p) for p in partitions]
            ends = sum(consumer.get_watermark_offsets(tp, timeout=30)[1] for tp in tps)
        finally:
            consumer.close()
        assert ends > 0
        # the gateways' principal cannot read back what it wrote
        refused = subprocess.run(
            [*amlhp_command(), "replay", "--from", "2000-01-01", "--to", "2100-01-01", "-o",
             str(CHECKOUT.var / f"{prefix}-replay")],
            env=env, capture_output=True, timeout=120,
        )  # fmt: skip
        assert refused.returncode == 2
        assert "to read topic" in refused.stderr.decode()
    finally:
        kafka_broker.down(layout, purge=True)
