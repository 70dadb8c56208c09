"""The work behind ``amlhp encode``: captures to a Parquet file, with progress and counts."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from amlhp.encoders import reasons
from amlhp.encoders.capture import EncodeSummary, expand_paths, iter_encoded, output_schema
from amlhp.encoders.exceptions import CaptureError
from amlhp.encoders.layout import DEFAULT_MASK_FIELDS, EncoderConfig
from amlhp.encoders.readers import CaptureInfo
from amlhp.progress import console, progress_bar


def run_encode(
    captures: list[Path],
    out: Path,
    *,
    payload_bytes: int = 64,
    mask_fields: tuple[str, ...] | None = None,
    gateway: str = "offline",
    batch_size: int = 1000,
) -> dict[str, Any]:
    """Encode ``captures`` into ``out`` and return the summary printed by the command.

    The file is written under a temporary name and renamed at the end, so a failed run
    leaves no half-written Parquet file behind. Reader warnings go to stderr, one line per
    kind and file (an unknown link type once, with its packet count).
    """
    config = EncoderConfig(
        payload_bytes=payload_bytes,
        mask_fields=DEFAULT_MASK_FIELDS if mask_fields is None else mask_fields,
    )
    files = expand_paths(captures)
    if not files:
        raise CaptureError("no capture files found in " + ", ".join(map(str, captures)))
    total = sum(os.path.getsize(f) for f in files)
    summary = EncodeSummary(statuses=Counter(), captures=[])
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    done_bytes = 0
    last: dict[str, int] = {}
    try:
        with (
            pq.ParquetWriter(partial, output_schema(config), compression="zstd") as writer,
            progress_bar() as progress,
        ):
            task = progress.add_task("encode", total=total, status="")

            def on_progress(info: CaptureInfo) -> None:
                nonlocal done_bytes
                done_bytes += info.bytes_read - last.get(info.path, 0)
                last[info.path] = info.bytes_read
                progress.update(
                    task,
                    completed=done_bytes,
                    status=f"{summary.packets} packets, {Path(info.path).name}",
                )

            for batch in iter_encoded(
                files,
                config,
                gateway,
                batch_size=batch_size,
                summary=summary,
                on_progress=on_progress,
            ):
                writer.write_batch(batch)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    err = console()
    for info in summary.captures:
        for warning in info.warnings.values():
            err.print(
                f"[yellow]warning[/] {info.path}: {warning.message} ({warning.count}x)",
                highlight=False,
            )
    order = {name: i for i, name in enumerate(reasons.REASON_NAMES)}
    statuses = dict(sorted(summary.statuses.items(), key=lambda kv: order.get(kv[0], 99)))
    return {
        "out": str(out),
        "files": len(files),
        "packets": summary.packets,
        "statuses": statuses,
        "payload_bytes": config.payload_bytes,
        "mask_fields": list(config.mask_fields),
        "warnings": [
            {"file": info.path, "code": w.code, "linktype": w.linktype, "count": w.count}
            for info in summary.captures
            for w in info.warnings.values()
        ],
    }
