"""Stage by stage: tap -> Kafka, encoder, scorer (Fig. 10) and the Parquet sink.

Each stage is timed alone, on the real broker where it talks to Kafka, on topics of its
own that are deleted afterwards:

* tap -> Kafka: the real :class:`~amlhp.streams.tap.Tap` (idempotent producer, acks=all,
  lz4) publishing the capture at full speed, until every delivery is acknowledged;
  packets/s and MB/s (bytes of the Arrow messages sent, and bytes captured).
* encoder: :func:`amlhp.benchmarks.encode_bench.run_encode_bench`, pinned to one core.
* scorer: :func:`amlhp.benchmarks.score_bench.run_fig10` (per-packet time and peak memory
  by batch size, the paper's Fig. 10).
* Parquet sink: verdict messages (real verdicts of the capture, re-numbered to reach the
  wanted rows) are produced first, then the real :class:`~amlhp.streams.sink.ParquetSink`
  consumes them; rows/s from its first message to its last durable flush (the group join
  is not timed).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from amlhp.benchmarks.encode_bench import DEFAULT_DATA, run_encode_bench
from amlhp.benchmarks.exceptions import BenchmarksError
from amlhp.benchmarks.machine import machine_facts
from amlhp.benchmarks.pipeline_run import StatusFn, bench_settings, new_run_id
from amlhp.benchmarks.pipeline_run import quiet as _quiet
from amlhp.data import BENCH_CAPTURE
from amlhp.settings import Settings


def tap_to_kafka(settings: Settings, capture: Path, packets: int) -> dict[str, Any]:
    """Full-speed tap on a fresh raw topic: packets/s and MB/s until all are acknowledged."""
    from amlhp.streams.tap import Tap, load_packets, rate_packets, run_tap

    source = load_packets([capture])
    stop = threading.Event()
    tap = Tap(settings, "bench-tap")
    cpu0 = time.process_time()
    started = time.perf_counter()
    # An unreachable rate: the pacer never sleeps, so this is the tap's full speed.
    stats = run_tap(tap, rate_packets(source, rate=1e12, count=packets, stop=stop), stop=stop)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    if stats.failed_packets or stats.delivered_packets != stats.packets:
        raise BenchmarksError(f"tap benchmark lost packets: {stats.as_dict()}")
    return {
        "packets": stats.packets,
        "messages": stats.messages,
        "seconds": round(elapsed, 3),
        "packets_per_second": round(stats.packets / elapsed, 1),
        "mb_per_second": round(stats.bytes_sent / elapsed / 1e6, 2),
        "captured_mb_per_second": round(stats.bytes_captured / elapsed / 1e6, 2),
        "tap_cpu_cores": round(cpu / elapsed, 3),
    }


def verdict_messages(capture: Path, rows: int, per_message: int = 1000) -> list[bytes]:
    """Real verdict batches of ``capture`` (scored once), re-numbered up to ``rows`` rows."""
    import pyarrow.compute as pc

    from amlhp.encoders.capture import encode_captures
    from amlhp.encoders.layout import EncoderConfig
    from amlhp.model.scorer import default_model_path, load_scorer
    from amlhp.streams.processing import score_batches
    from amlhp.wire import to_ipc

    scorer = load_scorer(default_model_path())
    table = encode_captures([capture], EncoderConfig(payload_bytes=scorer.payload_bytes))
    table = table.filter(pc.equal(table.column("status"), "ok"))
    if "gateway" not in table.column_names or table.num_rows == 0:
        raise BenchmarksError(f"no encodable packet in {capture}")
    keep = [n for n in table.column_names if n != "source_file"]
    base = score_batches(table.select(keep).to_batches(), scorer, 1024)
    out: list[bytes] = []
    seq_idx = base.schema.get_field_index("seq")
    done = 0
    while done < rows:
        offset = done % base.num_rows
        part = base.slice(offset, min(per_message, rows - done, base.num_rows - offset))
        seqs = pa.array(range(done, done + part.num_rows), pa.uint64())
        part = part.set_column(seq_idx, "seq", seqs.cast(part.schema.field("seq").type))
        out.append(to_ipc(part))
        done += part.num_rows
    return out


def sink_rate(settings: Settings, capture: Path, rows: int, work_dir: Path) -> dict[str, Any]:
    """Rows/s of the Parquet sink on pre-produced verdict messages."""
    import shutil

    from confluent_kafka import Producer

    from amlhp.pipeline.kafka_io import producer_config
    from amlhp.streams.sink import ParquetSink, SinkStats

    messages = verdict_messages(capture, rows)
    producer = Producer(producer_config(settings, client_id="amlhp-bench-sink-feed"))
    for i, value in enumerate(messages):
        while True:
            try:
                producer.produce(settings.topic_verdicts, key=f"gw-{i % 4}".encode(), value=value)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(60):
        raise BenchmarksError("verdict messages for the sink benchmark were not delivered")
    out = work_dir / f"sink-{new_run_id()}"
    stop = threading.Event()
    first: list[float] = []

    def progress(stats: SinkStats) -> None:
        if stats.messages and not first:
            first.append(time.perf_counter())
        if stats.messages >= len(messages):
            stop.set()

    sink = ParquetSink(settings, out, group_id=f"{settings.consumer_group}-sink", roll_seconds=1)
    stats = sink.run(stop, on_progress=progress)
    ended = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    if stats.rows != rows:
        raise BenchmarksError(f"sink wrote {stats.rows} rows of {rows}")
    elapsed = ended - first[0]
    return {
        "rows": stats.rows,
        "files": stats.files,
        "flushes": stats.flushes,
        "seconds": round(elapsed, 3),
        "rows_per_second": round(stats.rows / elapsed, 1),
    }


def run_stages(
    base: Settings,
    *,
    out_dir: Path,
    work_dir: Path = Path("out/bench"),
    capture: Path = BENCH_CAPTURE,
    data: Path | None = None,
    quick: bool = False,
    score_threads: int = 1,
    on_status: StatusFn = _quiet,
) -> dict[str, Any]:
    """All four stage figures; Fig. 10 is also written as ``fig10.json`` / ``fig10.png``."""
    from amlhp.benchmarks.score_bench import FIG10_SIZES, ScorerChoice, run_fig10
    from amlhp.streams.topics import admin_client, delete_topics, ensure_pipeline_topics

    data = data or (DEFAULT_DATA if DEFAULT_DATA.is_dir() else capture.parent)
    doc: dict[str, Any] = {
        "kind": "stages",
        "what": "amlhp stage by stage: tap -> Kafka, encoder, scorer (Fig. 10), Parquet sink",
        "quick": quick,
        "data": str(data),
        "capture": str(capture),
        "machine": machine_facts(),
    }
    settings = bench_settings(base, new_run_id(), partitions=4)
    ensure_pipeline_topics(settings)
    try:
        on_status("tap -> Kafka at full speed")
        doc["tap"] = tap_to_kafka(settings, capture, 20_000 if quick else 300_000)
        on_status("Parquet sink")
        doc["sink"] = sink_rate(settings, capture, 20_000 if quick else 300_000, work_dir)
    finally:
        delete_topics(admin_client(settings.kafka_config()), settings.topics.all())
    on_status("encoder on one core")
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        if affinity:
            os.sched_setaffinity(0, {min(affinity)})
        enc = run_encode_bench(
            data,
            packets=10_000 if quick else 100_000,
            repeat=1 if quick else 3,
            reference_packets=500 if quick else 5000,
        )
    finally:
        if affinity:
            os.sched_setaffinity(0, affinity)
    doc["encoder"] = {k: v for k, v in enc.as_dict().items() if k != "machine"}
    on_status(f"scorer by batch size (Fig. 10), {score_threads} thread(s)")
    doc["fig10"] = run_fig10(
        choice=ScorerChoice(threads=score_threads),
        data=data,
        sizes=(1, 10, 100, 1000) if quick else FIG10_SIZES,
        repeat=1 if quick else 3,
        min_packets=1000 if quick else 20_000,
        out_json=out_dir / "fig10.json",
        out_png=out_dir / "fig10.png",
    )
    return doc
