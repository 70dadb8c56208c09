"""The shared Parquet sink core on the real broker: files, manifests, bad messages, resume.

The packet verdict sink (a thin subclass) is driven directly, in this process, so the
test can read its counters: a bad message is counted and its offset still moves on, every
row lands once, and a second sink in a group with no committed offsets removes an
orphaned file and resumes after the last durable range instead of writing duplicates.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from amlhp.pipeline import dataset
from amlhp.pipeline.parquet_sink import SinkStats
from amlhp.settings import Settings
from amlhp.streams.sink import ParquetSink
from amlhp.streams.topics import ensure_pipeline_topics
from amlhp.wire import to_ipc
from tests.support.kafka import produce_all
from tests.support.synthetic import synthetic_verdicts


def _run(
    sink: ParquetSink, until: Callable[[ParquetSink, SinkStats], bool], linger_s: float = 0.0
) -> SinkStats:
    """Run ``sink`` in a thread until ``until`` holds (then ``linger_s`` more), then stop."""
    stop = threading.Event()
    reached = threading.Event()
    result: list[SinkStats] = []

    def progress(stats: SinkStats) -> None:
        if until(sink, stats):
            reached.set()

    thread = threading.Thread(target=lambda: result.append(sink.run(stop, progress)), daemon=True)
    thread.start()
    assert reached.wait(60), "the sink never got there"
    time.sleep(linger_s)
    stop.set()
    thread.join(60)
    assert result, "the sink did not stop"
    return result[0]


@pytest.mark.kafka
def test_sink_core_counts_bad_messages_and_resumes_after_durable_ranges(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = kafka_settings
    ensure_pipeline_topics(settings)
    table = synthetic_verdicts(300, gateways=("gw-1",))
    records = [(b"gw-1", to_ipc(batch)) for batch in table.to_batches(max_chunksize=100)]
    records.append((b"gw-1", b"not an arrow stream"))
    produce_all(settings.kafka_config(), settings.topic_verdicts, records)
    out = tmp_path / "verdicts"

    first = ParquetSink(settings, out, group_id=f"{settings.consumer_group}-a", roll_seconds=0.5)
    stats = _run(first, lambda _sink, s: s.messages >= 4)
    assert (stats.messages, stats.rows, stats.bad_messages) == (4, 300, 1)
    assert dataset.read_verdicts(out).num_rows == 300
    topic = settings.topic_verdicts
    ranges = [r for p in range(settings.partitions) for r in dataset.manifests(out, topic, p)]
    assert sum(r.last - r.first + 1 for r in ranges) == 4  # the bad message's offset too

    # An interrupted flush left a file no manifest lists; a fresh group has no offsets.
    last = max(ranges, key=lambda r: r.last)
    orphan = dataset.date_dir(out, "2023-11-14") / dataset.data_file_name(
        dataset.OffsetRange(topic, last.partition, last.last + 1, last.last + 9)
    )
    dataset.write_durably(orphan, b"half a flush")
    second = ParquetSink(settings, out, group_id=f"{settings.consumer_group}-b", roll_seconds=0.5)
    # a few polls after the assignment: a range read twice would arrive by then
    stats = _run(second, lambda sink, _s: bool(sink._consumer.assignment()), linger_s=2.0)
    assert stats.orphans_removed == 1
    assert not orphan.exists()
    assert stats.messages == 0  # resumed after the durable ranges: nothing read twice
    assert dataset.read_verdicts(out).num_rows == 300


@pytest.mark.kafka
def test_re_delivered_verdicts_are_dropped_with_marks_that_survive_a_restart(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """A worker that restarts publishes again what came after its last commit: the sink
    keeps one row per (gateway, seq), also across its own restart (marks in manifests)."""
    settings = kafka_settings
    ensure_pipeline_topics(settings)
    table = synthetic_verdicts(400, gateways=("gw-1",)).sort_by("seq")
    seqs = table.column("seq").to_pylist()
    assert seqs == sorted(set(seqs))
    first_part = [table.slice(0, 100), table.slice(50, 100)]  # rows 50-99 twice
    produce_all(settings.kafka_config(), settings.topic_verdicts,
                [(b"gw-1", to_ipc(b.to_batches()[0])) for b in first_part])  # fmt: skip
    out = tmp_path / "verdicts"
    group = f"{settings.consumer_group}-dedupe"
    sink = ParquetSink(settings, out, group_id=group, roll_seconds=0.5)
    stats = _run(sink, lambda _sink, s: s.messages >= 2)
    assert (stats.rows, stats.duplicates_dropped) == (150, 50)

    # after the restart the marks come from the manifests, not from memory
    produce_all(settings.kafka_config(), settings.topic_verdicts,
                [(b"gw-1", to_ipc(table.slice(100, 200).to_batches()[0]))])  # fmt: skip
    again = ParquetSink(settings, out, group_id=group, roll_seconds=0.5)
    stats = _run(again, lambda _sink, s: s.messages >= 1)
    assert (stats.rows, stats.duplicates_dropped) == (150, 50)
    stored = dataset.read_verdicts(out).column("seq").to_pylist()
    assert sorted(stored) == seqs[:300]
