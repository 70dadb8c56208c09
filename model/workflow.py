"""Train-and-evaluate and evaluate-an-artifact: the steps behind ``amlhp train``/``evaluate``.

The results runner (:mod:`amlhp.model.experiments`) calls the same functions, so a row of
the results table and the ``amlhp train`` command that reproduces it run identical code.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from amlhp.encoders.layout import DEFAULT_MASK_FIELDS, LAYOUT_VERSION, EncoderConfig
from amlhp.model.artifact import Artifact, save_artifact
from amlhp.model.dataset import LabelledPackets, Split, data_fingerprint, split
from amlhp.model.decision import energy
from amlhp.model.exceptions import DatasetError
from amlhp.model.flops import FLOPS_CONVENTION, count_flops, model_cost
from amlhp.model.labels import LabelSpec
from amlhp.model.metrics import Report, classification_report, format_report, plot_confusion
from amlhp.model.registry import create_model, default_lr, input_bytes, input_kind, model_kwargs
from amlhp.model.train import (
    ProgressFn,
    TrainConfig,
    TrainResult,
    logits_of,
    model_inputs_for,
    predict,
    train_model,
)

#: P needed by a model that reads the first n packet bytes: enough payload for any header.
BASELINE_PAYLOAD_BYTES = 1500


def encoder_config_for(
    model: nn.Module, mask_fields: tuple[str, ...] = DEFAULT_MASK_FIELDS
) -> EncoderConfig:
    """The encoder settings a model is trained and served with."""
    if input_kind(model) == "packet_bytes":
        return EncoderConfig(
            payload_bytes=max(BASELINE_PAYLOAD_BYTES, input_bytes(model)), mask_fields=mask_fields
        )
    return EncoderConfig(
        payload_bytes=int(getattr(model, "payload_bytes", 64)), mask_fields=mask_fields
    )


def encoding_meta(config: EncoderConfig) -> dict[str, Any]:
    return {
        "layout_version": LAYOUT_VERSION,
        "payload_bytes": config.payload_bytes,
        "mask_fields": list(config.mask_fields),
    }


@dataclass
class Outcome:
    """A trained model with its split, training history and test report."""

    name: str
    model: nn.Module
    kwargs: dict[str, Any]
    split: Split
    result: TrainResult
    report: Report
    encoder: EncoderConfig
    fingerprint: str
    max_per_class: int | None
    result_config: dict[str, Any]
    #: energies of the validation packets (in distribution): the model's OOD reference
    val_energy: np.ndarray | None = None
    decision: dict[str, Any] | None = None
    #: caps beyond max_per_class (``max_benign``, ``balance_sources``), for the record
    sampling: dict[str, Any] | None = None

    def extra_meta(self, data: LabelledPackets, command: str) -> dict[str, Any]:
        cost = model_cost(self.model)
        return {
            "params": cost.params,
            "flops": cost.flops,
            "macs": cost.macs,
            "size_bytes": cost.size_bytes,
            "flops_convention": FLOPS_CONVENTION,
            "flops_folded": count_flops(self.model, as_described=False),
            "metrics": {"split": self.split.kind, **self.report.summary()},
            **({"decision": self.decision} if self.decision else {}),
            **(
                {"val_energy_quantiles": energy_quantiles(self.val_energy)}
                if self.val_energy is not None and self.val_energy.size
                else {}
            ),
            "test_report": self.report.as_dict(),
            "training": {
                "data_fingerprint": self.fingerprint,
                "split": self.split.summary(data),
                "max_per_class": self.max_per_class,
                **(self.sampling or {}),
                "hyperparameters": self.result_config,
                "best_epoch": self.result.best_epoch,
                "history": self.result.history,
                "seconds": round(self.result.seconds, 1),
                "threads": torch.get_num_threads(),
                "command": command,
            },
        }


def train_and_evaluate(
    name: str,
    data: LabelledPackets,
    spec: LabelSpec,
    *,
    split_kind: str,
    config: TrainConfig,
    max_per_class: int | None,
    model_overrides: dict[str, Any] | None = None,
    on_progress: ProgressFn | None = None,
    lr: float | None = None,
    sampling: dict[str, Any] | None = None,
) -> Outcome:
    """Split, train ``name`` with ``config.seed``, and score its test side.

    ``lr`` overrides ``config.lr``; when both are unset the model's default applies
    (:func:`amlhp.model.registry.default_lr`).
    """
    config = dataclasses.replace(config, lr=lr if lr is not None else default_lr(name))
    kwargs = model_kwargs(name, num_classes=len(data.classes), **(model_overrides or {}))
    torch.manual_seed(config.seed)
    model = create_model(name, **kwargs)
    encoder = encoder_config_for(model, data.config.mask_fields)
    if data.payload.shape[1] < encoder.payload_bytes:
        raise DatasetError(
            f"{name} needs P={encoder.payload_bytes} payload bytes, "
            f"the data was encoded with P={data.payload.shape[1]}"
        )
    parts = split(data, split_kind, seed=config.seed)
    result = train_model(model, data, parts, config, on_progress)
    test = data.subset(parts.test)
    pred, _ = predict(model, model_inputs_for(model, test), config.eval_batch_size)
    report = classification_report(test.labels, pred, data.classes)
    val = data.subset(parts.val)
    val_energy = energy(logits_of(model, model_inputs_for(model, val), config.eval_batch_size))
    outcome = Outcome(
        name=name,
        model=model,
        kwargs=kwargs,
        split=parts,
        result=result,
        report=report,
        encoder=encoder,
        fingerprint=data_fingerprint(spec, encoder, max_per_class, config.seed, sampling),
        max_per_class=max_per_class,
        result_config=config.as_dict(),
        val_energy=val_energy,
        sampling=sampling,
    )
    return outcome


def energy_quantiles(values: np.ndarray) -> dict[str, float]:
    """A few quantiles of in-distribution energies, for the record (and drift checks)."""
    return {f"q{q:g}": round(float(np.quantile(values, q)), 4) for q in (0.5, 0.99, 0.999)}


def calibrate_outcome(outcome: Outcome, folds_dir: Path) -> dict[str, Any]:
    """Attach the decision policy fitted on held-out-source folds, with this model's OOD cut.

    Platt scaling and the band come from the folds of ``amlhp model cross-source`` (models
    of the same recipe meeting networks they never saw); the energy cut from this model's
    own validation packets (:func:`amlhp.model.calibration.for_model`).
    """
    from amlhp.model.calibration import fit_policy, for_model, load_folds

    policy = for_model(fit_policy(load_folds(folds_dir)), outcome.val_energy)
    outcome.decision = {
        **policy.to_meta(),
        "provenance": {**policy.provenance, "folds_dir": str(folds_dir)},
    }
    return outcome.decision


def save_outcome(
    outcome: Outcome, data: LabelledPackets, path: Path, command: str
) -> dict[str, Any]:
    return save_artifact(
        path,
        outcome.model,
        architecture=outcome.name,
        config=outcome.kwargs,
        classes=data.classes,
        encoding=encoding_meta(outcome.encoder),
        extra=outcome.extra_meta(data, command),
    )


def write_report(report: Report, out_dir: Path, title: str = "") -> dict[str, str]:
    """metrics.json, report.txt, confusion.csv and confusion.png under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    (out_dir / "report.txt").write_text(format_report(report) + "\n")
    header = ",".join(["true\\predicted", *report.classes])
    rows = [
        ",".join([name, *map(str, row)])
        for name, row in zip(report.classes, report.confusion.tolist(), strict=True)
    ]
    (out_dir / "confusion.csv").write_text("\n".join([header, *rows]) + "\n")
    plot_confusion(report, out_dir / "confusion.png", title)
    return {
        k: str(out_dir / v)
        for k, v in (
            ("metrics", "metrics.json"),
            ("report", "report.txt"),
            ("confusion_csv", "confusion.csv"),
            ("confusion_png", "confusion.png"),
        )
    }


def evaluate_artifact(
    artifact: Artifact,
    data: LabelledPackets,
    *,
    rows: np.ndarray | None = None,
    batch_size: int = 2048,
) -> Report:
    """Score ``data`` (or its ``rows``) with the artifact's model; classes matched by name."""
    model_classes = artifact.classes
    missing = [c for c in data.classes if c not in model_classes]
    if missing:
        raise DatasetError(f"the model does not know class(es) {', '.join(missing)}")
    subset = data.subset(rows) if rows is not None else data
    to_model = np.array([model_classes.index(c) for c in data.classes], np.int64)
    pred, _ = predict(artifact.model, model_inputs_for(artifact.model, subset), batch_size)
    return classification_report(to_model[subset.labels], pred, model_classes)
