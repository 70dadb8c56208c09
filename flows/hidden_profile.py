"""Class profiles in the flow CNN's hidden layer: is a flow like the flows of its class?

Why: a confidence threshold alone lets a closed-set model name hosts of kinds it never saw
(a scan victim called a smart plug with confidence 0.9). The head's hidden layer (64
numbers per flow, :meth:`amlhp.flows.numpy_net.NumpyFlowCNN.summary`) places the flows of
one class near each other; a flow far from every flow its class had on validation is
out of profile, and its verdict is uncertain however confident the softmax is.

Fitted on the validation split (never on test flows): per class, the centroid of the
hidden vectors of its validation flows that the model got right, and a radius, the
``quantile`` (0.99) of their distances to it. Classes with fewer than ``MIN_FLOWS`` such
flows get an infinite radius (no check). ``distance`` is the flow's distance to its
predicted class's centroid divided by that radius: above 1 is out of profile.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
MIN_FLOWS: Final = 5
QUANTILE: Final = 0.99


def fit_hidden_profiles(
    hidden: F32, predicted: npt.NDArray[np.int64], labels: npt.NDArray[np.int64], classes: int
) -> dict[str, Any]:
    """The profile document (stored in the flow model's metadata under ``hidden_profile``)."""
    centroids = np.zeros((classes, hidden.shape[1]), np.float32)
    radius = np.full(classes, np.inf, np.float64)
    for k in range(classes):
        right = (predicted == k) & (labels == k)
        if right.sum() >= MIN_FLOWS:
            centroids[k] = hidden[right].mean(axis=0)
            dist = np.linalg.norm(hidden[right] - centroids[k], axis=1)
            radius[k] = max(float(np.quantile(dist, QUANTILE)), 1e-6)
    return {
        "quantile": QUANTILE,
        "min_flows": MIN_FLOWS,
        "centroids": centroids.round(6).tolist(),
        "radius": [None if not np.isfinite(r) else round(float(r), 6) for r in radius],
    }


def distance(doc: dict[str, Any], hidden: F32, predicted: npt.NDArray[np.int64]) -> F32:
    """Each flow's distance to its predicted class's centroid, in units of that class's
    radius (0 for classes without a profile)."""
    centroids = np.asarray(doc["centroids"], np.float32)
    radius = np.asarray([np.inf if r is None else r for r in doc["radius"]], np.float64)
    d = np.linalg.norm(hidden - centroids[predicted], axis=1) / radius[predicted]
    return np.nan_to_num(d, nan=0.0, posinf=0.0).astype(np.float32)


def hidden_of(net: Any, ds: Any, index: npt.NDArray[np.int64]) -> tuple[F32, F32]:
    """(hidden (N, 64), logits (N, K)) of dataset flows ``index`` with the numpy network."""
    from amlhp.flows.dataset import matrices

    parts = [
        net.summary(*net.embed_rows(matrices(ds, index[lo : lo + 256])))
        for lo in range(0, len(index), 256)
    ]
    hidden = np.concatenate(parts) if parts else np.zeros((0, net.h0_b.shape[0]), np.float32)
    return hidden, net.head_out(hidden)


def fit_and_measure(model: Any, ds: Any, split: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit the profiles on ``split.val``; measure on ``split.test`` what the product's
    decision (confidence over the threshold and in profile) keeps. Returns (profile
    document, figures)."""
    from amlhp.flows.calibration import softmax
    from amlhp.model.metrics import classification_report

    net = model.numpy_network()
    hidden, logits = hidden_of(net, ds, split.val)
    doc = fit_hidden_profiles(hidden, logits.argmax(axis=1), ds.label[split.val], len(ds.classes))
    hidden, logits = hidden_of(net, ds, split.test)
    pred = logits.argmax(axis=1)
    conf = softmax(logits, model.refiner.temperature).max(axis=1)
    labels = ds.label[split.test]
    inside = distance(doc, hidden, pred) <= 1.0
    sure = conf >= model.refiner.threshold
    kept = sure & inside
    report = classification_report(labels[kept], pred[kept], ds.classes)
    figures = {
        "test_flows": len(split.test),
        "in_profile_share": round(float(inside.mean()), 4),
        "accuracy_in_profile": round(float((pred == labels)[inside].mean()), 4),
        "accuracy_out_of_profile": round(float((pred == labels)[~inside].mean()), 4)
        if (~inside).any()
        else None,
        "accepted_share_threshold_only": round(float(sure.mean()), 4),
        "accepted_share": round(float(kept.mean()), 4),
        "macro_f1_accepted": round(report.macro_f1, 4),
        "accuracy_accepted": round(report.accuracy, 4),
    }
    return doc, figures


__all__ = ["MIN_FLOWS", "QUANTILE", "distance", "fit_and_measure", "fit_hidden_profiles"]
