"""Layout, durability and crash recovery of the Parquet verdict dataset."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from amlhp.pipeline import dataset
from amlhp.pipeline.dataset import OffsetRange


def _write(root: Path, rng: OffsetRange, gateway: str, rows: int, manifest: bool) -> Path:
    table = pa.table({"seq": pa.array(range(rows), pa.uint64()), "ts_ns": [0] * rows})
    path = dataset.partition_dir(root, "2026-11-23", gateway) / dataset.data_file_name(rng)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    dataset.write_durably(path, sink.getvalue().to_pybytes())
    if manifest:
        dataset.write_manifest(root, rng, [path], rows)
    return path


def test_offset_range_round_trips_through_its_stem() -> None:
    rng = OffsetRange("amlhp.verdicts", 3, 10, 42)
    assert OffsetRange.parse(rng.stem) == rng
    assert OffsetRange.parse("garbage") is None


def test_orphans_of_an_interrupted_flush_are_removed(tmp_path: Path) -> None:
    durable = _write(tmp_path, OffsetRange("t", 0, 0, 9), "gw/1", 5, manifest=True)
    orphan = _write(tmp_path, OffsetRange("t", 0, 10, 19), "gw/1", 3, manifest=False)
    other_partition = _write(tmp_path, OffsetRange("t", 1, 0, 4), "gw/1", 2, manifest=False)
    removed = dataset.remove_orphans(tmp_path, "t", 0)
    assert removed == [orphan]
    assert durable.exists()
    assert other_partition.exists()
    assert dataset.manifests(tmp_path, "t", 0) == [OffsetRange("t", 0, 0, 9)]


def test_dataset_reads_back_with_hive_partitions(tmp_path: Path) -> None:
    _write(tmp_path, OffsetRange("t", 0, 0, 9), "gw/1", 5, manifest=True)
    _write(tmp_path, OffsetRange("t", 1, 0, 9), "7", 2, manifest=True)
    table = dataset.read_verdicts(tmp_path)
    assert table.num_rows == 7
    assert sorted(set(table.column("gateway").to_pylist())) == ["7", "gw/1"]
    assert set(table.column("date").to_pylist()) == {"2026-11-23"}


def test_reading_an_empty_root_gives_an_empty_table(tmp_path: Path) -> None:
    assert dataset.read_verdicts(tmp_path / "missing").num_rows == 0
