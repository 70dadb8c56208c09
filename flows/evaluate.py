"""Fit a flow model end to end (train, calibrate, profile) and evaluate it on held-out flows.

``fit_flow_model``: train the CNN on the training flows; on the validation flows fit the
temperature, compute exact group Shapley values, fit the attribution profiles and choose
the confidence threshold (see :mod:`amlhp.flows.refine`). ``evaluate_flow_model``: on the
test flows, macro F1 and high-confidence misclassifications before and after refinement,
calibration error, and the strategy table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from amlhp.flows.artifact import FlowModel
from amlhp.flows.calibration import expected_calibration_error, fit_temperature, softmax
from amlhp.flows.dataset import FlowDataset, FlowSplit, matrices
from amlhp.flows.network import FlowCNN, count_parameters, flops_per_matrix
from amlhp.flows.refine import (
    Refiner,
    choose_threshold,
    fit_profiles,
    high_confidence_errors,
    refine,
)
from amlhp.flows.shapley import GROUPS, exact_shapley
from amlhp.flows.strategies import compare_strategies
from amlhp.flows.train import FlowTrainConfig, ProgressFn, predict_logits, train_flow_model
from amlhp.model.metrics import Report, classification_report

IntArray = npt.NDArray[np.int64]


def shapley_of(
    model: torch.nn.Module,
    ds: FlowDataset,
    index: IntArray,
    temperature: float,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact group Shapley values (N, G, K) and calibrated probabilities (N, K)."""
    phis, probs = [], []
    chunk = 64
    for lo in range(0, len(index), chunk):
        x = torch.from_numpy(matrices(ds, index[lo : lo + chunk]))
        phi, p = exact_shapley(model, x, temperature=temperature)
        phis.append(phi)
        probs.append(p)
        if on_step is not None:
            on_step(min(lo + chunk, len(index)), len(index))
    k = len(ds.classes)
    if not phis:
        return np.zeros((0, len(GROUPS), k), np.float32), np.zeros((0, k), np.float32)
    return np.concatenate(phis), np.concatenate(probs)


def fit_flow_model(
    ds: FlowDataset,
    split: FlowSplit,
    config: FlowTrainConfig,
    *,
    width: int = 64,
    profiles: bool = True,
    on_progress: ProgressFn | None = None,
    on_status: Callable[[str], None] | None = None,
) -> tuple[FlowModel, dict[str, Any]]:
    """Train, calibrate and profile a model; returns it and a training summary.

    ``profiles=False`` skips the Shapley values of the validation flows, their profiles
    and the refinement threshold (the leave-one-source-out folds of the attack model,
    whose alarm uses the calibrated probabilities alone)."""
    say = on_status or (lambda _msg: None)
    k = len(ds.classes)
    net = FlowCNN(num_classes=k, rows=ds.config.rows, width=width)
    result = train_flow_model(net, ds, split, config, on_progress)
    say("calibrating on the validation flows")
    val = split.val
    logits = predict_logits(net, ds, val)
    labels = ds.label[val]
    temperature = fit_temperature(logits, labels)
    if profiles:
        say("Shapley values of the validation flows")
        phi, probs = shapley_of(net, ds, val, temperature)
        centres, radius = fit_profiles(phi, probs.argmax(axis=1), labels, k)
        refiner = Refiner(temperature, 0.5, centres, radius)
        refiner.threshold = choose_threshold(
            refiner, probs, phi, labels, ds.device[val], ds.start_ns[val], ds.classes
        )
    else:
        nan = np.full((k, len(GROUPS)), np.nan, np.float32)
        refiner = Refiner(temperature, 0.5, nan, nan[:, 0].copy())
    summary = {
        "train": config.as_dict(),
        "history": result.history,
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.seconds, 1),
        "train_flows": result.train_flows,
        "parameters": count_parameters(net),
        "flops_per_matrix": flops_per_matrix(net, ds.config.rows),
        "temperature": temperature,
        "threshold": refiner.threshold,
        "val_ece_before": expected_calibration_error(softmax(logits), labels),
        "val_ece_after": expected_calibration_error(softmax(logits, temperature), labels),
        "profiled_classes": int(np.isfinite(refiner.radius).sum()) if profiles else 0,
        "split": split.as_dict(ds),
    }
    model = FlowModel(net, list(ds.classes), ds.config, refiner, {"version": "unsaved"})
    return model, summary


def evaluate_flow_model(
    model: FlowModel,
    ds: FlowDataset,
    index: IntArray,
    *,
    window_s: float = 60.0,
    on_status: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Report]]:
    """Before/after refinement figures and the strategy table on flows ``index``."""
    say = on_status or (lambda _msg: None)
    net, refiner = model.torch_network(), model.refiner
    labels = ds.label[index]
    logits = predict_logits(net, ds, index)
    raw = softmax(logits)
    pred = raw.argmax(axis=1)
    say("Shapley values of the test flows")
    phi, cal = shapley_of(net, ds, index, refiner.temperature)
    refined = refine(refiner, cal, phi, ds.device[index], ds.start_ns[index])
    before = classification_report(labels, pred, ds.classes)
    after = classification_report(labels, refined.labels, ds.classes)
    accepted = refined.accepted
    accepted_report = classification_report(labels[accepted], refined.labels[accepted], ds.classes)
    h = refiner.high_confidence
    everyone = np.ones(len(index), np.bool_)
    say("inference strategies")
    strategies = compare_strategies(
        net,
        ds,
        index,
        temperature=refiner.temperature,
        threshold=refiner.threshold,
        window_s=window_s,
    )
    figures: dict[str, Any] = {
        "flows": len(index),
        "classes": len(ds.classes),
        "macro_f1_before": before.macro_f1,
        "macro_f1_after": after.macro_f1,
        "accuracy_before": before.accuracy,
        "accuracy_after": after.accuracy,
        "macro_f1_accepted_only": accepted_report.macro_f1,
        "accuracy_accepted_only": accepted_report.accuracy,
        "accepted_share": float(accepted.mean()) if len(index) else 0.0,
        "high_confidence": h,
        "high_conf_errors_before": high_confidence_errors(
            labels, pred, raw.max(axis=1), everyone, h
        ),
        "high_conf_errors_after": high_confidence_errors(
            labels, refined.labels, refined.confidence, accepted, h
        ),
        "ece_before": expected_calibration_error(raw, labels),
        "ece_after": expected_calibration_error(cal, labels),
        "temperature": refiner.temperature,
        "threshold": refiner.threshold,
        "refinement_statuses": refined.counts,
        "inconsistent_share": float(1.0 - refined.consistent.mean()) if len(index) else 0.0,
        "strategies": [s.as_dict() for s in strategies],
        "mean_attribution_by_group": {
            g: float(np.mean(np.abs(phi[np.arange(len(index)), i, refined.labels])))
            for i, g in enumerate(GROUPS)
        },
    }
    return figures, {"before": before, "after": after}
