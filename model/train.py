"""Training loop with the paper's hyperparameters (Table 3), seeded and reproducible.

Adam, learning rate 1e-2, batch 128, 10 epochs, cross-entropy; dropout 0.1, L = 2 and P = 64
are model/encoder settings. After each epoch the model is scored on the validation side and
the best epoch by macro F1 is kept (the paper does not say which epoch it reports; keeping
the best on validation never looks at the test side).

Two stabilisers the paper does not mention: the learning rate warms up linearly over the
first ``warmup`` fraction of the steps and then decays to zero on a cosine (1e-2 is the
peak), and gradients are clipped to norm ``clip_norm``. With a constant 1e-2 and no
clipping, one of our first full runs collapsed to chance level in epoch 3 (loss from 0.19
to ln 9); post-norm transformers are known to need a warm-up at such rates.

Reproducibility: one ``seed`` sets the weight initialisation, the shuffling and dropout;
with the same data, seed and thread count a run gives the same weights.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from amlhp.model.augment import augment_batch, ipv6_twins
from amlhp.model.dataset import LabelledPackets, Split
from amlhp.model.metrics import Report, classification_report
from amlhp.model.packet_bytes import packet_bytes
from amlhp.model.registry import input_bytes, input_kind

ProgressFn = Callable[[int, int, int, float], None]  # epoch, step, steps, running loss


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters; the defaults are the paper's final selection (Table 3)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-2
    warmup: float = 0.05
    clip_norm: float | None = 1.0
    seed: int = 0
    threads: int | None = None
    eval_batch_size: int = 2048
    #: probability of each fingerprint rewrite per training packet (model/augment.py)
    augment: float = 0.0
    #: probability that an IPv4 TCP/UDP training packet becomes its IPv6 twin
    #: (model/augment.py: ipv6_twins)
    ipv6_twins: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


def model_inputs_for(model: nn.Module, data: LabelledPackets) -> tuple[Tensor, ...]:
    """The uint8 tensors ``model`` takes, built from the labelled packets."""
    if input_kind(model) == "packet_bytes":
        return (torch.from_numpy(packet_bytes(data.header, data.payload, input_bytes(model))),)
    p = int(getattr(model, "payload_bytes", None) or data.payload.shape[1])
    if data.payload.shape[1] < p:
        raise ValueError(f"model reads P={p} payload bytes, data has {data.payload.shape[1]}")
    return (
        torch.from_numpy(np.ascontiguousarray(data.header)),
        torch.from_numpy(np.ascontiguousarray(data.payload[:, :p])),
    )


@torch.inference_mode()
def logits_of(model: nn.Module, inputs: tuple[Tensor, ...], batch_size: int = 2048) -> Tensor:
    """Class logits (N, K) in batches, in eval mode, without gradients."""
    was_training = model.training
    model.eval()
    n = inputs[0].shape[0]
    out: list[Tensor] = []
    for lo in range(0, n, batch_size):
        out.append(model(*(x[lo : lo + batch_size] for x in inputs)).float())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


def predict(
    model: nn.Module, inputs: tuple[Tensor, ...], batch_size: int = 2048
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Class ids and softmax probabilities, in batches, in eval mode."""
    p = torch.softmax(logits_of(model, inputs, batch_size), dim=1)
    return p.argmax(dim=1).numpy().astype(np.int64), p.numpy().astype(np.float32)


def lr_factor(step: int, total: int, warmup: float) -> float:
    """Linear warm-up to 1 over ``warmup * total`` steps, then cosine decay to 0."""
    warm = max(1, int(warmup * total))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


class BestEpoch:
    """The history of a training run and the weights of its best epoch so far.

    Both training loops (packets here, flows in :mod:`amlhp.flows.train`) keep the epoch
    with the best validation macro F1, or the lowest training loss where there is no
    validation side; an epoch whose loss is not finite is never kept, whatever its
    garbage weights score. Created just before the first epoch: the run's time starts here.
    """

    def __init__(self, model: nn.Module, result: TrainResult, floor: float) -> None:
        self.model, self.result, self.best = model, result, floor
        self.state = copy.deepcopy(model.state_dict())
        self.started = time.perf_counter()

    def end_epoch(
        self,
        epoch: int,
        loss_sum: float,
        seen: int,
        epoch_started: float,
        validate: Callable[[], Report] | None,
    ) -> None:
        """Record one epoch; its seconds are the training steps', not the validation's."""
        entry: dict[str, float] = {
            "epoch": epoch,
            "train_loss": loss_sum / max(seen, 1),
            "seconds": time.perf_counter() - epoch_started,
        }
        score = -entry["train_loss"]
        if validate is not None:
            report = validate()
            entry.update(val_accuracy=report.accuracy, val_macro_f1=report.macro_f1)
            score = report.macro_f1
        if not np.isfinite(entry["train_loss"]):
            score = -np.inf
        if score > self.best:
            self.best = score
            self.result.best_epoch = epoch
            self.state = copy.deepcopy(self.model.state_dict())
        self.result.history.append(entry)

    def finish(self) -> None:
        """Load the best epoch's weights, in eval mode, and note the run's seconds."""
        self.model.load_state_dict(self.state)
        self.model.eval()
        self.result.seconds = time.perf_counter() - self.started


def train_model(
    model: nn.Module,
    data: LabelledPackets,
    split: Split,
    config: TrainConfig | None = None,
    on_progress: ProgressFn | None = None,
) -> TrainResult:
    """Train in place; on return ``model`` holds the best epoch's weights, in eval mode."""
    config = config or TrainConfig()
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    inputs = model_inputs_for(model, data)
    labels = torch.from_numpy(data.labels)
    train_idx = torch.from_numpy(split.train)
    val_inputs = tuple(x[split.val] for x in inputs)
    val_labels = data.labels[split.val]
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    steps = (train_idx.numel() + config.batch_size - 1) // config.batch_size
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps * config.epochs, config.warmup)
    )
    result = TrainResult()

    def validate() -> Report:
        pred, _ = predict(model, val_inputs, config.eval_batch_size)
        return classification_report(val_labels, pred, data.classes)

    # -1.0, not -inf: without a validation side an epoch is kept only below a mean loss of 1
    keeper = BestEpoch(model, result, floor=-1.0)
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = train_idx[torch.randperm(train_idx.numel(), generator=generator)]
        total = 0.0
        seen = 0
        epoch_start = time.perf_counter()
        for step in range(steps):
            rows = order[step * config.batch_size : (step + 1) * config.batch_size]
            batch = tuple(x[rows] for x in inputs)
            if config.augment > 0 and len(batch) == 2:  # header + payload models only
                batch = augment_batch(batch[0], batch[1], config.augment, generator)
            if config.ipv6_twins > 0 and len(batch) == 2:
                twins = ipv6_twins(batch[0], config.ipv6_twins, data.config.mask_fields, generator)
                batch = (twins, batch[1])
            logits = model(*batch)
            loss = F.cross_entropy(logits, labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * rows.numel()
            seen += rows.numel()
            if on_progress is not None:
                on_progress(epoch, step + 1, steps, total / max(seen, 1))
        keeper.end_epoch(epoch, total, seen, epoch_start, validate if val_labels.size else None)
    keeper.finish()
    return result
