"""Merge a lab run's per-scenario captures into one pcap, e.g. the committed demo capture.

Records are merged in timestamp order (each capture is already in time order) and copied
byte for byte; the labels file is rewritten for the merged file's name and a manifest
beside it records the class counts, the source run and the command.
"""

from __future__ import annotations

import heapq
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from amlhp.digest import file_sha256
from amlhp.lab.exceptions import LabError
from amlhp.lab.labels import read_rules
from amlhp.lab.pcapscan import scan
from amlhp.lab.runner import build_labeler
from amlhp.lab.topology import Topology

_HEADER = 24


def _records(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """``(ts_key, order, raw record)`` of a classic pcap (little-endian, as tcpdump writes)."""
    data = path.read_bytes()
    pos = _HEADER
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    rec = struct.Struct(endian + "IIII")
    order = 0
    while pos + 16 <= len(data):
        sec, frac, incl, _ = rec.unpack_from(data, pos)
        end = pos + 16 + incl
        if end > len(data):
            break
        yield (sec * 1_000_000_000 + frac, order, data[pos:end])
        order += 1
        pos = end


def merge_files(files: list[Path], out: Path) -> int:
    """Write ``files`` merged by time into ``out``; all must share one pcap header."""
    if not files:
        raise LabError("nothing to merge")
    headers = {f.read_bytes()[:_HEADER] for f in files}
    if len(headers) != 1:
        raise LabError("captures differ in format (magic, link type or snap length)")
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with out.open("wb") as fh:
        fh.write(headers.pop())
        streams = [
            ((key, index, order, raw) for key, order, raw in _records(f))
            for index, f in enumerate(files)
        ]
        for _, _, _, raw in heapq.merge(*streams):
            fh.write(raw)
            count += 1
    return count


def merge_run(run_dir: Path, out: Path, *, command: str = "") -> dict[str, Any]:
    """Merge the captures listed in ``run_dir/manifest.json`` into ``out`` (+ labels, manifest)."""
    try:
        source = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read {run_dir / 'manifest.json'}: {exc}") from exc
    files = [run_dir / entry["file"] for entry in source["files"]]
    packets = merge_files(files, out)
    labeler = build_labeler(Topology())
    classes, _ = read_rules(run_dir / source["labels"])
    if classes != labeler.classes:
        raise LabError(f"{run_dir} was labelled with other classes: {classes}")
    labels_path = out.with_suffix(".labels.yaml")
    labeler.write_yaml(
        labels_path,
        comment=(
            "Labels of the amlhp attack lab's merged capture beside this file.\n"
            f"Made by: {source.get('command', '')}\nthen: {command}"
        ),
        file_glob=out.name,
    )
    counts = labeler.count(scan(out))
    manifest = {
        "format": "amlhp-lab-merged/1",
        "file": out.name,
        "labels": labels_path.name,
        "sha256": file_sha256(out),
        "bytes": out.stat().st_size,
        "total_packets": packets,
        "classes": dict(sorted(counts.items())),
        "commands": [source.get("command", ""), command],
        "source": {
            "seed": source.get("seed"),
            "profile": source.get("profile"),
            "created": source.get("created"),
            "packages": source.get("packages", {}),
            "files": [
                {k: e[k] for k in ("file", "scenario", "label", "tool", "packets", "classes")}
                for e in source["files"]
            ],
        },
    }
    out.with_suffix(".manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
