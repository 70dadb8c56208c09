"""Capture files to encoded records: the one path shared by ``amlhp encode`` and training.

Training data and served traffic must be encoded identically, so both go through
:func:`iter_encoded` (files) or :func:`amlhp.encoders.fast.encode_batch` (Kafka batches),
which this module calls.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyarrow as pa

from amlhp.encoders.exceptions import CaptureError
from amlhp.encoders.fast import encode_batch
from amlhp.encoders.layout import DEFAULT_CONFIG, EncoderConfig
from amlhp.encoders.readers import DEFAULT_BATCH_SIZE, CaptureInfo, iter_raw_batches
from amlhp.wire import encoded_schema

CAPTURE_SUFFIXES: Final = (".pcap", ".pcapng", ".cap", ".dmp")
SOURCE_COLUMN: Final = "source_file"


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders replaced by their capture files (recursively, sorted).

    A path that does not exist raises :class:`CaptureError`.
    """
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file() and p.suffix.lower() in CAPTURE_SUFFIXES
                )
            )
        elif path.exists():
            out.append(path)
        else:
            raise CaptureError(f"{path}: no such file or folder")
    return out


def with_source(batch: pa.RecordBatch, source: str) -> pa.RecordBatch:
    """Append the ``source_file`` column (offline records only, not the stream schema)."""
    column = pa.array([source] * batch.num_rows, pa.string())
    schema = batch.schema.append(pa.field(SOURCE_COLUMN, pa.string(), nullable=False))
    return pa.RecordBatch.from_arrays([*batch.columns, column], schema=schema)


def output_schema(config: EncoderConfig) -> pa.Schema:
    """Schema of :func:`encode_captures` output: encoded schema + ``source_file``."""
    schema = encoded_schema(config.payload_bytes, config.mask_fields)
    return schema.append(pa.field(SOURCE_COLUMN, pa.string(), nullable=False))


@dataclass
class EncodeSummary:
    """Counts of one encoding run: packets by status, and each file's reader report."""

    statuses: Counter[str]
    captures: list[CaptureInfo]

    @property
    def packets(self) -> int:
        return sum(self.statuses.values())


def iter_encoded(
    paths: Iterable[str | Path],
    config: EncoderConfig = DEFAULT_CONFIG,
    gateway: str = "offline",
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    summary: EncodeSummary | None = None,
    on_progress: Callable[[CaptureInfo], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Encode captures batch by batch, with a ``source_file`` column; ``seq`` runs on
    across files so that (gateway, seq) identifies every packet of the run.

    ``summary`` (if given) is filled as batches go by; ``on_progress`` is called after each
    batch with the current file's :class:`CaptureInfo` (``bytes_read`` / ``size``).
    """
    seq = 0
    for path in expand_paths(paths):
        info = CaptureInfo(str(path))
        if summary is not None:
            summary.captures.append(info)
        for raw in iter_raw_batches(
            path, gateway=gateway, batch_size=batch_size, start_seq=seq, info=info
        ):
            seq += raw.num_rows
            encoded = encode_batch(raw, config)
            if summary is not None:
                counts = encoded.column("status").value_counts().to_pylist()
                summary.statuses.update({c["values"]: c["counts"] for c in counts})
            if on_progress is not None:
                on_progress(info)
            yield with_source(encoded, str(path))


def encode_captures(
    paths: Iterable[str | Path],
    config: EncoderConfig = DEFAULT_CONFIG,
    gateway: str = "offline",
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    summary: EncodeSummary | None = None,
) -> pa.Table:
    """All packets of the captures (files or folders) as one encoded table, in order."""
    batches = list(iter_encoded(paths, config, gateway, batch_size=batch_size, summary=summary))
    return pa.Table.from_batches(batches, schema=output_schema(config))
