"""Merging flow datasets built apart, and the split that suits such a merge."""

from __future__ import annotations

import numpy as np
import pytest

from amlhp.flows.dataset import FlowDataset, concat_datasets, link_context, split_flows
from amlhp.flows.exceptions import FlowDatasetError
from amlhp.flows.record import HEAD_LEN, PAYLOAD_SLOTS, FlowConfig


def dataset(classes: list[str], labels: list[int], files: list[int], devices: list[int],
            config: FlowConfig | None = None) -> FlowDataset:  # fmt: skip
    n = len(labels)
    start = np.arange(n, dtype=np.int64) * 10**9
    device = np.asarray(devices, np.int64)
    return FlowDataset(
        head=np.full((n, HEAD_LEN), float(len(classes)), np.float32),
        payload=np.zeros((n, PAYLOAD_SLOTS), np.int16),
        start_ns=start,
        end_ns=start + 5,
        label=np.asarray(labels, np.int64),
        device=device,
        file=np.asarray(files, np.int64),
        context=link_context(device, start, 5),
        classes=classes,
        files=[f"f{i}" for i in range(max(files) + 1)],
        devices=[f"d{i}" for i in range(max(devices) + 1)],
        config=config or FlowConfig(),
    )


def test_merge_unites_classes_by_name_and_keeps_contexts_apart() -> None:
    a = dataset(["cam", "plug"], [0, 1, 0, 1], files=[0, 0, 1, 1], devices=[0, 1, 0, 1])
    b = dataset(["hub", "cam"], [0, 1, 1], files=[0, 1, 2], devices=[0, 1, 1])
    m = concat_datasets([a, b])
    assert m.classes == ["cam", "plug", "hub"]
    assert [m.classes[i] for i in m.label] == ["cam", "plug", "cam", "plug", "hub", "cam", "cam"]
    assert m.files == ["f0", "f1", "f0", "f1", "f2"]
    assert list(m.file) == [0, 0, 1, 1, 2, 3, 4]
    assert list(m.device) == [0, 1, 0, 1, 2, 3, 3]
    # b's flow 2 follows b's flow 1 (its device's earlier flow), never a flow of a
    assert m.context[6, 0] == 5
    assert all(m.context[i, 0] < 4 for i in range(4) if m.context[i, 0] >= 0)
    with pytest.raises(FlowDatasetError, match="flow configurations"):
        concat_datasets([a, dataset(["x"], [0], [0], [0], FlowConfig(lifetime_s=30.0))])


def test_mixed_split_is_by_file_where_it_can_and_by_time_elsewhere() -> None:
    # class 0: six files of two flows; class 1: one long recording of 20 flows
    labels = [0] * 12 + [1] * 20
    files = [i // 2 for i in range(12)] + [6] * 20
    ds = dataset(["short", "long"], labels, files, devices=[0] * 12 + [1] * 20)
    with pytest.raises(FlowDatasetError, match="capture file"):
        split_flows(ds, "file")
    sp = split_flows(ds, "mixed")
    short = [set(ds.file[side][ds.label[side] == 0]) for side in (sp.train, sp.val, sp.test)]
    assert all(s for s in short)
    assert sum(len(s) for s in short) == len(set().union(*short)) == 6  # no file on two sides
    longs = [ds.start_ns[side][ds.label[side] == 1] for side in (sp.train, sp.val, sp.test)]
    assert [len(x) for x in longs] == [14, 3, 3]
    assert longs[0].max() < longs[1].min() <= longs[1].max() < longs[2].min()
