"""The decision layer: calibration on a held-out split, the three-way decision, the policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from amlhp.model.calibration import (
    FoldPredictions,
    fit_policy,
    fold_figures,
    leave_one_fold_out,
    load_folds,
)
from amlhp.model.decision import (
    BENIGN,
    MALICIOUS,
    UNCALIBRATED,
    UNCERTAIN,
    DecisionPolicy,
    benign_mask,
    energy,
    expected_calibration_error,
    fit_platt,
    log_odds,
    sigmoid,
)
from amlhp.model.exceptions import ModelError


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Log-odds 3x too large (an over-confident network): truth ~ sigmoid(z / 3 - 0.5)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 6.0, n)
    y = rng.random(n) < sigmoid(z / 3.0 - 0.5)
    return z, y


def test_platt_recovers_the_true_scaling_and_calibrates_a_held_out_split() -> None:
    z, y = _overconfident(40_000, seed=1)
    fit_z, fit_y, test_z, test_y = z[:20_000], y[:20_000], z[20_000:], y[20_000:]
    a, b = fit_platt(fit_z, fit_y)
    assert a == pytest.approx(1 / 3, abs=0.03)
    assert b == pytest.approx(-0.5, abs=0.06)
    raw = expected_calibration_error(sigmoid(test_z), test_y)
    calibrated = expected_calibration_error(sigmoid(a * test_z + b), test_y)
    assert calibrated < 0.02 < raw


def test_expected_calibration_error_of_perfect_and_of_wrong_scores() -> None:
    rng = np.random.default_rng(2)
    p = rng.random(50_000)
    y = rng.random(50_000) < p
    assert expected_calibration_error(p, y) < 0.01
    assert expected_calibration_error(np.full(1000, 0.9), np.zeros(1000)) == pytest.approx(0.9)


def test_platt_needs_both_kinds_of_packet() -> None:
    with pytest.raises(ModelError, match="malicious and benign"):
        fit_platt(np.array([1.0, 2.0]), np.array([True, True]))


def test_the_three_way_decision() -> None:
    policy = DecisionPolicy(energy_max=-2.0, benign_below=0.3, malicious_at=0.8)
    score = np.array([0.95, 0.1, 0.5, 0.95, 0.1, 0.8, 0.3])
    energies = np.array([-5.0, -5.0, -5.0, -1.0, -1.0, -2.0, -2.0])
    assert policy.decide(score, energies).tolist() == [
        MALICIOUS,
        BENIGN,
        UNCERTAIN,  # between the thresholds
        UNCERTAIN,  # sure, but unlike the training data
        UNCERTAIN,
        MALICIOUS,  # on the cuts: malicious_at is inclusive, energy_max too
        UNCERTAIN,  # benign_below is exclusive
    ]
    assert UNCALIBRATED.decide(np.array([0.49, 0.5]), np.zeros(2)).tolist() == [BENIGN, MALICIOUS]


def test_assessment_of_logits() -> None:
    classes = ["benign", "syn", "scan"]
    logits = np.array([[4.0, 0.0, 0.0], [0.0, 3.0, 3.0], [0.0, 0.0, 0.0]])
    policy = DecisionPolicy(platt_a=1.0, platt_b=0.0, benign_below=0.4, malicious_at=0.6)
    a = policy.assess(logits, benign_mask(classes))
    assert a.class_ids.tolist()[:2] == [0, 1]
    assert np.allclose(a.probs.sum(axis=1), 1.0)
    expected_z = np.log(np.exp(logits[:, 1:]).sum(axis=1)) - logits[:, 0]
    assert np.allclose(log_odds(logits, benign_mask(classes)), expected_z)
    assert np.allclose(a.malicious_score, sigmoid(expected_z), atol=1e-6)
    assert np.allclose(a.ood_score, energy(logits), atol=1e-5)
    assert a.decision.tolist() == [BENIGN, MALICIOUS, MALICIOUS]  # 2/3 attack mass: 0.67
    assert len(policy.assess(np.zeros((0, 3)), benign_mask(classes))) == 0


def test_a_model_without_benign_classes_calls_everything_malicious() -> None:
    a = UNCALIBRATED.assess(np.array([[1.0, 2.0]]), benign_mask(["syn", "scan"]))
    assert a.malicious_score.tolist() == [1.0]
    assert a.decision.tolist() == [MALICIOUS]


def test_policy_round_trips_through_artifact_metadata_and_refuses_bad_blocks() -> None:
    policy = DecisionPolicy(1.5, -0.2, -3.0, 0.9, 0.4, {"calibrated": True})
    assert DecisionPolicy.from_meta(policy.to_meta()) == policy
    assert DecisionPolicy.from_meta(None) is UNCALIBRATED
    with pytest.raises(ModelError, match="malformed"):
        DecisionPolicy.from_meta({"platt_a": 1.0})
    with pytest.raises(ModelError, match="band"):
        DecisionPolicy(benign_below=0.9, malicious_at=0.5)


def _fold(source: str, seed: int, benign: int, attack: int, shift: float) -> FoldPredictions:
    rng = np.random.default_rng(seed)
    z = np.concatenate([rng.normal(-4.0 + shift, 2.0, benign), rng.normal(4.0, 2.0, attack)])
    e = rng.normal(-10.0, 1.0, benign + attack)
    truth = np.concatenate([np.zeros(benign, bool), np.ones(attack, bool)])
    return FoldPredictions(source, z, e, truth, rng.normal(-10.0, 1.0, 2000))


def test_policy_from_folds_meets_its_alarm_target_on_them(tmp_path: Path) -> None:
    folds = [
        _fold("a", 1, 5000, 0, 0.0),
        _fold("b", 2, 3000, 3000, 1.0),
        _fold("c", 3, 200, 8000, -1.0),
    ]
    for fold in folds:
        fold.save(tmp_path / f"{fold.source}.npz")
    loaded = load_folds(tmp_path)
    assert [f.source for f in loaded] == ["a", "b", "c"]
    assert np.allclose(loaded[1].z, folds[1].z, atol=1e-5)
    policy = fit_policy(loaded, alarm_target=0.01, benign_flag_budget=0.05)
    assert policy.benign_below <= policy.malicious_at
    assert policy.provenance["folds"] == ["a", "b", "c"]
    # groups weigh the same: the mean over benign groups of the false-alarm share
    alarms = [fold_figures(f, policy).get("benign_called_malicious") for f in loaded]
    assert np.mean([x for x in alarms if x is not None]) <= 0.011


def test_leave_one_fold_out_never_calibrates_a_fold_on_itself() -> None:
    folds = [_fold("a", 1, 3000, 3000, 0.0), _fold("b", 2, 3000, 3000, 3.0)]
    rows, pooled, ece = leave_one_fold_out(folds)
    assert 0.0 <= ece["out_of_fold"] <= 1.0
    assert [r["source"] for r in rows] == ["a", "b"]
    # fold a is judged by b's calibration and vice versa: the bands differ from the pooled
    only_b = fit_policy([folds[1]])
    assert rows[0]["policy"]["malicious_at"] == only_b.malicious_at
    assert pooled is not None
    assert pooled["provenance"]["folds"] == ["a", "b"]
    lone, _, _ = leave_one_fold_out([_fold("x", 4, 100, 0, 0.0), _fold("y", 5, 100, 0, 0.0)])
    assert lone[0]["policy"] == {"calibrated": False, "why": lone[0]["policy"]["why"]}
