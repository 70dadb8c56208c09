"""``amlhp score``: captures to a Parquet file of verdicts, without Kafka.

The captures go through :func:`amlhp.encoders.capture.iter_encoded` with the model's own
encoder settings (P, masked fields) and each batch through :meth:`Scorer.score_batch`, the
same code the stream runs. One output row per input packet: the encoded record's identity,
5-tuple, ``status`` and ``source_file`` columns (not the byte vectors), then ``label`` (the
predicted class name, empty when the packet was not scored), ``class_id`` and ``score`` (its
probability), ``malicious_score``, ``decision`` and ``ood_score`` (as in the stream's
verdicts; all null when not scored).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from amlhp.encoders.capture import iter_encoded
from amlhp.encoders.facts import packet_facts
from amlhp.encoders.reasons import ARP
from amlhp.model.decision import DECISIONS, NOT_SCORED
from amlhp.model.scorer import Scorer
from amlhp.wire.packets import FACT_FIELDS

_DROPPED = ("header", "payload")


def verdict_columns(batch: pa.RecordBatch, scorer: Scorer) -> pa.RecordBatch:
    """The scored batch: encoded columns minus byte vectors, plus label/class_id/score."""
    scores = scorer.score_batch(batch)
    names = np.asarray([*scorer.classes, "", ARP], dtype=object)
    arp = pc.equal(batch.column("status"), ARP).to_numpy(zero_copy_only=False)
    unscored = np.where(arp, len(scorer.classes) + 1, len(scorer.classes))
    label = names[np.where(scores.ok, scores.class_ids, unscored)]
    fact_names = {f.name for f in FACT_FIELDS}  # the ARP columns come back with the facts
    keep = [i for i, n in enumerate(batch.schema.names) if n not in {*_DROPPED, *fact_names}]
    fields = [batch.schema.field(i) for i in keep]
    arrays = [batch.column(i) for i in keep]
    fields += [
        pa.field("label", pa.string(), nullable=False),
        pa.field("class_id", pa.int16()),
        pa.field("score", pa.float32()),
        pa.field("malicious_score", pa.float32()),
        pa.field("decision", pa.string()),
        pa.field("ood_score", pa.float32()),
        pa.field("model_version", pa.string(), nullable=False),
        *FACT_FIELDS,
    ]
    decisions = np.asarray([*DECISIONS, "", NOT_SCORED], dtype=object)[
        np.where(scores.ok, scores.decision, np.where(arp, len(DECISIONS) + 1, len(DECISIONS)))
    ]
    arrays += [
        pa.array(label.tolist(), pa.string()),
        pa.array(scores.class_ids, pa.int16(), mask=~scores.ok),
        pa.array(scores.scores, pa.float32(), mask=~scores.ok),
        pa.array(scores.malicious_score, pa.float32(), mask=~scores.ok),
        pa.array(decisions.tolist(), pa.string(), mask=~scores.ok & ~arp),
        pa.array(scores.ood_score, pa.float32(), mask=~scores.ok),
        pa.array(
            [scorer.version] * batch.num_rows if scores.versions is None else scores.versions,
            pa.string(),
        ),
    ]
    facts = packet_facts(batch)
    arrays += [facts[f.name] for f in FACT_FIELDS]
    meta = {b"model_version": scorer.version.encode(), b"schema": b"amlhp.offline_verdict"}
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields, metadata=meta))


def score_captures(
    captures: list[Path],
    out: Path,
    scorer: Scorer,
    *,
    batch_size: int = 1000,
    gateway: str = "offline",
) -> dict[str, Any]:
    """Score every packet of the captures into ``out`` (Parquet); returns a summary."""
    started = time.perf_counter()
    from amlhp.progress import progress_bar

    labels: Counter[str] = Counter()
    decisions: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    packets = scored = 0
    from amlhp.stdio import is_stdio, output_sink

    writer: pq.ParquetWriter | None = None
    if not is_stdio(out):
        out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with progress_bar(transient=True) as progress:
            task = progress.add_task("scoring", total=None)
            batches = iter_encoded(captures, scorer.encoder_config, gateway, batch_size=batch_size)
            for batch in batches:
                verdicts = verdict_columns(batch, scorer)
                if writer is None:
                    writer = pq.ParquetWriter(output_sink(out), verdicts.schema)
                writer.write_batch(verdicts)
                column = verdicts.column("label").to_pylist()
                model = verdicts.column("class_id").is_valid().to_pylist()  # not ARP rows
                labels.update(label for label, ok in zip(column, model, strict=True) if ok)
                decisions.update(d for d in verdicts.column("decision").to_pylist() if d)
                statuses.update(
                    s
                    for s, ok in zip(verdicts.column("status").to_pylist(), model, strict=True)
                    if not ok
                )
                packets += verdicts.num_rows
                scored += sum(model)
                progress.update(task, advance=verdicts.num_rows)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # no packet at all: still write a valid, empty file
        empty = pa.schema(
            [
                pa.field("status", pa.string()),
                pa.field("label", pa.string()),
                pa.field("score", pa.float32()),
            ]
        )
        pq.write_table(empty.empty_table(), output_sink(out))
    return {
        "out": str(out),
        "packets": packets,
        "scored": scored,
        #: why the other packets were not scored (reason code -> packets)
        "not_scored": dict(sorted(statuses.items(), key=lambda kv: -kv[1])),
        "labels": dict(sorted(labels.items(), key=lambda kv: -kv[1])),
        "decisions": {d: decisions.get(d, 0) for d in DECISIONS},
        "model": scorer.describe(),
        "seconds": round(time.perf_counter() - started, 3),
    }
