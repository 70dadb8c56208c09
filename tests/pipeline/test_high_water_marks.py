"""The sinks' de-duplication of re-delivered rows (``HighWaterMarks``)."""

from __future__ import annotations

import pyarrow as pa

from amlhp.pipeline.parquet_sink import HighWaterMarks


def _batch(rows: list[tuple[str, int]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {"gateway": [g for g, _ in rows], "seq": pa.array([s for _, s in rows], pa.uint64())}
    )


def _rows(batch: pa.RecordBatch) -> list[tuple[str, int]]:
    gateways, seqs = batch.column("gateway").to_pylist(), batch.column("seq").to_pylist()
    return list(zip(gateways, seqs, strict=True))


def test_rows_at_or_below_the_mark_are_dropped_per_key() -> None:
    marks = HighWaterMarks("gateway", "seq")
    kept, dropped = marks.keep_new(_batch([("a", 0), ("a", 1), ("b", 5)]))
    assert (_rows(kept), dropped) == ([("a", 0), ("a", 1), ("b", 5)], 0)
    kept, dropped = marks.keep_new(_batch([("a", 1), ("a", 2), ("b", 4), ("b", 6)]))
    assert (_rows(kept), dropped) == ([("a", 2), ("b", 6)], 2)
    assert marks.marks == {"a": 2, "b": 6}


def test_a_row_twice_in_one_batch_is_kept_once() -> None:
    """A worker that regained a partition mid-micro-batch scored one message twice: the
    chaos suite's rebalance and zombie scenarios wrote such rows twice into one file."""
    marks = HighWaterMarks("gateway", "seq", {"a": 9})
    batch = _batch([("a", 10), ("a", 11), ("a", 10), ("a", 11), ("a", 12), ("a", 8)])
    kept, dropped = marks.keep_new(batch)
    assert _rows(kept) == [("a", 10), ("a", 11), ("a", 12)]
    assert dropped == 3
    assert marks.marks == {"a": 12}


def test_a_batch_of_only_old_rows_keeps_nothing() -> None:
    marks = HighWaterMarks("gateway", "seq", {"a": 100})
    kept, dropped = marks.keep_new(_batch([("a", 1), ("a", 100)]))
    assert (kept.num_rows, dropped, marks.marks) == (0, 2, {"a": 100})
