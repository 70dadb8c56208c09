"""Labelled flow records from captures, their context links, splits, and model matrices.

A :class:`FlowDataset` keeps each flow once (its 41 head slots as float32 and its payload
buffer as int16) plus, per flow, the indices of up to ``context`` preceding flows of the
same device (most recent first). The model input matrix of a flow is assembled from these
on demand (:func:`matrices`), so the six-row matrices are never all in memory at once.

Labels come either from the capture's folder (device identification: IoT Sentinel keeps
one device per folder; only the flows of the capture's most active local address get the
label, the gateway's and the phone's do not) or from a labels file in the packet model's
format (:mod:`amlhp.model.labels`), whose per-packet rules give each flow the most common
label of its packets.

Splits: ``file`` puts whole capture files on one side (per class, as the packet model's
file split does); ``time`` cuts each class's flows in start-time order (70/15/15), for
captures that hold one class each and cannot be split by file.
"""

from __future__ import annotations

import ipaddress
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from amlhp.encoders.readers import iter_raw_batches
from amlhp.flows.assembler import AssemblerStats, FlowAssembler, Labeler, iter_closed
from amlhp.flows.exceptions import FlowDatasetError
from amlhp.flows.record import (
    HEAD_LEN,
    PACKET_FIELDS,
    PACKETS_OFFSET,
    PAD,
    ROW_LEN,
    SLOT_START,
    FlowConfig,
    FlowState,
    empty_row,
)

IntArray = npt.NDArray[np.int64]
RATIOS = (0.7, 0.15, 0.15)


#: the dataset's arrays: field name -> key in the ``.npz`` file
_ARRAYS: dict[str, str] = {
    "head": "head",
    "payload": "payload",
    "start_ns": "start_ns",
    "end_ns": "end_ns",
    "label": "label",
    "device": "device",
    "file": "file_id",
    "context": "context",
}


@dataclass
class FlowDataset:
    """Closed flow records of some captures, with labels and context links."""

    head: npt.NDArray[np.float32]  # (N, HEAD_LEN), start offset slot 0
    payload: npt.NDArray[np.int16]  # (N, PAYLOAD_SLOTS)
    start_ns: IntArray
    end_ns: IntArray
    label: IntArray
    device: IntArray  # index into devices
    file: IntArray  # index into files
    context: IntArray  # (N, C): preceding flows of the device, most recent first; -1 none
    classes: list[str]
    files: list[str]
    devices: list[str]
    config: FlowConfig
    stats: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.label.shape[0])

    @property
    def packets(self) -> IntArray:
        return self.head[:, 10].astype(np.int64)

    @property
    def bytes(self) -> IntArray:
        return self.head[:, 9].astype(np.int64)

    def head_packets(self) -> IntArray:
        """Packets among the first ten that the record holds, per flow."""
        sizes = self.head[:, PACKETS_OFFSET + 1 : PACKETS_OFFSET + 30 : PACKET_FIELDS]
        return (sizes >= 0).sum(axis=1).astype(np.int64)

    def head_bytes(self) -> IntArray:
        """Bytes of the first (up to ten) packets, per flow: what a record inspects."""
        sizes = self.head[:, PACKETS_OFFSET + 1 : PACKETS_OFFSET + 30 : PACKET_FIELDS]
        return np.where(sizes >= 0, sizes, 0).sum(axis=1).astype(np.int64)

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "classes": self.classes,
            "files": self.files,
            "devices": self.devices,
            "config": self.config.as_dict(),
            "stats": self.stats,
        }
        with open(path, "wb") as fh:
            arrays = {key: getattr(self, name) for name, key in _ARRAYS.items()}
            np.savez_compressed(
                fh, **arrays, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8)
            )

    @classmethod
    def load(cls, path: Path) -> FlowDataset:
        try:
            with np.load(path) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                arrays = {k: z[k] for k in z.files if k != "meta"}
        except (OSError, KeyError, ValueError) as exc:
            raise FlowDatasetError(f"{path} is not a flow dataset: {exc}") from exc
        return cls(
            **{name: arrays[key] for name, key in _ARRAYS.items()},
            classes=list(meta["classes"]),
            files=list(meta["files"]),
            devices=list(meta["devices"]),
            config=FlowConfig.from_dict(meta["config"]),
            stats=meta.get("stats", {}),
        )


def link_context(device: IntArray, start_ns: IntArray, depth: int) -> IntArray:
    """(N, depth) indices of each flow's preceding flows of the same device, most recent
    first (ties broken by index), -1 where there are fewer."""
    n = device.shape[0]
    out = np.full((n, depth), -1, np.int64)
    order = np.lexsort((np.arange(n), start_ns, device))
    for pos, i in enumerate(order):
        for d in range(depth):
            p = pos - 1 - d
            if p < 0 or device[order[p]] != device[i]:
                break
            out[i, d] = order[p]
    return out


def matrices(ds: FlowDataset, index: IntArray, *, with_context: bool = True) -> np.ndarray:
    """The model input of flows ``index``: (B, rows, ROW_LEN) float32.

    Row 0 is the flow itself, rows 1.. its preceding flows (most recent first) with their
    start offsets relative to row 0; missing rows are empty rows. ``with_context=False``
    leaves every row after the first empty (strategy "each flow alone").
    """
    rows = ds.config.rows
    index = np.asarray(index, np.int64)
    b = index.shape[0]
    ctx = np.full((b, rows), -1, np.int64)
    ctx[:, 0] = index
    if with_context and rows > 1:
        ctx[:, 1:] = ds.context[index, : rows - 1]
    present = ctx >= 0
    safe = np.where(present, ctx, 0)
    out = np.empty((b, rows, ROW_LEN), np.float32)
    out[:, :, :HEAD_LEN] = ds.head[safe]
    out[:, :, HEAD_LEN:] = ds.payload[safe]
    offsets = (ds.start_ns[index][:, None] - ds.start_ns[safe]) / 1e9
    out[:, :, SLOT_START] = np.maximum(offsets, 0.0)
    out[~present] = empty_row()
    return out


def rows_of(states: Sequence[FlowState], rows: int) -> np.ndarray:
    """The model input of one flow from its state and its predecessors' (online path):
    ``states[0]`` is the current flow, the rest its preceding flows, most recent first."""
    out = np.tile(empty_row(), (rows, 1))
    current = states[0].start_ns
    for r, state in enumerate(states[:rows]):
        out[r] = state.row(current)
    return out


# -- building from captures ---------------------------------------------------------------
FileLabel = int | Labeler


@dataclass
class _Collected:
    head: list[np.ndarray] = field(default_factory=list)
    payload: list[np.ndarray] = field(default_factory=list)
    start: list[int] = field(default_factory=list)
    end: list[int] = field(default_factory=list)
    label: list[int] = field(default_factory=list)
    device: list[int] = field(default_factory=list)
    file: list[int] = field(default_factory=list)


def main_device(flows: Sequence[FlowState]) -> str | None:
    """The local address with the most packets in these flows (the capture's device)."""
    counts: Counter[str] = Counter()
    for f in flows:
        counts[f.key.device_ip] += f.packets
    return counts.most_common(1)[0][0] if counts else None


def build_dataset(
    files: Sequence[Path],
    labels: Sequence[FileLabel],
    classes: list[str],
    config: FlowConfig,
    *,
    main_device_only: bool = False,
    device_nets: Sequence[str] = (),
    max_flows_per_class: int | None = None,
    seed: int = 0,
    on_file: Callable[[Path], None] | None = None,
) -> FlowDataset:
    """Assemble every capture's flows and keep the labelled ones.

    ``labels[i]`` is either a class id for all of ``files[i]`` or a labeler of its packets.
    ``main_device_only`` keeps only the flows of each file's most active local address
    (a capture made for one device). ``device_nets`` keeps only the flows of devices in
    these subnets: the labelled devices, when others are local too (a packet between two
    local hosts makes a record for each, and its label names only one of them).
    ``max_flows_per_class`` keeps at most that many flows of each class per file, drawn
    uniformly (``seed``), so that floods of one-packet flows do not swamp the data. Each
    file is its own gateway, so contexts never cross captures (a context row may be a flow
    that was not drawn: it is simply not linked).
    """
    if len(files) != len(labels):
        raise FlowDatasetError("one label (class id or labeler) per file is needed")
    got = _Collected()
    devices: dict[str, int] = {}
    stats = AssemblerStats()
    dropped: Counter[str] = Counter()
    rng = np.random.default_rng(seed)
    keep_nets = [ipaddress.ip_network(n) for n in device_nets]
    for file_id, (path, label) in enumerate(zip(files, labels, strict=True)):
        if on_file is not None:
            on_file(path)
        assembler = FlowAssembler(config)
        labeler: Labeler
        if isinstance(label, int):
            fixed = label

            def labeler(batch: pa.RecordBatch, fixed: int = fixed) -> IntArray:
                return np.full(batch.num_rows, fixed, np.int64)

        else:
            labeler = label
        flows = list(iter_closed(assembler, iter_raw_batches(path, gateway=str(path)), labeler))
        _merge_stats(stats, assembler.stats)
        keep_device = main_device(flows) if main_device_only else None
        by_class: dict[int, list[FlowState]] = defaultdict(list)
        for flow in flows:
            if (keep_device is not None and flow.key.device_ip != keep_device) or (
                keep_nets
                and not any(ipaddress.ip_address(flow.key.device_ip) in n for n in keep_nets)
            ):
                dropped["other_device"] += 1
                continue
            cls = flow.label()
            if cls < 0:
                dropped["unlabelled"] += 1
                continue
            by_class[cls].append(flow)
        chosen: list[FlowState] = []
        for _cls, members in sorted(by_class.items()):
            if max_flows_per_class is not None and len(members) > max_flows_per_class:
                pick = rng.choice(len(members), size=max_flows_per_class, replace=False)
                dropped["class_cap"] += len(members) - max_flows_per_class
                members = [members[int(j)] for j in sorted(pick)]
            chosen.extend(members)
        for flow in sorted(chosen, key=lambda f: (f.start_ns, f.key.text())):
            cls = flow.label()
            name = f"{flow.key.gateway}|{flow.key.device_ip}"
            got.head.append(flow.head_vector())
            got.payload.append(flow.payload_vector())
            got.start.append(flow.start_ns)
            got.end.append(flow.last_ns)
            got.label.append(cls)
            got.device.append(devices.setdefault(name, len(devices)))
            got.file.append(file_id)
    if not got.label:
        raise FlowDatasetError("the captures hold no labelled flow")
    device = np.asarray(got.device, np.int64)
    start = np.asarray(got.start, np.int64)
    ds = FlowDataset(
        head=np.stack(got.head).astype(np.float32),
        payload=np.stack(got.payload).astype(np.int16),
        start_ns=start,
        end_ns=np.asarray(got.end, np.int64),
        label=np.asarray(got.label, np.int64),
        device=device,
        file=np.asarray(got.file, np.int64),
        context=link_context(device, start, config.context),
        classes=list(classes),
        files=[str(f) for f in files],
        devices=list(devices),
        config=config,
        stats={"assembler": stats.as_dict(), "dropped_flows": dict(dropped)},
    )
    missing = [c for i, c in enumerate(classes) if not np.any(ds.label == i)]
    ds.stats["classes_without_flows"] = missing
    return ds


def concat_datasets(parts: Sequence[FlowDataset]) -> FlowDataset:
    """One dataset of several (sources built apart, e.g. IoT Sentinel by folder and the
    lab by labels file): classes are united by name, files and devices kept apart, and
    context links stay within their own part. The parts must share one flow config."""
    if not parts:
        raise FlowDatasetError("nothing to merge")
    config = parts[0].config
    if any(p.config != config for p in parts):
        raise FlowDatasetError("the datasets were built with different flow configurations")
    classes: list[str] = []
    for part in parts:
        classes.extend(c for c in part.classes if c not in classes)
    fields: dict[str, list[np.ndarray]] = {name: [] for name in _ARRAYS}
    files: list[str] = []
    devices: list[str] = []
    offset = 0
    for part in parts:
        remap = np.asarray([classes.index(c) for c in part.classes], np.int64)
        fields["head"].append(part.head)
        fields["payload"].append(part.payload)
        fields["start_ns"].append(part.start_ns)
        fields["end_ns"].append(part.end_ns)
        fields["label"].append(remap[part.label])
        fields["device"].append(part.device + len(devices))
        fields["file"].append(part.file + len(files))
        fields["context"].append(np.where(part.context >= 0, part.context + offset, -1))
        files.extend(part.files)
        devices.extend(part.devices)
        offset += len(part)
    return FlowDataset(
        **{name: np.concatenate(arrays) for name, arrays in fields.items()},
        classes=classes,
        files=files,
        devices=devices,
        config=config,
        stats={"merged": [p.stats for p in parts]},
    )


def _merge_stats(total: AssemblerStats, part: AssemblerStats) -> None:
    total.packets += part.packets
    total.used += part.used
    total.records += part.records
    total.no_local_endpoint += part.no_local_endpoint
    total.duplicates += part.duplicates
    total.refused.update(part.refused)
    total.flows_closed += part.flows_closed


# -- splits -------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlowSplit:
    kind: str
    train: IntArray
    val: IntArray
    test: IntArray

    def as_dict(self, ds: FlowDataset) -> dict[str, object]:
        sides = {"train": self.train, "val": self.val, "test": self.test}
        return {
            "kind": self.kind,
            **{k: int(v.size) for k, v in sides.items()},
            "per_class": {
                name: {k: int(np.sum(ds.label[v] == c)) for k, v in sides.items()}
                for c, name in enumerate(ds.classes)
            },
            "test_files": sorted({ds.files[f] for f in np.unique(ds.file[self.test])})
            if self.kind in ("file", "mixed")
            else [],
        }


def split_flows(
    ds: FlowDataset,
    kind: str = "file",
    seed: int = 0,
    *,
    among: IntArray | None = None,
    ratios: tuple[float, float, float] = RATIOS,
) -> FlowSplit:
    """Train/validation/test flow indices by capture file or by time (see module doc);
    ``mixed`` splits by file the classes that have 3 files or more and by time the rest
    (a merged dataset of many short captures and one long recording). ``among`` limits
    the split to these flows (the sources a leave-one-source-out fold trains on)."""
    if kind not in ("file", "time", "mixed"):
        raise FlowDatasetError(f"unknown split {kind!r}: expected 'file', 'time' or 'mixed'")
    rng = np.random.default_rng(seed)
    sides: list[list[IntArray]] = [[], [], []]
    allowed = np.ones(len(ds), np.bool_) if among is None else np.isin(np.arange(len(ds)), among)
    for c in range(len(ds.classes)):
        rows = np.flatnonzero((ds.label == c) & allowed)
        if rows.size == 0:
            continue
        files = np.unique(ds.file[rows])
        if kind == "file" or (kind == "mixed" and files.size >= 3):
            if files.size < 3:
                raise FlowDatasetError(
                    f"class {ds.classes[c]!r} has {files.size} capture file(s): a file split "
                    "needs 3; use --split time"
                )
            files = rng.permutation(files)
            n_test = max(1, round(files.size * ratios[2]))
            n_val = max(1, round(files.size * ratios[1]))
            parts = (files[n_test + n_val :], files[n_test : n_test + n_val], files[:n_test])
            for s, part in enumerate(parts):
                sides[s].append(rows[np.isin(ds.file[rows], part)])
        else:
            ordered = rows[np.argsort(ds.start_ns[rows], kind="stable")]
            a = round(ordered.size * ratios[0])
            b = round(ordered.size * (ratios[0] + ratios[1]))
            for s, part in enumerate((ordered[:a], ordered[a:b], ordered[b:])):
                sides[s].append(part)
    train, val, test = (np.sort(np.concatenate(s)) for s in sides)
    if train.size == 0 or test.size == 0:
        raise FlowDatasetError(f"split {kind!r} left no flow for training or testing")
    return FlowSplit(kind, train, val, test)


def cap_per_class(labels: IntArray, index: IntArray, cap: int, seed: int) -> IntArray:
    """At most ``cap`` uniformly drawn flows of each class among ``index`` (sorted)."""
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels[index]):
        rows = index[labels[index] == c]
        if rows.size > cap:
            rows = rng.choice(rows, size=cap, replace=False)
        out.append(rows)
    return np.sort(np.concatenate(out)) if out else index[:0]


def folder_classes(files: Sequence[Path]) -> tuple[list[str], list[int]]:
    """Device identification labels: the parent folder of each capture is its class."""
    names = sorted({f.parent.name for f in files})
    ids = {n: i for i, n in enumerate(names)}
    return names, [ids[f.parent.name] for f in files]


def per_class_counts(ds: FlowDataset) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for c in ds.label:
        counts[ds.classes[int(c)]] += 1
    return dict(counts)


__all__ = [
    "PAD",
    "FlowDataset",
    "FlowSplit",
    "build_dataset",
    "concat_datasets",
    "folder_classes",
    "link_context",
    "matrices",
    "rows_of",
    "split_flows",
]
