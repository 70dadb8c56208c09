"""Layout, durability and crash recovery of the Parquet verdict dataset."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from amlhp.pipeline import dataset
from amlhp.pipeline.dataset import OffsetRange


def _write(root: Path, rng: OffsetRange, gateway: str, rows: int, manifest: bool) -> Path:
    table = pa.table(
        {
            "gateway": [gateway] * rows,
            "seq": pa.array(range(rows), pa.uint64()),
            "ts_ns": [0] * rows,
        }
    )
    path = dataset.date_dir(root, "2026-11-23") / dataset.data_file_name(rng)
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


def test_a_fleet_flush_writes_one_file_per_date_sorted_by_gateway(tmp_path: Path) -> None:
    """Many gateways in one flush: one file per date whatever their number, rows grouped
    by gateway with each gateway's rows in arrival order (a reader filtering on gateway
    skips row groups by their statistics), and what a crash left before the manifest is
    removed as orphans."""
    from amlhp.pipeline.parquet_sink import write_date_partitions

    n = 60
    day = 1_796_000_000_000_000_000
    table = pa.table(
        {
            "gateway": [f"gw/{i % 20:02d}" for i in range(n)],
            "seq": pa.array(range(n), pa.uint64()),
            "ts_ns": [day + (86_400 * 10**9 if i == n - 1 else 0) for i in range(n)],
        }
    )
    rng = OffsetRange("amlhp.verdicts", 1, 0, 9)
    files = write_date_partitions(tmp_path, table, rng, "zstd")
    assert [f.parent.name for f in files] == ["date=2026-11-30", "date=2026-12-01"]
    first = pq.read_table(files[0])
    gateways = first.column("gateway").to_pylist()
    assert gateways == sorted(gateways)
    assert len(set(gateways)) == 20
    pairs = list(zip(gateways, first.column("seq").to_pylist(), strict=True))
    for gw in set(gateways):
        seqs = [s for g, s in pairs if g == gw]
        assert seqs == sorted(seqs)
        assert {s % 20 for s in seqs} == {int(gw[3:])}
    assert pq.read_table(files[1]).column("seq").to_pylist() == [n - 1]
    dataset.write_manifest(tmp_path, rng, files, n)
    back = dataset.read_verdicts(tmp_path)
    assert back.num_rows == n
    assert set(back.column("date").to_pylist()) == {"2026-11-30", "2026-12-01"}
    (tmp_path / dataset.MANIFEST_DIR / f"{rng.stem}.json").unlink()  # as if a crash came first
    removed = dataset.remove_orphans(tmp_path, "amlhp.verdicts", 1)
    assert sorted(removed) == sorted(files)
