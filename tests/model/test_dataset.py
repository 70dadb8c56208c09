"""Labelled data, subsampling and splits: sizes, stratification and no flow leakage."""

from __future__ import annotations

import numpy as np
import pytest

from amlhp.model.dataset import LabelledPackets, cap_per_class, split
from amlhp.model.exceptions import DatasetError


def test_loaded_synthetic_data(synthetic_data: LabelledPackets) -> None:
    assert len(synthetic_data) == 800
    assert synthetic_data.classes == ["mqtt_connect", "syn_flood", "dns_response", "tls_client"]
    assert np.bincount(synthetic_data.labels).tolist() == [200, 200, 200, 200]
    assert synthetic_data.header.shape == (800, 128)
    assert synthetic_data.payload.shape == (800, 1500)
    assert synthetic_data.fingerprint.startswith("sha256:")


def test_random_split_is_stratified_8_1_1(synthetic_data: LabelledPackets) -> None:
    parts = split(synthetic_data, "random", seed=3)
    sides = np.concatenate([parts.train, parts.val, parts.test])
    assert sorted(sides.tolist()) == list(range(800))
    for cls in range(4):
        counts = [
            int(np.sum(synthetic_data.labels[s] == cls))
            for s in (parts.train, parts.val, parts.test)
        ]
        assert counts == [160, 20, 20]


def test_flow_split_keeps_flows_whole(synthetic_data: LabelledPackets) -> None:
    parts = split(synthetic_data, "flow", seed=0)
    flows = [set(synthetic_data.flow_ids[s].tolist()) for s in (parts.train, parts.val, parts.test)]
    assert not flows[0] & flows[2]
    assert not flows[0] & flows[1]
    assert not flows[1] & flows[2]
    assert 0.7 < parts.train.size / 800 < 0.9
    assert parts.test.size > 0


def test_split_is_reproducible(synthetic_data: LabelledPackets) -> None:
    a = split(synthetic_data, "flow", seed=5)
    b = split(synthetic_data, "flow", seed=5)
    assert np.array_equal(a.test, b.test)
    assert not np.array_equal(a.test, split(synthetic_data, "flow", seed=6).test)


def test_file_split_with_few_files(synthetic_data: LabelledPackets) -> None:
    parts = split(synthetic_data, "file", seed=0)
    # one file per class stays in training; tls_client's two files go one each way
    assert set(parts.train_only) == {"mqtt_connect", "syn_flood", "dns_response"}
    test_files = set(synthetic_data.file_ids[parts.test].tolist())
    train_files = set(synthetic_data.file_ids[parts.train].tolist())
    assert test_files
    assert not test_files & train_files


def test_unknown_split() -> None:
    data = LabelledPackets(
        header=np.zeros((3, 128), np.uint8),
        payload=np.zeros((3, 64), np.uint8),
        labels=np.zeros(3, np.int64),
        file_ids=np.zeros(3, np.int64),
        flow_ids=np.arange(3),
        classes=["a"],
        files=["f"],
        config=None,  # type: ignore[arg-type]
    )
    with pytest.raises(DatasetError, match="unknown split"):
        split(data, "by-moon")


def test_cap_per_class() -> None:
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7)
    kept = cap_per_class(labels, 5, seed=0)
    assert np.bincount(labels[kept]).tolist() == [5, 3, 5]
    assert np.array_equal(kept, np.sort(kept))
    assert np.array_equal(kept, cap_per_class(labels, 5, seed=0))
