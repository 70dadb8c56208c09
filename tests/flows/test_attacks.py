"""The attack flow model: sources, the alarm threshold, fold splits, the scorer's columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from amlhp.alerts.kinds import KINDS
from amlhp.flows.artifact import ATTACK_MODEL, load_attack_model, load_flow_model, save_flow_model
from amlhp.flows.attacks import (
    alarm_figures,
    attack_kind,
    attack_probability,
    cross_source_alarm,
    fit_alarm,
    flow_sources,
    fold_split,
    leave_one_source_out,
    source_of,
)
from amlhp.flows.dataset import FlowDataset, link_context
from amlhp.flows.exceptions import FlowArtifactError, FlowDatasetError
from amlhp.flows.online import FlowScorer
from amlhp.flows.record import HEAD_LEN, PAYLOAD_SLOTS, FlowConfig
from tests.flows.conftest import neutral_refiner, raw, small_model, tcp_frame

CLASSES = ["benign", "scan", "brute_force"]


def test_source_of_names_the_collection_or_the_lab_run() -> None:
    assert source_of("../shared/data/public/stopddos/amp.UDP.isakmp.pcap") == "stopddos"
    deep = "/x/data/public/iot_sentinel/captures_IoT_Sentinel/Aria/Setup-A-1-STA.pcap"
    assert source_of(deep) == "iot_sentinel"
    assert source_of("var/lab/slow/benign.pcap") == "lab-slow"
    assert source_of("var/lab/full/scan.pcap") == "lab-full"


def test_attack_probability_and_kind_ignore_benign() -> None:
    probs = np.array([[0.9, 0.04, 0.06], [0.2, 0.7, 0.1]], np.float32)
    assert attack_probability(probs, CLASSES) == pytest.approx([0.1, 0.8])
    assert attack_kind(probs, CLASSES).tolist() == [2, 1]
    with pytest.raises(FlowDatasetError, match="benign"):
        attack_probability(probs, ["a", "b", "c"])


def test_alarm_keeps_benign_raises_under_the_share() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random(10_000).astype(np.float32)
    alarm = fit_alarm(scores, max_share=0.01)
    assert type(alarm) is float  # it goes into the artifact's JSON
    assert float(np.mean(scores >= alarm)) <= 0.01
    assert float(np.mean(scores >= alarm - 0.01)) > 0.005  # not needlessly high
    # a model that never doubts benign flows still needs half the probability mass
    assert fit_alarm(np.zeros(100, np.float32)) == 0.5
    assert fit_alarm(np.zeros(0, np.float32)) == 1.0


def tiny_dataset(files: list[str], per_file: int = 30) -> FlowDataset:
    """Flows of each file, classes by file index (file i: class i % 3), times in order."""
    n = len(files) * per_file
    file = np.repeat(np.arange(len(files)), per_file)
    device = file.copy()
    start = np.arange(n, dtype=np.int64) * 1_000_000_000
    return FlowDataset(
        head=np.zeros((n, HEAD_LEN), np.float32),
        payload=np.zeros((n, PAYLOAD_SLOTS), np.int16),
        start_ns=start,
        end_ns=start + 1,
        label=(file % 3).astype(np.int64),
        device=device,
        file=file,
        context=link_context(device, start, 5),
        classes=list(CLASSES),
        files=files,
        devices=[str(i) for i in range(len(files))],
        config=FlowConfig(),
    )


def test_fold_split_tests_on_the_held_out_source_only() -> None:
    files = [f"data/public/src{k}/f{i}.pcap" for k in range(3) for i in range(3)]
    ds = tiny_dataset(files)
    sources = flow_sources(ds)
    split = fold_split(ds, sources, "src1", seed=0)
    assert set(sources[split.test]) == {"src1"}
    assert split.test.size == 90
    kept = np.concatenate([split.train, split.val])
    assert "src1" not in set(sources[kept])
    assert np.intersect1d(split.train, split.val).size == 0
    assert kept.size == len(ds) - 90


def test_alarm_figures_per_class() -> None:
    probs = np.array(
        [[0.9, 0.05, 0.05], [0.3, 0.6, 0.1], [0.2, 0.1, 0.7], [0.6, 0.1, 0.3]], np.float32
    )
    labels = np.array([0, 1, 1, 2])
    out = alarm_figures(probs, labels, CLASSES, alarm=0.5)
    assert out["benign"] == {"flows": 1, "raised_share": 0.0}
    assert out["scan"] == {"flows": 2, "raised_share": 1.0, "right_kind_share": 0.5}
    assert out["brute_force"] == {"flows": 1, "raised_share": 0.0}
    assert out["all_attacks"] == {"flows": 3, "raised_share": pytest.approx(2 / 3, abs=1e-4)}


def attack_model_dir(tmp_path: Path, alarm: float | None = 0.5) -> Path:
    config = FlowConfig(local_nets=("192.168.0.0/16",))
    extra = {} if alarm is None else {"alarm": alarm}
    return save_flow_model(
        tmp_path / "attacks", small_model(seed=1), CLASSES, config, neutral_refiner(3), extra
    )


def test_scorer_adds_the_attack_verdict(tmp_path: Path, flow_model_dir: Path) -> None:
    from amlhp.flows.assembler import FlowAssembler, iter_closed

    devices, attacks = load_flow_model(flow_model_dir), load_flow_model(attack_model_dir(tmp_path))
    frames = [tcp_frame(b"x" * 10, out=i % 2 == 0, rport=22 + i % 3) for i in range(12)]
    closed = list(
        iter_closed(FlowAssembler(devices.config), [raw(frames, [i * 0.1 for i in range(12)])])
    )
    plain = FlowScorer(devices).score(closed).to_pylist()
    both = FlowScorer(devices, attack=attacks).score(closed).to_pylist()
    assert [r["attack_kind"] for r in plain] == [None] * len(plain)
    assert len(both) == len(plain) == 3
    for p, b in zip(plain, both, strict=True):
        # the device verdict is the same with the attack model beside it
        assert (p["label"], p["confidence"]) == (b["label"], b["confidence"])
        assert b["attack_kind"] in ("scan", "brute_force")
        assert 0.0 <= b["attack_score"] <= 1.0
        assert b["attack_alarm"] == (b["attack_score"] >= 0.5)


def test_attack_model_must_be_one(tmp_path: Path, flow_model_dir: Path) -> None:
    with pytest.raises(FlowArtifactError, match="not an attack model"):
        load_attack_model(str(flow_model_dir))
    assert load_attack_model("none") is None
    # the committed one beside a device model of other subnets: not run (an explicit
    # one is refused, below)
    assert load_attack_model(None, FlowConfig(local_nets=("172.16.0.0/12",))) is None
    other = FlowConfig(local_nets=("10.0.0.0/8",))
    path = save_flow_model(
        tmp_path / "x", small_model(), CLASSES, other, neutral_refiner(3), {"alarm": 0.5}
    )
    with pytest.raises(FlowArtifactError, match="differently"):
        FlowScorer(load_flow_model(flow_model_dir), attack=load_flow_model(path))


def test_a_missing_attack_model_is_named_as_given(tmp_path: Path) -> None:
    """A path that does not exist is named as given, not as its parent's metadata file."""
    missing = tmp_path / "no-such-model"
    with pytest.raises(FlowArtifactError, match=f"no flow model at {missing}"):
        load_attack_model(str(missing))


def test_the_committed_attack_model_loads_as_the_default() -> None:
    if not (ATTACK_MODEL / "flow_model.json").is_file():
        pytest.fail(f"no committed attack model at {ATTACK_MODEL}: run make flow-models")
    model = load_attack_model(None)
    assert model is not None
    assert model.alarm is not None
    assert 0.5 <= model.alarm < 1.0
    assert "benign" in model.classes
    assert set(model.classes) - {"benign"} <= set(KINDS)


def test_cross_source_alarm_holds_each_source_under_the_share() -> None:
    rng = np.random.default_rng(1)
    scores = {
        "quiet": (rng.random(2000) * 0.4).astype(np.float32),
        "odd": rng.random(500).astype(np.float32),
    }
    alarm = cross_source_alarm(scores)
    assert all(float(np.mean(v >= alarm)) <= 0.01 for v in scores.values())
    assert alarm == fit_alarm(scores["odd"], 0.01)  # the hardest source decides


def test_leave_one_source_out_saves_and_reuses_its_folds(tmp_path: Path) -> None:
    from amlhp.flows.train import FlowTrainConfig

    files = [f"data/public/src{k}/f{i}.pcap" for k in range(3) for i in range(3)]
    ds = tiny_dataset(files, per_file=12)
    ds.head[:, 0] = ds.label  # something to learn
    cfg = FlowTrainConfig(epochs=1, max_per_class=50, seed=0, threads=1)
    first = leave_one_source_out(ds, cfg, save_dir=tmp_path / "folds")
    assert sorted(first["folds"]) == ["src0", "src1", "src2"]
    for name, fold in first["folds"].items():
        model = load_attack_model(str(tmp_path / "folds" / name))
        assert model is not None
        assert model.alarm == fold["alarm"]
        assert model.meta["held_out_source"] == name
        assert fold["held_out"]["all_attacks"]["flows"] == 24  # 2 of its 3 files attack
        assert fold["cross_source_alarm"] >= 0.5
    again = leave_one_source_out(ds, cfg, save_dir=tmp_path / "folds", reuse=True)
    assert again["folds"] == first["folds"]
    assert again["cross_source_alarm"] == first["cross_source_alarm"]
