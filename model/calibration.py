"""Calibrate the malicious score and choose the decision band on sources a model never saw.

Every fold of the leave-one-source-out protocol leaves behind what its model said about the
held-out source (:class:`FoldPredictions`: malicious log-odds, energy, truth) and the
energies of its own validation packets (in distribution). Pooled, those folds are a sample
of "a model of this recipe meets a new network", which is what the calibration must fit:

* :func:`fit_policy` fits Platt scaling and picks the band on a set of folds, benign and
  attack packets half each and every source the same within its half, so one large
  capture does not decide;
* :func:`leave_one_fold_out` reports each fold under a policy fitted on the *other* folds
  only, so the figures in the table are honest (no fold calibrates itself);
* the policy shipped with the default model takes Platt and band from all folds and the
  energy cut from the default model's own validation energies (energies are per model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from amlhp.model.decision import (
    BENIGN,
    MALICIOUS,
    UNCALIBRATED,
    UNCERTAIN,
    DecisionPolicy,
    expected_calibration_error,
    fit_platt,
    sigmoid,
)
from amlhp.model.exceptions import ModelError

FloatArray = npt.NDArray[np.float64]

#: share of benign packets of a new network that may be *called malicious* (goal: 0.01)
ALARM_TARGET = 0.01
#: share of benign packets that may be flagged at all (malicious or uncertain)
BENIGN_FLAG_BUDGET = 0.05
#: in-distribution validation packets above this energy quantile are out of distribution
ENERGY_QUANTILE = 0.999
_GRID = np.round(np.concatenate([np.arange(0.05, 0.95, 0.01), np.arange(0.95, 1.0, 0.001)]), 4)


@dataclass(frozen=True)
class FoldPredictions:
    """What one fold's model said about its held-out source."""

    source: str
    z: FloatArray
    energy: FloatArray
    malicious: npt.NDArray[np.bool_]
    val_energy: FloatArray
    #: true class ids (of the run's class list), for per-class decision shares
    labels: npt.NDArray[np.int64] | None = None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {
            "z": self.z.astype(np.float32),
            "energy": self.energy.astype(np.float32),
            "malicious": self.malicious,
            "val_energy": self.val_energy.astype(np.float32),
        }
        if self.labels is not None:
            arrays["labels"] = self.labels.astype(np.int16)
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> FoldPredictions:
        with np.load(path, allow_pickle=False) as doc:
            return cls(
                path.stem,
                doc["z"].astype(np.float64),
                doc["energy"].astype(np.float64),
                doc["malicious"].astype(bool),
                doc["val_energy"].astype(np.float64),
                doc["labels"].astype(np.int64) if "labels" in doc.files else None,
            )

    def energy_max(self, quantile: float = ENERGY_QUANTILE) -> float:
        return float(np.quantile(self.val_energy, quantile))


def load_folds(directory: Path) -> list[FoldPredictions]:
    files = sorted(directory.glob("*.npz"))
    if not files:
        raise ModelError(f"no fold predictions (*.npz) under {directory}")
    return [FoldPredictions.load(f) for f in files]


def _pooled(folds: Sequence[FoldPredictions]) -> tuple[FloatArray, FloatArray, Any, FloatArray]:
    """z, energy-over-own-cut, truth and weights.

    Benign and malicious packets weigh half each, and within each half every source weighs
    the same: the calibrated score is the probability at even odds, whatever the base rate
    of attacks in the sources at hand, and no single large capture decides it.
    """
    zs, over, ys, ws = [], [], [], []
    groups = {label: sum(bool((f.malicious == label).any()) for f in folds) for label in (0, 1)}
    for fold in folds:
        cut = fold.energy_max()
        for label in (False, True):
            rows = fold.malicious == label
            n = int(rows.sum())
            if n == 0:
                continue
            zs.append(fold.z[rows])
            over.append(fold.energy[rows] - cut)
            ys.append(np.full(n, label))
            ws.append(np.full(n, 1.0 / (n * groups[int(label)])))
    if not zs:
        raise ModelError("no fold predictions to calibrate on")
    return np.concatenate(zs), np.concatenate(over), np.concatenate(ys), np.concatenate(ws)


def _share(mask: Any, weights: FloatArray, groups: Any) -> float:
    """Mean over the sources in ``groups`` of the share of ``mask`` (sources weigh the same)."""
    total = weights[groups].sum()
    return float((weights[groups] * mask[groups]).sum() / total) if total else 0.0


def fit_policy(
    folds: Sequence[FoldPredictions],
    *,
    alarm_target: float = ALARM_TARGET,
    benign_flag_budget: float = BENIGN_FLAG_BUDGET,
    use_energy: bool = True,
) -> DecisionPolicy:
    """Platt scaling and band from held-out-source predictions (energy cut: 0 offset).

    ``malicious_at`` is the lowest score at which, on average over the benign groups, at
    most ``alarm_target`` of benign packets are called malicious; ``benign_below`` the
    lowest score at which at most ``benign_flag_budget`` are flagged at all (malicious,
    uncertain or out of distribution). The returned policy's ``energy_max`` is 0: energies
    here are offsets from each fold's own cut; :meth:`DecisionPolicy` users replace it
    with a model's own cut (:func:`for_model`).
    """
    z, over, y, w = _pooled(folds)
    a, b = fit_platt(z, y, w)
    score = sigmoid(a * z + b)
    ood = (over > 0) if use_energy else np.zeros(z.shape, dtype=bool)
    benign = ~y
    malicious_at = float(_GRID[-1])
    for t in _GRID:
        if _share((score >= t) & ~ood, w, benign) <= alarm_target:
            malicious_at = float(t)
            break
    benign_below = malicious_at
    for t in _GRID[np.less_equal(_GRID, malicious_at)]:
        if _share((score >= t) | ood, w, benign) <= benign_flag_budget:
            benign_below = float(t)
            break
    return DecisionPolicy(
        platt_a=a,
        platt_b=b,
        energy_max=0.0 if use_energy else None,
        malicious_at=malicious_at,
        benign_below=benign_below,
        provenance={
            "calibrated": True,
            "method": "platt on held-out-source folds; benign/attack halves, sources equal",
            "folds": sorted(f.source for f in folds),
            "alarm_target": alarm_target,
            "benign_flag_budget": benign_flag_budget,
            "energy_quantile": ENERGY_QUANTILE if use_energy else None,
            "ece": round(expected_calibration_error(score, y, weights=w), 4),
        },
    )


def for_model(policy: DecisionPolicy, val_energy: FloatArray | None) -> DecisionPolicy:
    """The policy with a model's own out-of-distribution cut (from its validation energies)."""
    from dataclasses import replace

    if policy.energy_max is None or val_energy is None:
        return replace(policy, energy_max=None)
    return replace(policy, energy_max=float(np.quantile(val_energy, ENERGY_QUANTILE)))


def fold_figures(
    fold: FoldPredictions, policy: DecisionPolicy, classes: Sequence[str] | None = None
) -> dict[str, Any]:
    """Decision shares on one fold under a policy fitted without it (per class as well
    when the fold has its labels and ``classes`` names them)."""
    own = for_model(policy, fold.val_energy)
    score = own.score(fold.z)
    decision = own.decide(score, fold.energy)
    out: dict[str, Any] = {"source": fold.source, "packets": int(fold.z.size)}
    for name, rows in (("benign", ~fold.malicious), ("attack", fold.malicious)):
        n = int(rows.sum())
        out[f"{name}_packets"] = n
        if n == 0:
            continue
        d = decision[rows]
        out[f"{name}_called_malicious"] = round(float(np.mean(d == MALICIOUS)), 4)
        out[f"{name}_uncertain"] = round(float(np.mean(d == UNCERTAIN)), 4)
        out[f"{name}_called_benign"] = round(float(np.mean(d == BENIGN)), 4)
        out[f"{name}_out_of_distribution"] = round(
            float(np.mean(own.out_of_distribution(fold.energy[rows]))), 4
        )
    if fold.labels is not None and classes is not None:
        out["per_class"] = {
            classes[c]: {
                "packets": int((fold.labels == c).sum()),
                "called_malicious": round(
                    float(np.mean(decision[fold.labels == c] == MALICIOUS)), 4
                ),
                "uncertain": round(float(np.mean(decision[fold.labels == c] == UNCERTAIN)), 4),
            }
            for c in np.unique(fold.labels)
        }
    return out


def leave_one_fold_out(
    folds: Sequence[FoldPredictions], classes: Sequence[str] | None = None, **fit: Any
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, Any]]:
    """Each fold under a policy fitted on the others; the policy fitted on all; the ECE.

    Where the other folds lack benign or attack packets no policy can be fitted: that
    fold is reported under :data:`UNCALIBRATED` (raw probability, 0.5 cut), said so in
    its ``policy``; likewise the pooled policy is None when all folds together lack one.
    The expected calibration error is that of the out-of-fold scores of all folds pooled
    (weighted as in the fit), beside that of the raw malicious probability: a fold
    holding one kind of packet has no calibration error of its own to speak of.
    """
    rows = []
    scores: list[FloatArray] = []
    for i, fold in enumerate(folds):
        others = [f for j, f in enumerate(folds) if j != i]
        try:
            policy = fit_policy(others, **fit)
            band: dict[str, Any] = _band(policy)
        except ModelError as exc:
            policy, band = UNCALIBRATED, {"calibrated": False, "why": str(exc)}
        figures = fold_figures(fold, policy, classes)
        scores.append(policy.score(fold.z))
        rows.append({**figures, "policy": band})
    try:
        pooled: dict[str, Any] | None = fit_policy(folds, **fit).to_meta()
    except ModelError:
        pooled = None
    return rows, pooled, _pooled_ece(folds, scores)


def _pooled_ece(folds: Sequence[FoldPredictions], scores: list[FloatArray]) -> dict[str, Any]:
    """ECE of out-of-fold scores and of the raw probability, rows in :func:`_pooled` order."""
    z, _, y, w = _pooled(folds)
    out_of_fold = np.concatenate(
        [s[f.malicious == label] for f, s in zip(folds, scores, strict=True) for label in (0, 1)]
    )
    return {
        "out_of_fold": round(expected_calibration_error(out_of_fold, y, weights=w), 4),
        "raw": round(expected_calibration_error(sigmoid(z), y, weights=w), 4),
        "weighting": "benign and attack halves, sources equal within each",
    }


def _band(policy: DecisionPolicy) -> dict[str, float]:
    return {
        "platt_a": round(policy.platt_a, 4),
        "platt_b": round(policy.platt_b, 4),
        "benign_below": policy.benign_below,
        "malicious_at": policy.malicious_at,
    }
