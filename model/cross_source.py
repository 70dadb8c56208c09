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
from amlhp.model.calibration import FoldPredictions, leave_one_fold_out, load_folds
from amlhp.model.dataset import LabelledPackets, Split, cap_rows, load_labelled, split
from amlhp.model.decision import (
    BENIGN,
    MALICIOUS,
    UNCERTAIN,
    DecisionPolicy,
    benign_mask,
    energy,
    is_benign_class,
    log_odds,
)
from amlhp.model.exceptions import DatasetError
from amlhp.model.labels import load_labels
from amlhp.model.registry import create_model, default_lr, model_kwargs
from amlhp.model.train import (
    ProgressFn,
    TrainConfig,
    logits_of,
    model_inputs_for,
    train_model,
)

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


def _val_split(rows: IntArray, seed: int, share: float = 0.1) -> tuple[IntArray, IntArray]:
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(rows)
    n_val = max(1, round(share * rows.size))
    return np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val])


def binary_figures(
    labels: IntArray, pred: IntArray, classes: list[str]
) -> dict[str, float | int | None]:
    """Benign kept and attacks flagged, the way an operator counts them."""
    benign = benign_mask(classes)
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


@dataclasses.dataclass(frozen=True)
class FoldOutput:
    """A fold model's class predictions and logits on the held-out rows, and its val logits."""

    pred: IntArray
    logits: npt.NDArray[np.float32]
    val_logits: npt.NDArray[np.float32]
    model: torch.nn.Module


def _train(
    data: LabelledPackets,
    train_rows: IntArray,
    val_rows: IntArray,
    test_rows: IntArray,
    config: TrainConfig,
    on_progress: ProgressFn | None,
) -> FoldOutput:
    """Train a fresh IoT-AMLHP on ``train_rows``; its logits for ``test_rows`` and ``val_rows``."""
    torch.manual_seed(config.seed)
    model = create_model("amlhp", **model_kwargs("amlhp", num_classes=len(data.classes)))
    parts = Split("cross-source", train_rows, val_rows, test_rows)
    train_model(model, data, parts, config, on_progress)
    size = config.eval_batch_size
    test = logits_of(model, model_inputs_for(model, data.subset(test_rows)), size).numpy()
    val = logits_of(model, model_inputs_for(model, data.subset(val_rows)), size).numpy()
    return FoldOutput(test.argmax(axis=1).astype(np.int64), test, val, model)


def save_fold_models(
    models: dict[str, torch.nn.Module], folds_dir: Path, models_dir: Path, data: LabelledPackets
) -> list[Path]:
    """Each fold's model as an artifact (``models_dir/SOURCE``), its decision policy fitted
    on the *other* folds only, with its own out-of-distribution cut: a model that neither
    trained nor calibrated on the source it is named for. What a study of a new network
    (``amlhp model adapt-study``) starts from."""
    from amlhp.model.artifact import save_artifact
    from amlhp.model.calibration import fit_policy, for_model
    from amlhp.model.workflow import encoding_meta

    folds = {f.source: f for f in load_folds(folds_dir) if f.source in models}
    written = []
    for source, model in sorted(models.items()):
        others = [f for name, f in folds.items() if name != source]
        policy = for_model(fit_policy(others), folds[source].val_energy)
        decision = {**policy.to_meta(), "provenance": {**policy.provenance, "held_out": source}}
        path = models_dir / source
        save_artifact(
            path,
            model,
            architecture="amlhp",
            config=model_kwargs("amlhp", num_classes=len(data.classes)),
            classes=data.classes,
            encoding=encoding_meta(data.config),
            extra={"decision": decision, "held_out_source": source},
        )
        written.append(path)
    return written


def fold_predictions(
    source: str, out: FoldOutput, labels: IntArray, classes: list[str]
) -> FoldPredictions:
    """What the decision layer needs of a fold: log-odds, energies, truth, val energies."""
    benign = benign_mask(classes)
    return FoldPredictions(
        source,
        log_odds(out.logits, benign),
        energy(out.logits),
        ~benign[labels],
        energy(out.val_logits),
        labels,
    )


def run_cross_source(
    labels_path: Path,
    out_dir: Path,
    *,
    mask_fields: tuple[str, ...],
    max_per_class: int = 3000,
    max_test_per_class: int = 5000,
    max_benign: int | None = None,
    balance_sources: bool = False,
    config: TrainConfig | None = None,
    sources: list[str] | None = None,
    with_random: bool = True,
    models_dir: Path | None = None,
    on_event: EventFn | None = None,
    on_progress: Callable[[str], ProgressFn] | None = None,
) -> dict[str, Any]:
    """Train and test once per held-out source (and once on a random split); write the table.

    Training takes at most ``max_per_class`` packets of each class from the other sources;
    the held-out source is tested on at most ``max_test_per_class`` packets per class.
    ``max_benign`` caps the benign classes' training packets apart (default: the same cap):
    with one benign class among many attack classes, equal caps make benign a small
    minority of what the network sees. ``balance_sources`` shares each class's cap
    equally among the training sources that hold it. ``models_dir``: also save each fold's
    model there once every fold is done (:func:`save_fold_models`).
    """
    base = config or TrainConfig()
    config = dataclasses.replace(base, lr=base.lr or default_lr("amlhp"))
    spec = load_labels(labels_path)
    data = load_labelled(spec, EncoderConfig(mask_fields=mask_fields))
    benign_classes = benign_mask(data.classes)
    file_source = np.array([source_of(f) for f in data.files])
    row_source = file_source[data.file_ids]
    source_ids = np.unique(row_source, return_inverse=True)[1] if balance_sources else None
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
        "balance_sources": balance_sources,
        "hyperparameters": config.as_dict(),
        "classes": data.classes,
        "rows": [],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    fold_models: dict[str, torch.nn.Module] = {}
    for source in wanted:
        inside = np.flatnonzero(row_source == source)
        outside = np.flatnonzero(row_source != source)
        test_rows = cap_rows(inside, data.labels, max_test_per_class, config.seed)
        pool = cap_rows(
            outside, data.labels, max_per_class, config.seed, benign_classes, max_benign,
            source_ids,
        )  # fmt: skip
        train_rows, val_rows = _val_split(pool, config.seed)
        held_classes = sorted({data.classes[i] for i in np.unique(data.labels[inside])})
        trained_classes = {data.classes[i] for i in np.unique(data.labels[train_rows])}
        attacks = [c for c in held_classes if not is_benign_class(c)]
        if on_event is not None:
            on_event(f"{source}: training on {train_rows.size} packets of the other sources")
        fold = _train(
            data,
            train_rows,
            val_rows,
            test_rows,
            config,
            on_progress(source) if on_progress else None,
        )
        pred = fold.pred
        fold_models[source] = fold.model
        labels = data.labels[test_rows]
        fold_predictions(source, fold, labels, data.classes).save(
            out_dir / "folds" / f"{source}.npz"
        )
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
        if len(doc["rows"]) > 1:
            doc["decision"] = decision_table(
                out_dir / "folds", [r["source"] for r in doc["rows"]], data.classes
            )
        _write(doc, out_dir)
        if on_event is not None:
            on_event(f"{source}: {_row_summary(row)}")
    if models_dir is not None:
        for path in save_fold_models(fold_models, out_dir / "folds", models_dir, data):
            if on_event is not None:
                on_event(f"fold model -> {path}")
    if with_random:
        pool = cap_rows(
            np.arange(len(data)), data.labels, max_per_class, config.seed, benign_classes,
            max_benign, source_ids,
        )  # fmt: skip
        parts = split(data.subset(pool), "random", seed=config.seed)
        train_rows, val_rows, test_rows = pool[parts.train], pool[parts.val], pool[parts.test]
        pred = _train(
            data, train_rows, val_rows, test_rows, config,
            on_progress("random") if on_progress else None,
        ).pred  # fmt: skip
        doc["random_split"] = binary_figures(data.labels[test_rows], pred, data.classes)
        doc["seconds"] = round(time.perf_counter() - started, 1)
        _write(doc, out_dir)
    return doc


def decision_table(
    folds_dir: Path, sources: list[str], classes: list[str] | None = None
) -> dict[str, Any]:
    """Every fold of ``sources`` under a policy calibrated on the other folds only."""
    folds = [f for f in load_folds(folds_dir) if f.source in set(sources)]
    rows, policy, ece = leave_one_fold_out(folds, classes)
    return {"rows": rows, "policy_all_folds": policy, "ece": ece}


def called_malicious(
    artifact: Any, data: LabelledPackets, batch_size: int = 2048
) -> dict[str, Any]:
    """Per true class, the share of packets decided malicious, uncertain and benign.

    Decisions are the artifact's own (:class:`~amlhp.model.decision.DecisionPolicy`:
    calibrated score, band, out-of-distribution cut). Unlike the multi-class report this
    works for classes the model never learnt: what it says about an unseen kind of attack,
    or an unseen benign device, is the question. ``binary`` sums it up the way the goals
    are stated (benign recall: benign packets decided benign).
    """
    logits = logits_of(artifact.model, model_inputs_for(artifact.model, data), batch_size)
    policy = DecisionPolicy.from_meta(artifact.meta.get("decision"))
    decision = policy.assess(logits.numpy(), benign_mask(list(artifact.classes))).decision
    classes: dict[str, Any] = {}
    for cls in np.unique(data.labels):
        rows = data.labels == cls
        d = decision[rows]
        classes[data.classes[cls]] = {
            "packets": int(rows.sum()),
            "called_malicious": round(float(np.mean(d == MALICIOUS)), 4),
            "uncertain": round(float(np.mean(d == UNCERTAIN)), 4),
            "called_benign": round(float(np.mean(d == BENIGN)), 4),
        }
    truth_benign = benign_mask(data.classes)[data.labels]
    return {"classes": classes, "binary": _binary_decisions(truth_benign, decision)}


def _binary_decisions(truth_benign: npt.NDArray[np.bool_], decision: Any) -> dict[str, Any]:
    def share(mask: Any, rows: Any) -> float | None:
        return round(float(np.mean(mask[rows])), 4) if rows.any() else None

    right = np.where(truth_benign, decision == BENIGN, decision == MALICIOUS)
    decided = decision != UNCERTAIN
    return {
        "packets": int(decision.size),
        "benign_packets": int(truth_benign.sum()),
        "attack_packets": int((~truth_benign).sum()),
        "accuracy": round(float(np.mean(right)), 4),  # an uncertain packet counts as wrong
        "accuracy_of_decided": share(right, decided),
        "uncertain": round(float(np.mean(~decided)), 4),
        "benign_recall": share(decision == BENIGN, truth_benign),
        "benign_not_malicious": share(decision != MALICIOUS, truth_benign),
        "attack_called_malicious": share(decision == MALICIOUS, ~truth_benign),
        "attack_flagged": share(decision != BENIGN, ~truth_benign),
    }


def _per_class_flagged(labels: IntArray, pred: IntArray, classes: list[str]) -> dict[str, Any]:
    benign = benign_mask(classes)
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
    if doc.get("decision"):
        lines += ["", *decision_markdown(doc["decision"])]
    return "\n".join(lines) + "\n"


def decision_markdown(table: dict[str, Any]) -> list[str]:
    """The three-way decision per held-out source, calibrated on the other folds only."""
    lines = [
        "| held-out source | benign called malicious | benign uncertain | attacks called "
        "malicious | attacks flagged (malicious or uncertain) | band (benign below, "
        "malicious at) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in table["rows"]:
        flagged = None
        if row.get("attack_called_malicious") is not None:
            flagged = row["attack_called_malicious"] + row["attack_uncertain"]
        band = row["policy"]
        band_text = (
            f"{band['benign_below']:.3f}, {band['malicious_at']:.3f}"
            if "malicious_at" in band
            else "not calibrated"
        )
        lines.append(
            f"| {row['source']} | {_fmt(row.get('benign_called_malicious'))} | "
            f"{_fmt(row.get('benign_uncertain'))} | {_fmt(row.get('attack_called_malicious'))} "
            f"| {_fmt(flagged)} | {band_text} |"
        )
    ece = table.get("ece")
    if ece:
        lines += [
            "",
            f"Expected calibration error of the malicious score, all folds pooled "
            f"({ece['weighting']}): {ece['out_of_fold']:.3f} out of fold (each fold scored "
            f"by a calibration fitted on the others), {ece['raw']:.3f} for the uncalibrated "
            "probability.",
        ]
    return lines
