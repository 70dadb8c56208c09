"""Leave one source out: how a model does on a network it was never trained on.

A random 8:1:1 split puts packets of the same capture, network and device on both sides,
so it measures memory of a network as much as recognition of behaviour. Here every
*source* (one data set: a public collection, or the attack lab) is held out in turn: the
model is trained on all the others and tested on it. For a benign source the figure is the
share of its packets *not* called malicious (anything but a benign class); for an attack
source the share flagged. Whether a source's attack kinds occur in another source says
whether the model could have learnt them at all.

A packet's source is the folder under ``public/`` (``mqttset_reduced``, ``stopddos``...)
or ``lab`` for the attack lab's captures (``.../lab/...``); see :func:`source_of`. The
random split of the same data is reported beside the table, never alone.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from amlhp.encoders.layout import EncoderConfig
from amlhp.model.dataset import LabelledPackets, Split, cap_per_class, load_labelled, split
from amlhp.model.exceptions import DatasetError
from amlhp.model.labels import load_labels
from amlhp.model.registry import create_model, default_lr, model_kwargs
from amlhp.model.train import ProgressFn, TrainConfig, model_inputs_for, predict, train_model

IntArray = npt.NDArray[np.int64]
EventFn = Callable[[str], None]
RESULT_FORMAT = "amlhp-cross-source/1"


def source_of(path: str) -> str:
    """The data set a capture belongs to: the folder under ``public``, or ``lab``."""
    parts = PurePath(path).parts
    for i, part in enumerate(parts[:-1]):
        if part == "public" and i + 2 < len(parts):
            return parts[i + 1]
    if "lab" in parts[:-1]:
        return "lab"
    return PurePath(path).parent.name or "unknown"


def is_benign(name: str) -> bool:
    """Benign classes are ``benign`` or start with it (``benign_iot``...); the rest attack."""
    return name == "benign" or name.startswith("benign_")


def _benign_mask(classes: list[str]) -> npt.NDArray[np.bool_]:
    return np.array([is_benign(c) for c in classes], dtype=bool)


def _draw(
    rows: IntArray,
    labels: IntArray,
    cap: int,
    seed: int,
    benign: npt.NDArray[np.bool_] | None = None,
    benign_cap: int | None = None,
) -> IntArray:
    """At most ``cap`` rows per class of ``rows`` (``benign_cap`` for benign classes)."""
    if rows.size == 0:
        return rows
    if benign is None or benign_cap is None or benign_cap == cap:
        return np.sort(rows[cap_per_class(labels[rows], cap, seed)])
    is_b = benign[labels[rows]]
    parts = [
        _draw(rows[~is_b], labels, cap, seed),
        _draw(rows[is_b], labels, benign_cap, seed),
    ]
    return np.sort(np.concatenate(parts))


def _val_split(rows: IntArray, seed: int, share: float = 0.1) -> tuple[IntArray, IntArray]:
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(rows)
    n_val = max(1, round(share * rows.size))
    return np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val])


def binary_figures(
    labels: IntArray, pred: IntArray, classes: list[str]
) -> dict[str, float | int | None]:
    """Benign kept and attacks flagged, the way an operator counts them."""
    benign = _benign_mask(classes)
    true_benign = benign[labels]
    called_malicious = ~benign[pred]
    n_benign = int(true_benign.sum())
    n_attack = int((~true_benign).sum())
    return {
        "packets": int(labels.size),
        "benign_packets": n_benign,
        "attack_packets": n_attack,
        "benign_not_malicious": (
            round(float(np.mean(~called_malicious[true_benign])), 4) if n_benign else None
        ),
        "attack_flagged": (
            round(float(np.mean(called_malicious[~true_benign])), 4) if n_attack else None
        ),
        "accuracy_binary": round(float(np.mean(called_malicious != true_benign)), 4),
    }


def _train(
    data: LabelledPackets,
    train_rows: IntArray,
    val_rows: IntArray,
    test_rows: IntArray,
    config: TrainConfig,
    on_progress: ProgressFn | None,
) -> IntArray:
    """Train a fresh IoT-AMLHP on ``train_rows``; its predictions for ``test_rows``."""
    torch.manual_seed(config.seed)
    model = create_model("amlhp", **model_kwargs("amlhp", num_classes=len(data.classes)))
    parts = Split("cross-source", train_rows, val_rows, test_rows)
    train_model(model, data, parts, config, on_progress)
    test = data.subset(test_rows)
    pred, _ = predict(model, model_inputs_for(model, test), config.eval_batch_size)
    return pred


def run_cross_source(
    labels_path: Path,
    out_dir: Path,
    *,
    mask_fields: tuple[str, ...],
    max_per_class: int = 3000,
    max_test_per_class: int = 5000,
    max_benign: int | None = None,
    config: TrainConfig | None = None,
    sources: list[str] | None = None,
    with_random: bool = True,
    on_event: EventFn | None = None,
    on_progress: Callable[[str], ProgressFn] | None = None,
) -> dict[str, Any]:
    """Train and test once per held-out source (and once on a random split); write the table.

    Training takes at most ``max_per_class`` packets of each class from the other sources;
    the held-out source is tested on at most ``max_test_per_class`` packets per class.
    ``max_benign`` caps the benign classes' training packets apart (default: the same cap):
    with one benign class among many attack classes, equal caps make benign a small
    minority of what the network sees.
    """
    base = config or TrainConfig()
    config = dataclasses.replace(base, lr=base.lr or default_lr("amlhp"))
    spec = load_labels(labels_path)
    data = load_labelled(spec, EncoderConfig(mask_fields=mask_fields))
    benign_classes = _benign_mask(data.classes)
    file_source = np.array([source_of(f) for f in data.files])
    row_source = file_source[data.file_ids]
    known = sorted(set(row_source.tolist()))
    wanted = sources or known
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise DatasetError(f"no such source(s) {', '.join(unknown)}; known: {', '.join(known)}")
    doc: dict[str, Any] = {
        "format": RESULT_FORMAT,
        "labels": str(labels_path),
        "mask_fields": list(mask_fields),
        "max_per_class": max_per_class,
        "max_test_per_class": max_test_per_class,
        "max_benign": max_benign or max_per_class,
        "hyperparameters": config.as_dict(),
        "classes": data.classes,
        "rows": [],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for source in wanted:
        inside = np.flatnonzero(row_source == source)
        outside = np.flatnonzero(row_source != source)
        test_rows = _draw(inside, data.labels, max_test_per_class, config.seed)
        pool = _draw(outside, data.labels, max_per_class, config.seed, benign_classes, max_benign)
        train_rows, val_rows = _val_split(pool, config.seed)
        held_classes = sorted({data.classes[i] for i in np.unique(data.labels[inside])})
        trained_classes = {data.classes[i] for i in np.unique(data.labels[train_rows])}
        attacks = [c for c in held_classes if not is_benign(c)]
        if on_event is not None:
            on_event(f"{source}: training on {train_rows.size} packets of the other sources")
        pred = _train(
            data,
            train_rows,
            val_rows,
            test_rows,
            config,
            on_progress(source) if on_progress else None,
        )
        labels = data.labels[test_rows]
        row = {
            "source": source,
            "kind": "benign"
            if not attacks
            else ("attack" if len(attacks) == len(held_classes) else "mixed"),
            "classes": held_classes,
            "kinds_seen_elsewhere": sorted(set(attacks) & trained_classes),
            "kinds_never_seen": sorted(set(attacks) - trained_classes),
            "train_packets": int(train_rows.size),
            **binary_figures(labels, pred, data.classes),
            "per_class_flagged": _per_class_flagged(labels, pred, data.classes),
        }
        doc["rows"] = [r for r in doc["rows"] if r["source"] != source] + [row]
        doc["seconds"] = round(time.perf_counter() - started, 1)
        _write(doc, out_dir)
        if on_event is not None:
            on_event(f"{source}: {_row_summary(row)}")
    if with_random:
        pool = _draw(
            np.arange(len(data)), data.labels, max_per_class, config.seed, benign_classes,
            max_benign,
        )  # fmt: skip
        parts = split(data.subset(pool), "random", seed=config.seed)
        train_rows, val_rows, test_rows = pool[parts.train], pool[parts.val], pool[parts.test]
        pred = _train(
            data, train_rows, val_rows, test_rows, config,
            on_progress("random") if on_progress else None,
        )  # fmt: skip
        doc["random_split"] = binary_figures(data.labels[test_rows], pred, data.classes)
        doc["seconds"] = round(time.perf_counter() - started, 1)
        _write(doc, out_dir)
    return doc


def called_malicious(
    artifact: Any, data: LabelledPackets, batch_size: int = 2048
) -> dict[str, Any]:
    """Per true class, the share of packets a model calls malicious (any non-benign class).

    Unlike the multi-class report this works for classes the model never learnt: what it
    says about an unseen kind of attack, or an unseen benign device, is the question.
    """
    pred, _ = predict(artifact.model, model_inputs_for(artifact.model, data), batch_size)
    model_benign = _benign_mask(list(artifact.classes))
    flagged = ~model_benign[pred]
    out: dict[str, Any] = {}
    for cls in np.unique(data.labels):
        rows = data.labels == cls
        out[data.classes[cls]] = {
            "packets": int(rows.sum()),
            "called_malicious": round(float(np.mean(flagged[rows])), 4),
        }
    return out


def _per_class_flagged(labels: IntArray, pred: IntArray, classes: list[str]) -> dict[str, Any]:
    benign = _benign_mask(classes)
    out: dict[str, Any] = {}
    for cls in np.unique(labels):
        rows = labels == cls
        out[classes[cls]] = {
            "packets": int(rows.sum()),
            "called_malicious": round(float(np.mean(~benign[pred[rows]])), 4),
        }
    return out


def _row_summary(row: dict[str, Any]) -> str:
    parts = [f"{row['packets']} packets"]
    if row["benign_not_malicious"] is not None:
        parts.append(f"benign kept {row['benign_not_malicious']:.3f}")
    if row["attack_flagged"] is not None:
        parts.append(f"attacks flagged {row['attack_flagged']:.3f}")
    return ", ".join(parts)


def _write(doc: dict[str, Any], out_dir: Path) -> None:
    (out_dir / "cross-source.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out_dir / "cross-source.md").write_text(cross_source_markdown(doc))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def cross_source_markdown(doc: dict[str, Any]) -> str:
    """The README table: one line per held-out source, then the random split."""
    lines = [
        "| held-out source | kind | packets | benign not called malicious | attacks flagged "
        "| attack kinds never seen in training |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in doc["rows"]:
        never = ", ".join(row["kinds_never_seen"]) or "-"
        lines.append(
            f"| {row['source']} | {row['kind']} | {row['packets']:,} | "
            f"{_fmt(row['benign_not_malicious'])} | {_fmt(row['attack_flagged'])} | {never} |"
        )
    rnd = doc.get("random_split")
    if rnd:
        lines.append(
            f"| *random 8:1:1 split of all sources* | mixed | {rnd['packets']:,} | "
            f"{_fmt(rnd['benign_not_malicious'])} | {_fmt(rnd['attack_flagged'])} | - |"
        )
    return "\n".join(lines) + "\n"
