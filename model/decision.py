"""From class logits to what an operator acts on: a calibrated score and a three-way decision.

The network names a class; an operator needs "is this packet malicious, and how sure are
we". Two numbers are derived from a packet's class logits:

* the malicious log-odds ``z = logsumexp(attack logits) - logsumexp(benign logits)``,
  turned into ``malicious_score = sigmoid(a * z + b)`` (Platt scaling). ``a`` and ``b`` are
  fitted on predictions for *sources a model was not trained on* (the leave-one-source-out
  folds of :mod:`amlhp.model.cross_source`), because calibration on the training
  networks says nothing about a new one;
* the energy ``-logsumexp(logits)`` (Liu et al., 2020), high for inputs unlike the
  training data: above ``energy_max`` (a quantile of in-distribution energies) a packet
  is out of distribution.

The decision is ``uncertain`` when the packet is out of distribution or its score falls in
the band ``[benign_below, malicious_at)``, otherwise ``malicious`` or ``benign``: the
confidence idea of the flow-sequence seed applied to packets. The attack class stays as
context. An artifact without a ``decision`` block gets :data:`UNCALIBRATED`: the raw
malicious probability, a 0.5 cut and no ``uncertain``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from amlhp.model.exceptions import ModelError

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: decision codes, in the order of the verdict schema's dictionary
DECISIONS: tuple[str, ...] = ("benign", "malicious", "uncertain")
#: the decision of a verdict row the model did not score (an ARP frame, read by the
#: behaviour detectors only)
NOT_SCORED = "not_scored"
BENIGN, MALICIOUS, UNCERTAIN = 0, 1, 2


def is_benign_class(name: str) -> bool:
    """Benign classes are ``benign`` or start with it (``benign_iot``...); the rest attack."""
    return name == "benign" or name.startswith("benign_")


def benign_mask(classes: list[str]) -> BoolArray:
    return np.array([is_benign_class(c) for c in classes], dtype=bool)


def _logsumexp(x: FloatArray, axis: int = 1) -> FloatArray:
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.squeeze(top, axis) + np.log(np.sum(np.exp(x - top), axis=axis))


def log_odds(logits: npt.ArrayLike, benign: BoolArray) -> FloatArray:
    """Malicious log-odds per row of (N, K) logits: attack mass against benign mass.

    A model without benign classes calls everything malicious (+inf), one without attack
    classes nothing (-inf).
    """
    x = np.asarray(logits, dtype=np.float64)
    n = x.shape[0]
    attack = _logsumexp(x[:, ~benign]) if (~benign).any() else np.full(n, -np.inf)
    normal = _logsumexp(x[:, benign]) if benign.any() else np.full(n, -np.inf)
    with np.errstate(invalid="ignore"):
        return attack - normal


def energy(logits: npt.ArrayLike) -> FloatArray:
    """Free energy ``-logsumexp(logits)`` per row: higher means less like the training data."""
    return -_logsumexp(np.asarray(logits, dtype=np.float64))


def softmax(logits: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Class probabilities of (N, K) logits, computed in float64: ``exp(x - logsumexp(x))``."""
    x = np.asarray(logits, dtype=np.float64)
    return np.exp(x + energy(x)[:, None]).astype(np.float32)


def sigmoid(x: FloatArray) -> FloatArray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def fit_platt(
    z: npt.ArrayLike, y: npt.ArrayLike, weights: npt.ArrayLike | None = None, *, l2: float = 1e-6
) -> tuple[float, float]:
    """``(a, b)`` minimising the weighted log loss of ``sigmoid(a z + b)`` (damped Newton).

    ``y`` is 1 for malicious packets. ``weights`` let every (source, benign/attack) group
    count the same whatever its size. A tiny ridge keeps separable data finite.
    """
    zz = np.asarray(z, dtype=np.float64)
    yy = np.asarray(y, dtype=np.float64)
    w = np.ones_like(zz) if weights is None else np.asarray(weights, dtype=np.float64)
    if zz.size == 0 or len({float(v) for v in np.unique(yy)}) < 2:
        raise ModelError("calibration needs malicious and benign packets")
    w = w / w.sum()
    X = np.stack([zz, np.ones_like(zz)], axis=1)

    def loss(t: FloatArray) -> float:
        m = X @ t
        # log(1 + e^m) - y m, stable for large |m|
        return float(np.sum(w * (np.logaddexp(0.0, m) - yy * m)) + 0.5 * l2 * t @ t)

    theta = np.array([1.0, 0.0])
    current = loss(theta)
    for _ in range(100):
        p = sigmoid(X @ theta)
        grad = X.T @ (w * (p - yy)) + l2 * theta
        hess = (X * (w * p * (1 - p))[:, None]).T @ X + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-6 and loss(theta - scale * step) > current:
            scale /= 2  # damped Newton: never increase the loss
        theta = theta - scale * step
        previous, current = current, loss(theta)
        if np.max(np.abs(scale * step)) < 1e-9 or previous - current < 1e-15:
            break
    return float(theta[0]), float(theta[1])


def expected_calibration_error(
    score: npt.ArrayLike, y: npt.ArrayLike, bins: int = 15, weights: npt.ArrayLike | None = None
) -> float:
    """ECE of a binary score: the weighted mean of |accuracy - confidence| over equal bins."""
    s = np.asarray(score, dtype=np.float64)
    yy = np.asarray(y, dtype=np.float64)
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=np.float64)
    if s.size == 0:
        return float("nan")
    idx = np.minimum((s * bins).astype(np.int64), bins - 1)
    total = w.sum()
    ece = 0.0
    for b in range(bins):
        in_bin = idx == b
        mass = w[in_bin].sum()
        if mass > 0:
            gap = abs(
                np.average(yy[in_bin], weights=w[in_bin]) - np.average(s[in_bin], weights=w[in_bin])
            )
            ece += mass / total * gap
    return float(ece)


@dataclass(frozen=True)
class Assessment:
    """What a model says about N packets: class, probabilities, score, OOD score, decision."""

    class_ids: npt.NDArray[np.int64]
    probs: npt.NDArray[np.float32]
    malicious_score: npt.NDArray[np.float32]
    ood_score: npt.NDArray[np.float32]
    decision: npt.NDArray[np.int8]

    def __len__(self) -> int:
        return int(self.class_ids.shape[0])

    @classmethod
    def empty(cls, k: int) -> Assessment:
        return cls(
            np.zeros(0, np.int64),
            np.zeros((0, k), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int8),
        )

    def take(self, rows: npt.NDArray[np.int64]) -> Assessment:
        """The assessment of some of the rows, in the order given."""
        return Assessment(
            self.class_ids[rows], self.probs[rows], self.malicious_score[rows],
            self.ood_score[rows], self.decision[rows],
        )  # fmt: skip

    @classmethod
    def concat(cls, parts: list[Assessment], k: int) -> Assessment:
        """The assessments of consecutive chunks as one (``k`` classes if there are none)."""
        if not parts:
            return cls.empty(k)
        if len(parts) == 1:
            return parts[0]
        return cls(
            np.concatenate([p.class_ids for p in parts]),
            np.concatenate([p.probs for p in parts]),
            np.concatenate([p.malicious_score for p in parts]),
            np.concatenate([p.ood_score for p in parts]),
            np.concatenate([p.decision for p in parts]),
        )


@dataclass(frozen=True)
class DecisionPolicy:
    """Platt parameters, the out-of-distribution cut and the uncertain band of a model."""

    platt_a: float = 1.0
    platt_b: float = 0.0
    energy_max: float | None = None
    malicious_at: float = 0.5
    benign_below: float = 0.5
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.benign_below <= self.malicious_at <= 1.0:
            raise ModelError(
                f"decision band must satisfy 0 <= benign_below ({self.benign_below}) <= "
                f"malicious_at ({self.malicious_at}) <= 1"
            )
        if not (math.isfinite(self.platt_a) and math.isfinite(self.platt_b)):
            raise ModelError("Platt parameters must be finite")

    def score(self, z: npt.ArrayLike) -> FloatArray:
        """Calibrated probability that each packet is malicious."""
        return sigmoid(self.platt_a * np.asarray(z, dtype=np.float64) + self.platt_b)

    def out_of_distribution(self, energies: npt.ArrayLike) -> BoolArray:
        e = np.asarray(energies, dtype=np.float64)
        if self.energy_max is None:
            return np.zeros(e.shape, dtype=bool)
        return e > self.energy_max

    def decide(self, score: npt.ArrayLike, energies: npt.ArrayLike) -> npt.NDArray[np.int8]:
        """Decision codes (:data:`DECISIONS`) for calibrated scores and energies."""
        s = np.asarray(score, dtype=np.float64)
        out = np.full(s.shape, UNCERTAIN, dtype=np.int8)
        ood = self.out_of_distribution(energies)
        out[(s >= self.malicious_at) & ~ood] = MALICIOUS
        out[(s < self.benign_below) & ~ood] = BENIGN
        return out

    def assess(self, logits: npt.ArrayLike, benign: BoolArray) -> Assessment:
        """The whole assessment of (N, K) class logits (``benign`` marks benign classes)."""
        x = np.asarray(logits, dtype=np.float64)
        if x.shape[0] == 0:
            return Assessment.empty(x.shape[1] if x.ndim == 2 else benign.size)
        e = energy(x)
        probs = np.exp(x + e[:, None])
        score = self.score(log_odds(x, benign))
        return Assessment(
            probs.argmax(axis=1).astype(np.int64),
            probs.astype(np.float32),
            score.astype(np.float32),
            e.astype(np.float32),
            self.decide(score, e),
        )

    def with_band(self, benign_below: float, malicious_at: float) -> DecisionPolicy:
        return replace(self, benign_below=benign_below, malicious_at=malicious_at)

    def to_meta(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["provenance"] = dict(self.provenance)
        return doc

    @classmethod
    def from_meta(cls, doc: Mapping[str, Any] | None) -> DecisionPolicy:
        """The policy an artifact's ``decision`` block describes (:data:`UNCALIBRATED` if none)."""
        if not doc:
            return UNCALIBRATED
        try:
            return cls(
                platt_a=float(doc["platt_a"]),
                platt_b=float(doc["platt_b"]),
                energy_max=None if doc.get("energy_max") is None else float(doc["energy_max"]),
                malicious_at=float(doc["malicious_at"]),
                benign_below=float(doc["benign_below"]),
                provenance=dict(doc.get("provenance", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"artifact decision block is malformed: {exc}") from exc


UNCALIBRATED = DecisionPolicy(provenance={"calibrated": False})
