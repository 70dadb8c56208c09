"""Calibrated confidence: temperature scaling fitted on the validation split.

One scalar T divides the logits; T is the value that minimises the negative log-likelihood
of the validation labels (a log-spaced grid from 0.05 to 20, fine enough that the NLL is
flat around the pick). Temperature scaling never changes the argmax, only how sure the
model claims to be, so accuracy is untouched and "confidence 0.9" comes to mean "right
about nine times in ten" on data like the validation split (the expected calibration
error, ECE, measures how far from that it is).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


def softmax(logits: npt.ArrayLike, temperature: float = 1.0) -> FloatArray:
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def nll(logits: npt.ArrayLike, labels: npt.NDArray[np.int64], temperature: float) -> float:
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: npt.ArrayLike, labels: npt.NDArray[np.int64]) -> float:
    """The temperature minimising validation NLL (1.0 when there is nothing to fit on)."""
    if len(labels) == 0:
        return 1.0
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 241))
    losses = [nll(logits, labels, float(t)) for t in grid]
    return float(grid[int(np.argmin(losses))])


def expected_calibration_error(
    probs: npt.ArrayLike, labels: npt.NDArray[np.int64], bins: int = 15
) -> float:
    """ECE: |accuracy - confidence| averaged over equal-width confidence bins."""
    p = np.asarray(probs, np.float64)
    if p.shape[0] == 0:
        return 0.0
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)
