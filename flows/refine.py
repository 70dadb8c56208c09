"""Refining verdicts with calibrated confidence and Shapley attributions.

What the paper's abstract says ("confidence scores and Shapley values ... refine the
predictions") is made concrete here; every parameter is fitted on the validation split.

*Attribution profile* of a class: the mean, over validation flows the model got right with
that class, of the L1-normalised attribution vector (group Shapley values for the predicted
class, see :mod:`amlhp.flows.shapley`). Its *radius* is the 95th percentile of the L1
distances of those flows to the profile. A verdict is *consistent* when its normalised
attribution lies within its class's radius: the model said "HueBridge" for the reasons it
usually does. Classes with fewer than 3 right validation flows have no profile, and their
verdicts count as consistent.

Per flow, in time order per device:

1. ``accepted``: calibrated confidence >= threshold and consistent: the verdict stands.
2. ``refined_shapley``: inconsistent, and another of the three most probable classes is
   consistent with its own profile (for its own attributions, which the exact Shapley
   evaluation gives for every class at once): that class, the one nearest to its profile.
3. ``refined_context``: otherwise, if the device has accepted verdicts earlier: the most
   common of them (a device does not change type between flows; for attack labels this is
   a weaker prior, reported as it is).
4. ``uncertain``: otherwise the model's argmax, marked uncertain.

Only ``accepted`` verdicts are shown as confident. A *high-confidence misclassification*
is a wrong verdict shown with confidence >= ``high_confidence`` (0.9): before refinement,
the raw softmax of every verdict; after, the calibrated confidence of accepted verdicts.
The threshold is chosen on validation as the value of a small grid that maximises the
refined macro F1.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from amlhp.model.metrics import classification_report

ACCEPTED: Final = "accepted"
REFINED_SHAPLEY: Final = "refined_shapley"
REFINED_CONTEXT: Final = "refined_context"
UNCERTAIN: Final = "uncertain"
STATUSES: Final = (ACCEPTED, REFINED_SHAPLEY, REFINED_CONTEXT, UNCERTAIN)
THRESHOLD_GRID: Final = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MIN_PROFILE_FLOWS: Final = 3

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


def normalise(attr: npt.ArrayLike) -> FloatArray:
    """Attribution vectors (..., G) scaled to unit L1 norm (zero vectors stay zero)."""
    a = np.asarray(attr, np.float32)
    norm = np.abs(a).sum(axis=-1, keepdims=True)
    return np.divide(a, norm, out=np.zeros_like(a), where=norm > 1e-12)


@dataclass
class Refiner:
    """Fitted refinement parameters (stored in the flow model artifact)."""

    temperature: float
    threshold: float
    profiles: FloatArray  # (K, G); rows of NaN where a class has no profile
    radius: FloatArray  # (K,); NaN where no profile
    high_confidence: float = 0.9

    def as_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "threshold": self.threshold,
            "high_confidence": self.high_confidence,
            "profiles": np.nan_to_num(self.profiles, nan=-99.0).tolist(),
            "radius": np.nan_to_num(self.radius, nan=-99.0).tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Refiner:
        profiles = np.asarray(d["profiles"], np.float32)
        radius = np.asarray(d["radius"], np.float32)
        profiles[profiles == -99.0] = np.nan
        radius[radius == -99.0] = np.nan
        return cls(
            temperature=float(d["temperature"]),
            threshold=float(d["threshold"]),
            profiles=profiles,
            radius=radius,
            high_confidence=float(d.get("high_confidence", 0.9)),
        )

    def distance(self, phi: FloatArray, classes: IntArray) -> FloatArray:
        """Distance / radius of each flow's attributions (phi (N, G, K)) for ``classes``;
        0 where the class has no profile."""
        n = phi.shape[0]
        a = normalise(phi[np.arange(n), :, classes])
        prof = self.profiles[classes]
        rad = self.radius[classes]
        d = np.abs(a - prof).sum(axis=1)
        has = np.isfinite(rad)
        return np.where(has, d / np.where(has & (rad > 0), rad, 1.0), 0.0).astype(np.float32)

    def consistent(self, phi: FloatArray, classes: IntArray) -> npt.NDArray[np.bool_]:
        return self.distance(phi, classes) <= 1.0


def fit_profiles(
    phi: FloatArray, pred: IntArray, labels: IntArray, k: int, quantile: float = 0.95
) -> tuple[FloatArray, FloatArray]:
    """Per class: mean normalised attribution of right verdicts, and its radius."""
    g = phi.shape[1]
    profiles = np.full((k, g), np.nan, np.float32)
    radius = np.full(k, np.nan, np.float32)
    right = pred == labels
    for c in range(k):
        rows = np.flatnonzero(right & (pred == c))
        if rows.size < MIN_PROFILE_FLOWS:
            continue
        a = normalise(phi[rows, :, c])
        profiles[c] = a.mean(axis=0)
        radius[c] = float(np.quantile(np.abs(a - profiles[c]).sum(axis=1), quantile))
    return profiles, radius


@dataclass
class Refined:
    """Verdicts after refinement, and how each was reached."""

    labels: IntArray
    confidence: FloatArray  # calibrated confidence of the final class
    status: list[str]
    consistent: npt.NDArray[np.bool_]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def accepted(self) -> npt.NDArray[np.bool_]:
        return np.asarray([s == ACCEPTED for s in self.status], np.bool_)


def refine(
    refiner: Refiner,
    probs: FloatArray,
    phi: FloatArray,
    device: IntArray,
    start_ns: IntArray,
    threshold: float | None = None,
) -> Refined:
    """Apply the procedure of the module docstring to calibrated ``probs`` (N, K) and
    attributions ``phi`` (N, G, K) of flows with their devices and start times."""
    tau = refiner.threshold if threshold is None else threshold
    n, k = probs.shape
    pred = probs.argmax(axis=1).astype(np.int64)
    conf = probs[np.arange(n), pred]
    consistent = refiner.consistent(phi, pred)
    top = np.argsort(-probs, axis=1)[:, : min(3, k)]
    dist_top = np.stack([refiner.distance(phi, top[:, j]) for j in range(top.shape[1])], axis=1)
    has_profile = np.isfinite(refiner.radius)
    final = pred.copy()
    status = [UNCERTAIN] * n
    history: dict[int, Counter[int]] = defaultdict(Counter)
    for i in np.lexsort((np.arange(n), start_ns, device)):
        dev = int(device[i])
        if conf[i] >= tau and consistent[i]:
            status[i] = ACCEPTED
            history[dev][int(pred[i])] += 1
            continue
        if not consistent[i]:
            options = [
                (float(dist_top[i, j]), int(top[i, j]))
                for j in range(top.shape[1])
                if top[i, j] != pred[i] and has_profile[top[i, j]] and dist_top[i, j] <= 1.0
            ]
            if options:
                final[i] = min(options)[1]
                status[i] = REFINED_SHAPLEY
                continue
        if history[dev]:
            final[i] = history[dev].most_common(1)[0][0]
            status[i] = REFINED_CONTEXT
    counts = Counter(status)
    return Refined(
        labels=final,
        confidence=probs[np.arange(n), final].astype(np.float32),
        status=status,
        consistent=consistent,
        counts={s: int(counts.get(s, 0)) for s in STATUSES},
    )


def choose_threshold(
    refiner: Refiner,
    probs: FloatArray,
    phi: FloatArray,
    labels: IntArray,
    device: IntArray,
    start_ns: IntArray,
    classes: list[str],
) -> float:
    """The grid threshold with the best refined macro F1 on these (validation) flows."""
    best, best_f1 = THRESHOLD_GRID[0], -1.0
    for tau in THRESHOLD_GRID:
        out = refine(refiner, probs, phi, device, start_ns, threshold=tau)
        f1 = classification_report(labels, out.labels, classes).macro_f1
        if f1 > best_f1 + 1e-9:
            best, best_f1 = tau, f1
    return best


def high_confidence_errors(
    labels: IntArray, pred: IntArray, confidence: FloatArray, shown: npt.NDArray[np.bool_], h: float
) -> int:
    """Wrong verdicts shown (``shown``) with confidence >= h."""
    return int(np.sum((pred != labels) & shown & (confidence >= h)))
