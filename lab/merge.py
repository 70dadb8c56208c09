"""Merge a lab run's per-scenario captures into one pcap, e.g. the committed demo capture.

Records are merged in timestamp order (each capture is already in time order) and copied
byte for byte; the labels file is rewritten for the merged file's name and a manifest
beside it records the class counts, the source run and the command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from amlhp.digest import file_sha256
from amlhp.lab.capture import merge_files
from amlhp.lab.exceptions import LabError
from amlhp.lab.labels import read_rules
from amlhp.lab.pcapscan import scan
from amlhp.lab.runner import build_labeler
from amlhp.lab.topology import Topology


def merge_run(
    run_dir: Path, out: Path, *, command: str = "", snaplen: int | None = None
) -> dict[str, Any]:
    """Merge the captures listed in ``run_dir/manifest.json`` into ``out`` (+ labels, manifest)."""
    try:
        source = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read {run_dir / 'manifest.json'}: {exc}") from exc
    files = [run_dir / entry["file"] for entry in source["files"]]
    packets = merge_files(files, out, snaplen=snaplen)
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
        "snaplen": snaplen,
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
