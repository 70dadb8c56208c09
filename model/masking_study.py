"""Which header fields to mask so that a model generalises to networks it was not trained on.

A packet's header carries facts about the network it crossed as well as about what the
sender did: the TTL says how many hops away the sender is, the IP identification and
checksums follow the host and the addresses. A model trained on one network can learn
those instead of the behaviour, and then fail elsewhere. The study trains the same network
with the same data and seed under several masking options and tests each on capture
files that training never saw (``--split file``: whole files to one side), so a gain can
only come from features that carry over. The default model uses the winner.

Metrics are over the classes the test side holds (classes with a single capture file are
train-only and cannot be tested this way); predicting a train-only class is an error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from amlhp.encoders.layout import DEFAULT_MASK_FIELDS, EncoderConfig, expand_mask_fields
from amlhp.model.dataset import load_labelled
from amlhp.model.labels import load_labels
from amlhp.model.metrics import Report
from amlhp.model.train import ProgressFn, TrainConfig
from amlhp.model.workflow import train_and_evaluate

#: variant name -> mask fields or groups (see :mod:`amlhp.encoders.layout`); each adds to
#: the previous one, from the paper's choice (addresses only) to everything path-dependent.
MASK_VARIANTS: dict[str, tuple[str, ...]] = {
    "addresses": DEFAULT_MASK_FIELDS,
    "addresses+ttl": (*DEFAULT_MASK_FIELDS, "ip.ttl"),
    "addresses+path": (*DEFAULT_MASK_FIELDS, "path"),
    "addresses+path+checksums": (*DEFAULT_MASK_FIELDS, "path", "checksums"),
    "addresses+path+checksums+seq": (
        *DEFAULT_MASK_FIELDS,
        "path",
        "checksums",
        "tcp.seq",
        "tcp.ack",
    ),
}

EventFn = Callable[[str], None]


def unseen_file_metrics(report: Report) -> dict[str, Any]:
    """Accuracy and macro F1 over the classes with test support (train-only ones excluded)."""
    tested = {c: v for c, v in report.per_class.items() if v["support"] > 0}
    f1 = float(np.mean([v["f1"] for v in tested.values()])) if tested else 0.0
    return {
        "accuracy": round(report.accuracy, 4),
        "macro_f1_tested": round(f1, 4),
        "tested_classes": sorted(tested),
        "per_class_f1": {c: round(v["f1"], 4) for c, v in sorted(tested.items())},
    }


def run_masking_study(
    labels_path: Path,
    out_dir: Path,
    *,
    variants: dict[str, tuple[str, ...]] | None = None,
    split_kind: str = "file",
    max_per_class: int = 4000,
    config: TrainConfig | None = None,
    on_event: EventFn | None = None,
    on_progress: Callable[[str], ProgressFn] | None = None,
) -> dict[str, Any]:
    """Train and test IoT-AMLHP once per masking variant; write ``masking.json`` and ``.md``."""
    config = config or TrainConfig()
    variants = variants or MASK_VARIANTS
    spec = load_labels(labels_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "labels": str(labels_path),
        "split": split_kind,
        "max_per_class": max_per_class,
        "hyperparameters": config.as_dict(),
        "rows": _earlier_rows(out_dir / "masking.json", labels_path, split_kind, max_per_class),
    }
    started = time.perf_counter()
    for name, fields in variants.items():
        mask = expand_mask_fields(fields)
        data = load_labelled(
            spec, EncoderConfig(mask_fields=mask), max_per_class=max_per_class, seed=config.seed
        )
        if on_event is not None:
            on_event(f"{name}: {len(data)} packets, training on the {split_kind} split")
        outcome = train_and_evaluate(
            "amlhp",
            data,
            spec,
            split_kind=split_kind,
            config=config,
            max_per_class=max_per_class,
            on_progress=on_progress(name) if on_progress else None,
        )
        train_files = set(np.unique(data.file_ids[outcome.split.train]).tolist())
        test_files = set(np.unique(data.file_ids[outcome.split.test]).tolist())
        row = {
            "variant": name,
            "mask_fields": list(mask),
            **unseen_file_metrics(outcome.report),
            "test_packets": int(outcome.split.test.size),
            "train_files": len(train_files),
            "test_files": len(test_files),
            "shared_files": len(train_files & test_files),  # 0: no file on both sides
            "train_only_classes": list(outcome.split.train_only),
            "command": (
                f"amlhp train -l {labels_path} --split {split_kind} --max-per-class "
                f"{max_per_class} --epochs {config.epochs} --seed {config.seed} "
                + " ".join(f"--mask {f}" for f in fields)
                + " -o out/masking/"
                + name
            ),
        }
        doc["rows"] = [r for r in doc["rows"] if r["variant"] != name] + [row]
        doc["rows"].sort(key=lambda r: list(MASK_VARIANTS).index(r["variant"]))
        doc["seconds"] = round(time.perf_counter() - started, 1)
        (out_dir / "masking.json").write_text(json.dumps(doc, indent=2) + "\n")
        (out_dir / "masking.md").write_text(masking_markdown(doc))
        if on_event is not None:
            on_event(f"{name}: macro F1 (tested classes) {row['macro_f1_tested']}")
    return doc


def _earlier_rows(
    path: Path, labels_path: Path, split_kind: str, max_per_class: int
) -> list[dict[str, Any]]:
    """Rows of an earlier run of the same study (same labels, split and cap), to extend it.

    A study can then be run one variant at a time (``--variant``) into one folder; a run
    with other settings starts a fresh table.
    """
    if not path.exists():
        return []
    earlier = json.loads(path.read_text())
    same = (earlier.get("labels"), earlier.get("split"), earlier.get("max_per_class")) == (
        str(labels_path),
        split_kind,
        max_per_class,
    )
    return [r for r in earlier.get("rows", []) if r.get("variant") in MASK_VARIANTS] if same else []


def best_variant(doc: dict[str, Any]) -> str:
    """The variant with the highest macro F1 on unseen files (ties: fewer masked fields)."""
    rows = sorted(doc["rows"], key=lambda r: (-r["macro_f1_tested"], len(r["mask_fields"])))
    return str(rows[0]["variant"])


def masking_markdown(doc: dict[str, Any]) -> str:
    """The README table: one line per masking variant, best first marked."""
    best = best_variant(doc) if doc["rows"] else ""
    classes = doc["rows"][0]["tested_classes"] if doc["rows"] else []
    head = " | ".join(classes)
    lines = [
        f"| masked fields | accuracy | macro F1 | {head} |",
        "|---|---:|---:|" + "---:|" * len(classes),
    ]
    for row in doc["rows"]:
        mark = " **(chosen)**" if row["variant"] == best else ""
        per = " | ".join(f"{row['per_class_f1'].get(c, 0.0):.3f}" for c in classes)
        lines.append(
            f"| {row['variant']}{mark} | {row['accuracy']:.4f} | "
            f"{row['macro_f1_tested']:.4f} | {per} |"
        )
    return "\n".join(lines) + "\n"
