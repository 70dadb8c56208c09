"""``amlhp worker --explain-every N`` on the real broker: sampled explanations arrive on
their own topic, agree with the verdicts, and leave the accounting of verdicts alone."""

from __future__ import annotations

import itertools
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from confluent_kafka import Consumer
from prometheus_client.parser import text_string_to_metric_families

from amlhp.model.packet_explain import FIELD_NAMES
from amlhp.model.scorer import default_model_path, load_scorer
from amlhp.pipeline.dataset import read_verdicts
from amlhp.settings import Settings
from amlhp.streams.demo_metrics import port_or_free
from amlhp.streams.tap import Tap, pcap_packets, run_tap
from amlhp.wire import EXPLANATION, attribution_fields, from_ipc

from .conftest import StageStarter
from .test_pipeline import finish, ready

pytestmark = pytest.mark.slow  # two stage processes: about 25 s, more on a busy machine

PACKETS = 400
EVERY = 25


def explanations(settings: Settings, want: int, timeout_s: float = 120.0) -> pa.Table:
    """Every record of the explanation topic, once ``want`` of them arrived (or time ran
    out), plus a short wait for any extra one."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"{settings.consumer_group}-explanations",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.topic_explanations])
    batches: list[pa.RecordBatch] = []
    deadline = time.monotonic() + timeout_s
    settle: float | None = None
    try:
        while time.monotonic() < deadline and (settle is None or time.monotonic() < settle):
            for msg in consumer.consume(num_messages=100, timeout=0.5):
                assert msg.error() is None, msg.error()
                batch = from_ipc(msg.value() or b"", EXPLANATION)
                assert msg.key() == batch.column("gateway")[0].as_py().encode()
                batches.append(batch)
            if settle is None and sum(b.num_rows for b in batches) >= want:
                settle = time.monotonic() + 3.0
    finally:
        consumer.close()
    assert batches, "no explanation arrived"
    assert attribution_fields(batches[0].schema) == FIELD_NAMES
    return pa.Table.from_batches(batches)


def explanation_counts(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        s.labels["outcome"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "amlhp_explanations_total"
    }


def test_worker_explains_every_nth_packet_without_touching_the_verdicts(
    pipeline_settings: Settings, stages: StageStarter, demo_capture: Path, tmp_path: Path
) -> None:
    out = tmp_path / "verdicts"
    port = port_or_free(0)
    worker = stages(
        "worker",
        "worker",
        "--explain-every",
        str(EVERY),
        "--explain-max-per-s",
        "1000",
        "--explain-queue",
        "1000",
        "--explain-samples",
        "2",
        "--metrics-port",
        str(port),
    )
    sink = stages("sink", "sink", "--out", str(out), "--roll-seconds", "1")
    ready(pipeline_settings, [worker, sink])
    stop = threading.Event()
    tap = Tap(pipeline_settings, "gw-x", batch_size=100)
    packets = itertools.islice(pcap_packets([demo_capture], stop=stop), PACKETS)
    stats = run_tap(tap, packets, stop=stop)
    assert stats.delivered_packets == PACKETS

    ledger = finish(pipeline_settings, out, {"gw-x": (0, PACKETS)}, [worker, sink])
    assert ledger.verdicts > 0
    verdicts = read_verdicts(out)
    label = dict(
        zip(verdicts.column("seq").to_pylist(), verdicts.column("label").to_pylist(), strict=True)
    )
    version = set(verdicts.column("model_version").to_pylist())
    sampled = sorted(seq for seq in label if seq % EVERY == 0)
    assert len(sampled) >= 5

    got = explanations(pipeline_settings, len(sampled))
    seqs = got.column("seq").to_pylist()
    assert sorted(seqs) == sampled  # exactly the picked packets, each once
    assert set(got.column("gateway").to_pylist()) == {"gw-x"}
    for row in got.to_pylist():
        assert row["label"] == label[row["seq"]]
        assert row["model_version"] in version
        attr = np.array(row["attributions"], np.float32)
        assert attr.shape == (len(FIELD_NAMES),)
        assert np.isfinite(attr).all()
        assert row["samples"] == 2
    assert {row["model_version"] for row in got.to_pylist()} == {
        load_scorer(default_model_path()).version
    }

    deadline = time.monotonic() + 30
    counts = explanation_counts(port)
    while counts.get("emitted", 0.0) < len(sampled) and time.monotonic() < deadline:
        time.sleep(0.5)
        counts = explanation_counts(port)
    assert counts == {
        "emitted": len(sampled),
        "rate_limited": 0.0,
        "queue_full": 0.0,
        "failed": 0.0,
    }
    # explanations are extra: the accounting of verdicts is the one without them
    assert ledger.verdicts + ledger.dead_packets == PACKETS
    assert ledger.duplicate_verdicts == 0
