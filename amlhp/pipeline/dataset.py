"""Layout of the Parquet verdict dataset, shared by the sink and its readers.

``<root>/date=YYYY-MM-DD/part-<topic>-<partition>-<first>-<last>.parquet``

* ``date`` is the UTC capture date of the packet; it lives in the path only (hive style),
  so pyarrow.dataset and DuckDB
  (``read_parquet('<root>/date=*/*.parquet', hive_partitioning = true)``) add it back.
* ``gateway`` is a column, and a file's rows are sorted by it (each gateway's rows in
  arrival order), so the row groups' statistics let a reader asking for some gateways skip
  the others. A folder per gateway (the layout before issue 29) meant a file per gateway
  per flush: 2,500 files and 5 s per flush at 10,000 gateways, with the sink's whole core
  spent writing them; now a flush writes one file per date.
* A file is named by the source topic, partition and the first and last Kafka offsets
  of the messages it holds. A flush writes all its files, then a manifest
  ``<root>/_manifests/<topic>-<partition>-<first>-<last>.json``; only files listed in a
  manifest are durable. Names starting with ``_`` or ``.`` are ignored by readers.
* A writer that also keeps dead letters (``amlhp replay``) writes them to
  ``<root>/_deadletters/part-<topic>-<partition>-<first>-<last>.parquet``, listed in the
  same manifest as the verdict files of that flush.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

MANIFEST_DIR = "_manifests"
DEADLETTER_DIR = "_deadletters"
PARTITIONING = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")
#: the data files of a dataset root (not the manifests' or dead letters' folders)
DATA_GLOB = "date=*/*.parquet"
_RANGE = re.compile(r"^(?P<topic>.+)-(?P<partition>\d+)-(?P<first>\d+)-(?P<last>\d+)$")


@dataclass(frozen=True, order=True)
class OffsetRange:
    """The Kafka messages one flush of one partition covers (inclusive)."""

    topic: str
    partition: int
    first: int
    last: int

    @property
    def stem(self) -> str:
        return f"{self.topic}-{self.partition}-{self.first}-{self.last}"

    @classmethod
    def parse(cls, stem: str) -> OffsetRange | None:
        match = _RANGE.match(stem)
        if match is None:
            return None
        return cls(match["topic"], int(match["partition"]), int(match["first"]), int(match["last"]))


def date_dir(root: Path, date: str) -> Path:
    return root / f"date={date}"


def data_file_name(rng: OffsetRange) -> str:
    return f"part-{rng.stem}.parquet"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, payload: bytes) -> None:
    """Write to a hidden temporary name, fsync, rename, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_manifest(
    root: Path, rng: OffsetRange, files: list[Path], rows: int, **extra: Any
) -> None:
    """Make one flush durable; ``extra`` are per-flush tallies (dead letters) or state
    (de-duplication marks) saved with it."""
    body = {
        "topic": rng.topic,
        "partition": rng.partition,
        "first_offset": rng.first,
        "last_offset": rng.last,
        "rows": rows,
        "files": sorted(str(f.relative_to(root)) for f in files),
        **extra,
    }
    write_durably(root / MANIFEST_DIR / f"{rng.stem}.json", json.dumps(body).encode())


def manifests(root: Path, topic: str, partition: int) -> list[OffsetRange]:
    """Durable ranges of one topic-partition, in offset order."""
    out = []
    mdir = root / MANIFEST_DIR
    if not mdir.is_dir():
        return []
    for path in mdir.glob("*.json"):
        rng = OffsetRange.parse(path.stem)
        if rng is not None and rng.topic == topic and rng.partition == partition:
            out.append(rng)
    return sorted(out)


def remove_orphans(root: Path, topic: str, partition: int) -> list[Path]:
    """Delete data files of a partition that no manifest lists (an interrupted flush)."""
    durable = {r.stem for r in manifests(root, topic, partition)}
    removed = []
    candidates = [*root.glob("date=*/*"), *root.glob(f"{DEADLETTER_DIR}/*")]
    for path in candidates:
        name = path.name
        if name.startswith(".") and name.endswith(".tmp"):
            stem = name[len(".part-") : -len(".parquet.tmp")]
        elif name.startswith("part-") and name.endswith(".parquet"):
            stem = name[len("part-") : -len(".parquet")]
        else:
            continue
        rng = OffsetRange.parse(stem)
        if rng is None or rng.topic != topic or rng.partition != partition:
            continue
        if rng.stem not in durable or name.startswith("."):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def read_manifest(root: Path, rng: OffsetRange) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((root / MANIFEST_DIR / f"{rng.stem}.json").read_text())
    return body


def manifest_bodies(root: Path) -> list[dict[str, Any]]:
    """Every durable flush's manifest under ``root`` (any topic and partition)."""
    mdir = root / MANIFEST_DIR
    if not mdir.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(mdir.glob("*.json"))]


def open_dataset(root: Path) -> ds.Dataset:
    """The verdict dataset with ``date`` restored from the paths."""
    return ds.dataset(str(root), format="parquet", partitioning=PARTITIONING)


def read_verdicts(root: Path) -> pa.Table:
    """All durable verdicts under ``root`` (empty table when nothing is there yet)."""
    if not root.exists() or not any(root.glob(DATA_GLOB)):
        return pa.table({})
    return open_dataset(root).to_table()
