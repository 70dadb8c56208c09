"""Labelled packets from captures (through the encoder), subsampling, and leakage-free splits.

Every packet goes through :func:`amlhp.encoders.capture.iter_encoded`, the same code the
stream uses; only ``ok`` packets with a label are kept. Splits:

* ``random``: the paper's 8:1:1 by packet, stratified by class;
* ``flow``: whole bidirectional flows (5-tuple, per capture file) go to one side, so no
  flow has packets in both training and test; spoofed floods are one flow per packet;
* ``file``: whole capture files go to one side; a class with a single file cannot be
  split this way and stays in training only (reported in the split summary), one with
  two files gets one for training and one for testing.

Group splits assign the largest groups first, each to the side furthest below its share,
so that an 8:1:1 ratio is approached even when a class has a few huge flows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from amlhp.digest import file_sha256
from amlhp.encoders.arrays import model_inputs
from amlhp.encoders.capture import iter_encoded
from amlhp.encoders.layout import LAYOUT_VERSION, EncoderConfig
from amlhp.model.exceptions import DatasetError
from amlhp.model.labels import LabelSpec, assign_labels

SplitKind = Literal["random", "flow", "file"]
SPLIT_KINDS: tuple[str, ...] = ("random", "flow", "file")
RATIOS = (0.8, 0.1, 0.1)

ByteMatrix = npt.NDArray[np.uint8]
IntArray = npt.NDArray[np.int64]


@dataclass
class LabelledPackets:
    """Encoded, labelled packets: the model inputs plus what splits and reports need."""

    header: ByteMatrix  # (N, 128)
    payload: ByteMatrix  # (N, P_stored); the model reads the first P columns
    labels: IntArray  # (N,) class ids
    file_ids: IntArray  # (N,) index into files
    flow_ids: IntArray  # (N,) bidirectional 5-tuple hash, per file
    classes: list[str]
    files: list[str]
    config: EncoderConfig
    fingerprint: str = ""
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    #: (N,) capture time in ns (a site's first and second half: amlhp model adapt-study)
    ts_ns: IntArray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: IntArray) -> LabelledPackets:
        return LabelledPackets(
            header=self.header[index],
            payload=self.payload[index],
            labels=self.labels[index],
            file_ids=self.file_ids[index],
            flow_ids=self.flow_ids[index],
            classes=self.classes,
            files=self.files,
            config=self.config,
            fingerprint=self.fingerprint,
            counts=self.counts,
            ts_ns=None if self.ts_ns is None else self.ts_ns[index],
        )


def _flow_hash(table: pa.Table, file_id: int) -> IntArray:
    """A 63-bit hash of (file, proto, the two endpoints in canonical order)."""

    def ints(name: str) -> npt.NDArray[np.uint64]:
        return table.column(name).fill_null(0).to_numpy().astype(np.uint64)

    def ip_ints(name: str) -> npt.NDArray[np.uint64]:
        values = table.column(name).to_pylist()
        uniq = {v: i + 1 for i, v in enumerate(sorted({v for v in values if v is not None}))}
        return np.array([uniq.get(v, 0) if v is not None else 0 for v in values], np.uint64)

    src = (ip_ints("src_ip") << np.uint64(16)) | ints("src_port")
    dst = (ip_ints("dst_ip") << np.uint64(16)) | ints("dst_port")
    lo = np.minimum(src, dst)
    hi = np.maximum(src, dst)
    key = np.stack([lo, hi, ints("proto"), np.full(len(lo), file_id, np.uint64)], axis=1)
    digest = [hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in key]
    return np.frombuffer(b"".join(digest), dtype=np.int64).copy() & np.int64(2**62 - 1)


def data_fingerprint(
    spec: LabelSpec,
    config: EncoderConfig,
    max_per_class: int | None,
    seed: int,
    sampling: dict[str, Any] | None = None,
) -> str:
    """sha256 of what defines the training data: files' contents, labels, encoding, sampling.

    ``sampling`` holds the caps beyond ``max_per_class`` (benign cap, sharing among
    sources); it only enters the hash when set, so older fingerprints stay valid.
    """
    doc: dict[str, Any] = {
        "labels": spec.as_dict(),
        "file_sha256": {str(p): file_sha256(p) for p in sorted(spec.files)},
        "payload_bytes": config.payload_bytes,
        "mask_fields": list(config.mask_fields),
        "layout_version": LAYOUT_VERSION,
        "max_per_class": max_per_class,
        "seed": seed,
    }
    if sampling:
        doc["sampling"] = sampling
    blob = json.dumps(doc, sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def load_labelled(
    spec: LabelSpec,
    config: EncoderConfig,
    *,
    max_per_class: int | None = None,
    seed: int = 0,
    on_file: Callable[[str], None] | None = None,
) -> LabelledPackets:
    """Encode every labelled capture and keep ok, labelled packets (at most ``max_per_class``
    per class, drawn uniformly with ``seed``)."""
    files = sorted(spec.files)
    headers: list[ByteMatrix] = []
    payloads: list[ByteMatrix] = []
    labels: list[IntArray] = []
    file_ids: list[IntArray] = []
    flows: list[IntArray] = []
    times: list[IntArray] = []
    counts: dict[str, dict[str, int]] = {}
    for file_id, path in enumerate(files):
        if on_file is not None:
            on_file(path.name)
        batches = list(iter_encoded([path], config))
        if not batches:
            continue
        table = pa.Table.from_batches(batches)
        header, payload, ok = model_inputs(table)
        label = assign_labels(table, spec.files[path])
        keep = ok & (label >= 0)
        stats = counts.setdefault(str(path), {})
        stats.update(packets=int(table.num_rows), ok=int(ok.sum()), used=int(keep.sum()))
        idx = np.flatnonzero(keep)
        if idx.size == 0:
            continue
        headers.append(header[idx].copy())
        payloads.append(payload[idx].copy())
        labels.append(label[idx])
        file_ids.append(np.full(idx.size, file_id, np.int64))
        flows.append(_flow_hash(table.take(pa.array(idx)), file_id))
        times.append(table.column("ts_ns").to_numpy()[idx].astype(np.int64))
    if not labels:
        raise DatasetError("the labelled captures hold no usable (ok, labelled) packet")
    data = LabelledPackets(
        header=np.concatenate(headers),
        payload=np.concatenate(payloads),
        labels=np.concatenate(labels),
        file_ids=np.concatenate(file_ids),
        flow_ids=np.concatenate(flows),
        classes=list(spec.classes),
        files=[str(p) for p in files],
        config=config,
        counts=counts,
        ts_ns=np.concatenate(times),
    )
    missing = [c for i, c in enumerate(spec.classes) if not np.any(data.labels == i)]
    if missing:
        raise DatasetError(f"no usable packet for class(es) {', '.join(missing)}")
    if max_per_class is not None:
        data = data.subset(cap_per_class(data.labels, max_per_class, seed))
    data.fingerprint = data_fingerprint(spec, config, max_per_class, seed)
    return data


def cap_per_class(labels: IntArray, cap: int, seed: int) -> IntArray:
    """Sorted indices keeping at most ``cap`` uniformly drawn rows of each class."""
    rng = np.random.default_rng(seed)
    keep: list[IntArray] = []
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        if rows.size > cap:
            rows = rng.choice(rows, size=cap, replace=False)
        keep.append(rows)
    return np.sort(np.concatenate(keep))


def cap_rows(
    rows: IntArray,
    labels: IntArray,
    cap: int,
    seed: int,
    benign: npt.NDArray[np.bool_] | None = None,
    benign_cap: int | None = None,
    sources: IntArray | None = None,
) -> IntArray:
    """Sorted ``rows`` keeping at most ``cap`` per class (``benign_cap`` for benign classes).

    With one benign class among many attack classes, an equal cap makes benign a small
    minority of what the network sees; ``benign`` marks the benign class ids. With
    ``sources`` (a source id per row of ``labels``) a class's cap is shared equally by the
    sources that hold it, so that the largest capture does not decide what "benign" is.
    """
    if rows.size == 0:
        return rows
    if benign is not None and benign_cap is not None and benign_cap != cap:
        is_b = benign[labels[rows]]
        parts = [
            cap_rows(rows[~is_b], labels, cap, seed, sources=sources),
            cap_rows(rows[is_b], labels, benign_cap, seed, sources=sources),
        ]
        return np.sort(np.concatenate(parts))
    if sources is None:
        return np.sort(rows[cap_per_class(labels[rows], cap, seed)])
    rng = np.random.default_rng(seed)
    keep: list[IntArray] = []
    for cls in np.unique(labels[rows]):
        mine = rows[labels[rows] == cls]
        held = np.unique(sources[mine])
        share = -(-cap // held.size)
        for src in held:
            part = mine[sources[mine] == src]
            if part.size > share:
                part = rng.choice(part, size=share, replace=False)
            keep.append(part)
    return np.sort(np.concatenate(keep))


@dataclass(frozen=True)
class Split:
    """Row indices of the three sides, and which classes could not be split."""

    kind: str
    train: IntArray
    val: IntArray
    test: IntArray
    train_only: tuple[str, ...] = ()

    def summary(self, data: LabelledPackets) -> dict[str, object]:
        per_class = {
            name: {
                side: int(np.sum(data.labels[idx] == i))
                for side, idx in (("train", self.train), ("val", self.val), ("test", self.test))
            }
            for i, name in enumerate(data.classes)
        }
        return {
            "kind": self.kind,
            "train": int(self.train.size),
            "val": int(self.val.size),
            "test": int(self.test.size),
            "per_class": per_class,
            "train_only_classes": list(self.train_only),
        }


def _assign_groups(
    groups: IntArray, rng: np.random.Generator, ratios: tuple[float, float, float]
) -> npt.NDArray[np.int8]:
    """Side (0 train, 1 val, 2 test) per row; largest groups first, to the neediest side."""
    uniq, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    order = np.lexsort((rng.random(uniq.size), -sizes))
    shares = np.asarray(ratios, dtype=np.float64)
    if uniq.size == 2:  # two groups: one to train, one to test, none to validation
        shares = np.array([shares[0], 0.0, shares[1] + shares[2]])
    target = shares * groups.size
    filled = np.zeros(3)
    side_of = np.zeros(uniq.size, np.int8)
    for g in order:
        need = np.where(target > 0, (target - filled) / np.where(target > 0, target, 1), -np.inf)
        side = int(np.argmax(need))
        side_of[g] = side
        filled[side] += sizes[g]
    return side_of[inverse]


def split(
    data: LabelledPackets,
    kind: str = "random",
    *,
    seed: int = 0,
    ratios: tuple[float, float, float] = RATIOS,
) -> Split:
    """Train/validation/test indices, per class, by packet, flow or file."""
    if kind not in SPLIT_KINDS:
        raise DatasetError(f"unknown split {kind!r}; expected one of {', '.join(SPLIT_KINDS)}")
    rng = np.random.default_rng(seed)
    sides: list[list[IntArray]] = [[], [], []]
    train_only: list[str] = []
    for cls, name in enumerate(data.classes):
        rows = np.flatnonzero(data.labels == cls)
        if rows.size == 0:
            continue
        if kind == "random":
            groups = rows  # every packet its own group
        elif kind == "flow":
            groups = data.flow_ids[rows]
        else:
            groups = data.file_ids[rows]
        if np.unique(groups).size < 2:
            train_only.append(name)
            sides[0].append(rows)
            continue
        side = _assign_groups(groups, rng, ratios)
        for s in range(3):
            sides[s].append(rows[side == s])
    train, val, test = (np.sort(np.concatenate(s)) if s else np.zeros(0, np.int64) for s in sides)
    if test.size == 0 or train.size == 0:
        raise DatasetError(f"split {kind!r} left no packet for training or testing")
    return Split(kind, train, val, test, tuple(train_only))
