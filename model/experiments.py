"""The results table: IoT-AMLHP, its ablations and two baselines, on two splits.

Like the paper's Tables 4-6 on the public captures: every model trained with the same
hyperparameters, seed and per-class cap, on a random 8:1:1 split and a by-flow 8:1:1 split.
The data is encoded once with P = 1500 (the baselines read up to 1,500 packet bytes; the
IoT-AMLHP family reads the first 64 payload columns, which are exactly what P = 64 gives).
Each row records the ``amlhp train`` command that reproduces it on its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from amlhp.encoders.layout import EncoderConfig
from amlhp.markdown import markdown_table
from amlhp.model.dataset import load_labelled
from amlhp.model.flops import FLOPS_CONVENTION, model_cost
from amlhp.model.labels import load_labels
from amlhp.model.registry import create_model
from amlhp.model.train import ProgressFn, TrainConfig
from amlhp.model.workflow import (
    BASELINE_PAYLOAD_BYTES,
    save_outcome,
    train_and_evaluate,
    write_report,
)

RESULT_MODELS: tuple[str, ...] = (
    "amlhp",
    "amlhp-no-header",
    "amlhp-no-payload",
    "amlhp-fc-fusion",
    "amlhp-value",
    "deeppacket-s",
    "sam",
)
RESULT_SPLITS: tuple[str, ...] = ("random", "flow")
DEFAULT_MAX_PER_CLASS = 5000

EventFn = Callable[[str], None]


def train_command(labels: str, name: str, split_kind: str, cap: int, config: TrainConfig) -> str:
    threads = f"--threads {config.threads} " if config.threads else ""
    return (
        f"amlhp train --labels {labels} --model {name} --split {split_kind} "
        f"--max-per-class {cap} --epochs {config.epochs} --seed {config.seed} {threads}"
        f"--out out/models/{name}-{split_kind}"
    )


def run_results(
    labels_path: Path,
    out_dir: Path,
    *,
    models: tuple[str, ...] = RESULT_MODELS,
    splits: tuple[str, ...] = RESULT_SPLITS,
    max_per_class: int = DEFAULT_MAX_PER_CLASS,
    config: TrainConfig | None = None,
    artifacts_dir: Path | None = None,
    on_event: EventFn | None = None,
    on_progress: Callable[[str], ProgressFn] | None = None,
) -> dict[str, Any]:
    """Train and test every (model, split).

    Each split's rows go to ``results-<split>.json`` as soon as a row is done, and
    ``results.md`` is rebuilt from every ``results-*.json`` in ``out_dir``: two processes
    can run the two splits side by side (one torch thread each) into the same folder.
    """
    config = config or TrainConfig()

    def event(msg: str) -> None:
        if on_event is not None:
            on_event(msg)

    labels_arg = str(labels_path)
    spec = load_labels(labels_path)
    started = time.perf_counter()
    data = load_labelled(
        spec,
        EncoderConfig(payload_bytes=BASELINE_PAYLOAD_BYTES),
        max_per_class=max_per_class,
        seed=config.seed,
        on_file=None,
    )
    event(
        f"loaded {len(data)} packets of {len(data.classes)} classes "
        f"in {time.perf_counter() - started:.0f}s"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    base: dict[str, Any] = {
        "labels": labels_arg,
        "classes": data.classes,
        "max_per_class": max_per_class,
        "hyperparameters": config.as_dict(),
        "flops_convention": FLOPS_CONVENTION,
        "packets": {name: int((data.labels == i).sum()) for i, name in enumerate(data.classes)},
        "reference_sizes": {
            "deeppacket": model_cost(
                create_model("deeppacket", num_classes=len(data.classes))
            ).as_dict()
        },
    }
    docs: dict[str, dict[str, Any]] = {}
    for split_kind in splits:
        doc = docs[split_kind] = {**base, "split": split_kind, "rows": []}
        results_path = out_dir / f"results-{split_kind}.json"
        for name in models:
            event(f"training {name} on the {split_kind} split")
            progress = on_progress(f"{name}/{split_kind}") if on_progress else None
            outcome = train_and_evaluate(
                name,
                data,
                spec,
                split_kind=split_kind,
                config=config,
                max_per_class=max_per_class,
                on_progress=progress,
            )
            cost = model_cost(outcome.model)
            command = train_command(labels_arg, name, split_kind, max_per_class, config)
            row = {
                "model": name,
                "split": split_kind,
                **outcome.report.summary(),
                "params": cost.params,
                "flops": cost.flops,
                "size_bytes": cost.size_bytes,
                "lr": outcome.result_config["lr"],
                "best_epoch": outcome.result.best_epoch,
                "train_seconds": round(outcome.result.seconds, 1),
                "test_packets": int(outcome.split.test.size),
                "train_only_classes": list(outcome.split.train_only),
                "per_class_f1": {c: round(v["f1"], 4) for c, v in outcome.report.per_class.items()},
                "command": command,
            }
            write_report(outcome.report, out_dir / split_kind / name, f"{name}, {split_kind} split")
            if artifacts_dir is not None:
                save_outcome(outcome, data, artifacts_dir / f"{name}-{split_kind}", command)
            doc["rows"].append(row)
            doc["seconds"] = round(time.perf_counter() - started, 1)
            results_path.write_text(json.dumps(doc, indent=2) + "\n")
            (out_dir / "results.md").write_text(results_markdown(collect_results(out_dir)))
            event(f"{name}/{split_kind}: accuracy {row['accuracy']}, macro F1 {row['macro_f1']}")
    return {**base, "rows": [row for d in docs.values() for row in d["rows"]]}


def collect_results(out_dir: Path) -> dict[str, Any]:
    """All rows of every ``results-<split>.json`` in ``out_dir`` (random, flow, file order)."""
    order = {kind: i for i, kind in enumerate(("random", "flow", "file"))}
    files = sorted(
        out_dir.glob("results-*.json"),
        key=lambda p: order.get(p.stem.removeprefix("results-"), 9),
    )
    docs = [json.loads(p.read_text()) for p in files]
    return {
        "rows": [row for d in docs for row in d["rows"]],
        "reference_sizes": docs[0].get("reference_sizes", {}) if docs else {},
    }


def results_markdown(doc: dict[str, Any]) -> str:
    """The README table: one line per (model, split)."""

    def sizes(row: dict[str, Any]) -> list[str]:
        return [f"{row['params']:,}", f"{row['flops'] / 1e6:.2f}", f"{row['size_bytes'] / 1e3:.0f}"]

    rows = [
        [row["model"], row["split"], *(f"{row[k]:.4f}" for k in _QUALITY), *sizes(row)]
        for row in doc["rows"]
    ]
    rows += [
        [f"{name} (published width, not trained)", "-", "-", "-", "-", "-", *sizes(size)]
        for name, size in doc.get("reference_sizes", {}).items()
    ]
    header = ["model", "split", "accuracy", "macro P", "macro R", "macro F1", "params",
              "MFLOPs", "size (KB)"]  # fmt: skip
    return "\n".join(markdown_table(header, rows, right=range(2, 9))) + "\n"


_QUALITY = ("accuracy", "macro_precision", "macro_recall", "macro_f1")
