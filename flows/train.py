"""Training and batch prediction of the flow CNN.

Adam, cross-entropy with class weights 1/sqrt(class frequency) (IoT Sentinel is lopsided:
two hubs own half the flows), batch 64, the best epoch by validation macro F1 kept (as the
packet model does; the metric helpers are the packet model's). *Context dropout*: in each
batch a share of the matrices have their context rows emptied, so that one model serves
all three inference strategies, the "each flow alone" one included.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.nn import functional as F

from amlhp.flows.dataset import FlowDataset, FlowSplit, cap_per_class, matrices
from amlhp.flows.network import FlowCNN
from amlhp.flows.record import empty_row
from amlhp.model.metrics import Report, classification_report
from amlhp.model.train import BestEpoch, ProgressFn, TrainResult, seed_everything


@dataclass(frozen=True)
class FlowTrainConfig:
    epochs: int = 12
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    max_per_class: int | None = 600
    context_dropout: float = 0.3
    threads: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FlowTrainResult(TrainResult):
    """The packet model's training record, plus how many flows were trained on."""

    train_flows: int = 0


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module,
    ds: FlowDataset,
    index: npt.NDArray[np.int64],
    *,
    with_context: bool = True,
    batch_size: int = 256,
) -> npt.NDArray[np.float32]:
    """Logits (N, K) of flows ``index``, in eval mode."""
    model.eval()
    out = []
    for lo in range(0, len(index), batch_size):
        x = torch.from_numpy(matrices(ds, index[lo : lo + batch_size], with_context=with_context))
        out.append(model(x).float().numpy())
    if not out:
        return np.zeros((0, len(ds.classes)), np.float32)
    return np.concatenate(out).astype(np.float32)


def class_weights(labels: npt.NDArray[np.int64], k: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    w = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1.0)), 0.0)
    w = w / (w[counts > 0].mean() if (counts > 0).any() else 1.0)
    return torch.tensor(w, dtype=torch.float32)


def train_flow_model(
    model: FlowCNN,
    ds: FlowDataset,
    split: FlowSplit,
    config: FlowTrainConfig = FlowTrainConfig(),
    on_progress: ProgressFn | None = None,
) -> FlowTrainResult:
    """Train in place; on return ``model`` holds the best epoch's weights, in eval mode."""
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    train = split.train
    if config.max_per_class is not None:
        train = cap_per_class(ds.label, train, config.max_per_class, config.seed)
    k = len(ds.classes)
    weights = class_weights(ds.label[train], k)
    rng = np.random.default_rng(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    result = FlowTrainResult(train_flows=int(train.size))
    steps = (train.size + config.batch_size - 1) // config.batch_size
    blank = torch.from_numpy(empty_row())

    def validate() -> Report:
        pred = predict_logits(model, ds, split.val).argmax(axis=1)
        return classification_report(ds.label[split.val], pred, ds.classes)

    keeper = BestEpoch(model, result, floor=-np.inf)
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = rng.permutation(train)
        total, seen = 0.0, 0
        t0 = time.perf_counter()
        for step in range(steps):
            rows = order[step * config.batch_size : (step + 1) * config.batch_size]
            x = torch.from_numpy(matrices(ds, rows))
            drop = torch.from_numpy(rng.random(rows.size) < config.context_dropout)
            if drop.any():
                x[drop, 1:] = blank
            y = torch.from_numpy(ds.label[rows])
            loss = F.cross_entropy(model(x), y, weight=weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * rows.size
            seen += rows.size
            if on_progress is not None:
                on_progress(epoch, step + 1, steps, total / max(seen, 1))
        keeper.end_epoch(epoch, total, seen, t0, validate if split.val.size else None)
    keeper.finish()
    return result
