"""The committed demo capture: every class, labels that hold, the manifest it claims."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from amlhp.lab.labels import label_by_rules, read_rules
from amlhp.lab.pcapscan import scan
from amlhp.lab.scenarios import SCENARIOS

Demo = tuple[Path, dict[str, Any]]
DEMO = Path(__file__).resolve().parents[2] / "data" / "demo" / "lab-demo.pcap"


@pytest.fixture(scope="module")
def demo() -> Demo:
    if not DEMO.exists():
        pytest.fail(f"the committed lab demo capture is missing: {DEMO}")
    manifest = json.loads(DEMO.with_suffix(".manifest.json").read_text())
    return DEMO, manifest


def test_the_demo_capture_is_the_one_its_manifest_describes(demo: Demo) -> None:
    path, manifest = demo
    assert hashlib.sha256(path.read_bytes()).hexdigest() == manifest["sha256"]
    assert path.stat().st_size < 8 * 2**20  # a few MB
    assert set(manifest["classes"]) == {s.label for s in SCENARIOS}
    assert "amlhp lab run" in manifest["commands"][0]


def test_its_labels_file_gives_every_packet_the_manifests_class(demo: Demo) -> None:
    path, manifest = demo
    classes, rules = read_rules(path.with_suffix(".labels.yaml"))
    counts = Counter(label_by_rules(rules, path.name, s, d) for _, s, d, _ in scan(path))
    assert None not in counts
    assert dict(sorted(counts.items())) == manifest["classes"]
    assert classes[0] == "benign"
    assert min(counts.values()) >= 1000


def test_the_models_loader_reads_the_same_labels(demo: Demo) -> None:
    from amlhp.encoders.capture import encode_captures
    from amlhp.model.labels import assign_labels, load_labels

    path, manifest = demo
    spec = load_labels(path.with_suffix(".labels.yaml"))
    table = encode_captures([path])
    ids = assign_labels(table, spec.files[path.resolve()])
    assert (ids >= 0).all()
    counts = Counter(spec.classes[i] for i in ids.tolist())
    assert dict(sorted(counts.items())) == manifest["classes"]
    assert Counter(table.column("status").to_pylist()) == Counter({"ok": table.num_rows})
