"""Temperature scaling and the confidence + attribution refinement rules."""

from __future__ import annotations

import numpy as np

from amlhp.flows.calibration import expected_calibration_error, fit_temperature, softmax
from amlhp.flows.refine import (
    ACCEPTED,
    REFINED_CONTEXT,
    REFINED_SHAPLEY,
    UNCERTAIN,
    Refiner,
    fit_profiles,
    high_confidence_errors,
    refine,
)


def test_temperature_recovers_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    n, k = 4000, 5
    true_logits = rng.normal(0, 1.5, (n, k))
    p = softmax(true_logits)
    labels = np.array([rng.choice(k, p=row / row.sum()) for row in p.astype(np.float64)])
    shown = true_logits * 3.0  # overconfident by a factor of 3
    t = fit_temperature(shown, labels)
    assert 2.4 < t < 3.7
    before = expected_calibration_error(softmax(shown), labels)
    after = expected_calibration_error(softmax(shown, t), labels)
    assert after < before / 2
    assert (softmax(shown, t).argmax(1) == shown.argmax(1)).all()


def _refiner() -> Refiner:
    # two groups; class 0 relies on group 0, class 1 on group 1, class 2 has no profile
    profiles = np.array([[1.0, 0.0], [0.0, 1.0], [np.nan, np.nan]], np.float32)
    radius = np.array([0.5, 0.5, np.nan], np.float32)
    return Refiner(temperature=1.0, threshold=0.6, profiles=profiles, radius=radius)


def test_refinement_statuses() -> None:
    probs = np.array(
        [
            [0.9, 0.05, 0.05],  # confident, attributions like class 0: accepted
            [0.7, 0.25, 0.05],  # class 0 for class 1's reasons; class 1 fits: refined
            [0.4, 0.3, 0.3],  # low confidence, consistent, device has history: context
            [0.4, 0.3, 0.3],  # same on another device without history: uncertain
        ],
        np.float32,
    )
    phi = np.zeros((4, 2, 3), np.float32)
    phi[0, :, 0] = [0.3, 0.0]
    phi[1, :, 0] = [0.0, 0.3]
    phi[1, :, 1] = [0.0, 0.2]
    phi[2, :, 0] = [0.2, 0.01]
    phi[3, :, 0] = [0.2, 0.01]
    device = np.array([0, 0, 0, 1])
    start = np.array([0, 1, 2, 3])
    out = refine(_refiner(), probs, phi, device, start)
    assert out.status == [ACCEPTED, REFINED_SHAPLEY, REFINED_CONTEXT, UNCERTAIN]
    assert out.labels.tolist() == [0, 1, 0, 0]
    assert out.consistent.tolist() == [True, False, True, True]
    labels = np.array([0, 1, 0, 2])
    wrong_sure = high_confidence_errors(
        labels, probs.argmax(1), probs.max(1), np.ones(4, bool), 0.65
    )
    assert wrong_sure == 1  # flow 1 was a confident mistake before refinement
    assert high_confidence_errors(labels, out.labels, out.confidence, out.accepted, 0.65) == 0


def test_profiles_from_right_verdicts_only() -> None:
    phi = np.zeros((5, 2, 2), np.float32)
    phi[:3, :, 0] = np.array([[1, 0], [0.8, 0.2], [0.9, 0.1]])
    phi[3:, :, 1] = np.array([[0, 1], [0, 1]])
    pred = np.array([0, 0, 0, 1, 1])
    labels = np.array([0, 0, 0, 1, 0])
    profiles, radius = fit_profiles(phi, pred, labels, 2)
    np.testing.assert_allclose(profiles[0], [0.9, 0.1], atol=1e-6)
    assert np.isnan(radius[1])  # one right verdict is not a profile
    assert radius[0] > 0
