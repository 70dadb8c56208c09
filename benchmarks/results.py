"""Result files: JSON written atomically, so a half-written file never replaces a good one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(doc: dict[str, Any], path: Path) -> Path:
    """Write ``doc`` as indented JSON to ``path`` (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_json(path: Path) -> dict[str, Any]:
    from amlhp.benchmarks.exceptions import BenchmarksError

    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BenchmarksError(f"cannot read benchmark results {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise BenchmarksError(f"{path} is not a benchmark result document")
    return doc
