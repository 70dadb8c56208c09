"""The attack flow model: its alarm, and leave-one-source-out figures.

The attack model is a flow CNN like the device model whose classes are the alert
stage's incident kinds plus ``benign`` (labels: ``model/labels/flow-attacks.yaml``). A
flow *raises the alarm* when its calibrated attack probability, ``1 - P(benign)``,
reaches the model's ``alarm`` threshold; its kind is then the most probable attack class.

The threshold is fitted on validation flows of the training sources only: the
``(1 - max_benign_share)`` quantile of their benign flows' attack probabilities, so
that at most that share of familiar benign flows raise it (rounded up, never below
``MIN_ALARM``). What a user gets on a network the model never saw is measured by
holding each source out in turn (:func:`leave_one_source_out`): the fold trains on the
other sources, fits its own temperature and threshold on them, and is judged on the
held-out source alone, so no published figure comes from a source that tuned it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from amlhp.flows.calibration import softmax
from amlhp.flows.dataset import FlowDataset, FlowSplit, split_flows
from amlhp.flows.exceptions import FlowDatasetError

if TYPE_CHECKING:  # training needs torch; serving imports this module without it
    from amlhp.flows.train import FlowTrainConfig

BENIGN: Final = "benign"
#: share of the training sources' benign validation flows allowed to raise the alarm
MAX_BENIGN_SHARE: Final = 0.005
#: share of a held-out source's benign flows allowed to raise the cross-source alarm
MAX_UNSEEN_SHARE: Final = 0.01
MIN_ALARM: Final = 0.5
#: train/validation shares of the training sources (no test side: the held-out source is)
FOLD_RATIOS: Final = (0.8, 0.1, 0.1)

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


def source_of(path: str) -> str:
    """The source a capture belongs to: its collection under ``data/public`` (one
    publisher's captures), else ``<parent>-<folder>`` (``var/lab/slow`` -> ``lab-slow``)."""
    parts = PurePath(path).parts
    if "public" in parts:
        i = len(parts) - 1 - parts[::-1].index("public")
        if i + 1 < len(parts) - 1:
            return parts[i + 1]
    parent = PurePath(path).parent
    return f"{parent.parent.name}-{parent.name}" if parent.parent.name else parent.name


def flow_sources(ds: FlowDataset) -> npt.NDArray[np.str_]:
    """The source of every flow of ``ds``."""
    by_file = np.asarray([source_of(f) for f in ds.files])
    return by_file[ds.file]


def attack_probability(probs: FloatArray, classes: list[str]) -> FloatArray:
    """``1 - P(benign)`` per row of calibrated probabilities."""
    if BENIGN not in classes:
        raise FlowDatasetError(f"an attack model needs a {BENIGN!r} class; it has {classes}")
    return (1.0 - probs[:, classes.index(BENIGN)]).astype(np.float32)


def attack_kind(probs: FloatArray, classes: list[str]) -> IntArray:
    """The most probable class other than ``benign``, per row."""
    masked = np.array(probs, copy=True)
    masked[:, classes.index(BENIGN)] = -1.0
    return masked.argmax(axis=1).astype(np.int64)


def fit_alarm(benign_scores: FloatArray, max_share: float = MAX_BENIGN_SHARE) -> float:
    """The alarm threshold that at most ``max_share`` of these benign flows reach."""
    if benign_scores.size == 0:
        return 1.0
    q = float(np.quantile(benign_scores, 1.0 - max_share, method="higher"))
    above = math.ceil(q * 1e6 + 1e-3) / 1e6  # above q (q itself does not raise), 6 places
    return max(MIN_ALARM, above)


def validation_alarm(model: Any, ds: FlowDataset, val: IntArray) -> float:
    """The alarm of a trained model (:class:`~amlhp.flows.artifact.FlowModel`) from the
    attack probabilities of its benign validation flows."""
    from amlhp.flows.train import predict_logits

    probs = softmax(predict_logits(model.torch_network(), ds, val), model.refiner.temperature)
    benign = ds.label[val] == ds.classes.index(BENIGN)
    return fit_alarm(attack_probability(probs, ds.classes)[benign])


def fold_split(ds: FlowDataset, sources: npt.NDArray[np.str_], held: str, seed: int) -> FlowSplit:
    """Test: every flow of ``held``; train/validation: the other sources' flows (by file
    where a class has 3 captures among them, else by time), the validation side holding
    the split's validation and test parts."""
    rest = np.flatnonzero(sources != held)
    inner = split_flows(ds, "mixed", seed, among=rest, ratios=FOLD_RATIOS)
    val = np.sort(np.concatenate([inner.val, inner.test]))
    return FlowSplit(f"loso:{held}", inner.train, val, np.flatnonzero(sources == held))


def alarm_figures(
    probs: FloatArray, labels: IntArray, classes: list[str], alarm: float
) -> dict[str, Any]:
    """Per class: flows, the share that raise the alarm, and (attacks) the share named
    with their own kind among those."""
    score = attack_probability(probs, classes)
    kind = attack_kind(probs, classes)
    raised = score >= alarm
    out: dict[str, Any] = {}
    benign = classes.index(BENIGN)
    for c, name in enumerate(classes):
        rows = labels == c
        n = int(rows.sum())
        if n == 0:
            continue
        entry: dict[str, Any] = {"flows": n, "raised_share": round(float(raised[rows].mean()), 4)}
        if c != benign and raised[rows].any():
            entry["right_kind_share"] = round(float((kind[rows & raised] == c).mean()), 4)
        out[name] = entry
    attacks = labels != benign
    out["all_attacks"] = {
        "flows": int(attacks.sum()),
        "raised_share": round(float(raised[attacks].mean()), 4) if attacks.any() else None,
    }
    return out


def leave_one_source_out(
    ds: FlowDataset,
    config: FlowTrainConfig,
    *,
    sources: list[str] | None = None,
    save_dir: Path | None = None,
    reuse: bool = False,
    on_status: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Hold each source out in turn; see the module docstring. ``save_dir``: each fold's
    model is saved in ``<save_dir>/<source>`` (for figures that need a model which never
    saw the source, such as the incidents of ``amlhp alerts-lab --attack-model``), and
    with ``reuse`` a fold already saved there is loaded instead of trained again.

    Two alarms per fold: its own (fitted on its validation flows, familiar sources) and
    the *cross-source* one (:func:`cross_source_alarm` over the other folds' held-out
    benign flows, each scored by a model that never saw them): what an alarm is worth on
    a network no model saw. Neither saw the held-out source."""
    from amlhp.flows.artifact import META, load_flow_model, save_flow_model
    from amlhp.flows.evaluate import fit_flow_model
    from amlhp.flows.train import predict_logits

    say = on_status or (lambda _msg: None)
    per_flow = flow_sources(ds)
    names = sources or sorted(set(per_flow.tolist()))
    folds: dict[str, Any] = {}
    held_out: dict[str, tuple[FloatArray, IntArray]] = {}
    for held in names:
        if not np.any(per_flow == held):
            raise FlowDatasetError(f"no flow of source {held!r} in the dataset")
        split = fold_split(ds, per_flow, held, config.seed)
        saved = save_dir / held if save_dir is not None else None
        if reuse and saved is not None and (saved / META).is_file():
            say(f"{held}: the fold saved in {saved}")
            model = load_flow_model(saved)
            summary = dict(model.meta.get("fold", {}))
            alarm = float(model.meta["alarm"])
        else:
            say(f"{held}: training on {split.train.size} flows")
            model, summary = fit_flow_model(
                ds, split, replace(config), profiles=False, on_status=say
            )
            alarm = validation_alarm(model, ds, split.val)
            summary = {k: summary[k] for k in ("train_flows", "best_epoch")}
            if saved is not None:
                extra = {"alarm": alarm, "held_out_source": held, "fold": summary}
                net = model.torch_network()
                save_flow_model(saved, net, ds.classes, ds.config, model.refiner, extra)
        net, temperature = model.torch_network(), model.refiner.temperature
        probs = softmax(predict_logits(net, ds, split.test), temperature)
        held_out[held] = (probs, ds.label[split.test])
        folds[held] = {
            **summary,
            "temperature": temperature,
            "alarm": alarm,
            "held_out": alarm_figures(probs, ds.label[split.test], ds.classes, alarm),
        }
        say(f"{held}: {folds[held]['held_out']}")
    benign = ds.classes.index(BENIGN)
    scores = {
        name: attack_probability(probs, ds.classes)[labels == benign]
        for name, (probs, labels) in held_out.items()
    }
    for held, (probs, labels) in held_out.items():
        alarm = cross_source_alarm({k: v for k, v in scores.items() if k != held})
        folds[held]["cross_source_alarm"] = alarm
        folds[held]["held_out_cross"] = alarm_figures(probs, labels, ds.classes, alarm)
    return {
        "classes": ds.classes,
        "max_benign_share": MAX_BENIGN_SHARE,
        "max_unseen_benign_share": MAX_UNSEEN_SHARE,
        "cross_source_alarm": cross_source_alarm(scores),
        "folds": folds,
    }


def cross_source_alarm(benign_scores: dict[str, FloatArray]) -> float:
    """The alarm that at most :data:`MAX_UNSEEN_SHARE` of *each* source's held-out benign
    flows reach (the highest of the per-source thresholds)."""
    return max(
        (fit_alarm(v, MAX_UNSEEN_SHARE) for v in benign_scores.values() if v.size),
        default=MIN_ALARM,
    )
