"""The three inference strategies, compared on accuracy, coverage, cost and selectivity.

Strategies (the same trained model serves all three; see :mod:`amlhp.flows.train`):

``per_flow``
    Every flow is classified alone when it closes: its matrix has no context rows.
``sliding_window``
    Every flow is classified when it closes, with the device's up to five preceding flows
    as context rows (the model's default input).
``device_window``
    Once per device per time window (``window_s``, default 60 s): the window's last flow
    with the window's preceding flows (at most five) as context; that verdict is the
    verdict of every flow of the device in the window. Flows the matrix does not hold are
    never inspected.

Definitions (per test flow; every number is over the test flows):

* accuracy and macro F1: each flow's verdict against its label;
* coverage: the share of flows whose verdict is confident (calibrated confidence >= the
  model's threshold);
* computational cost: model invocations per 1,000 flows, measured CPU milliseconds per
  1,000 flows (one thread, batches of 256, matrix assembly included) and MFLOPs per
  1,000 flows (FLOPs of one invocation from torch's counter x invocations);
* traffic selectivity: the share of packets (and of bytes) whose contents the strategy
  must inspect: the first ten packets of each flow that enters a matrix. Every strategy
  still counts all packets and bytes (two counters per flow); that is not inspection.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
import torch

from amlhp.flows.calibration import softmax
from amlhp.flows.dataset import FlowDataset, matrices
from amlhp.flows.network import flops_per_matrix
from amlhp.flows.record import empty_row
from amlhp.model.metrics import classification_report

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
STRATEGIES = ("per_flow", "sliding_window", "device_window")


@dataclass(frozen=True)
class StrategyResult:
    strategy: str
    flows: int
    accuracy: float
    macro_f1: float
    coverage: float
    invocations_per_1k_flows: float
    cpu_ms_per_1k_flows: float
    mflops_per_1k_flows: float
    packet_selectivity: float
    byte_selectivity: float

    def as_dict(self) -> dict[str, float | int | str]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def device_windows(
    ds: FlowDataset, index: IntArray, window_s: float
) -> tuple[IntArray, IntArray, list[BoolArray]]:
    """Per (device, window): its last flow, the flows whose verdict it gives, and the
    context rows kept (preceding flows of the same window)."""
    w_ns = int(window_s * 1e9)
    first: dict[int, int] = {}
    for i in index:
        d = int(ds.device[i])
        first[d] = min(first.get(d, int(ds.start_ns[i])), int(ds.start_ns[i]))
    win = np.array([(int(ds.start_ns[i]) - first[int(ds.device[i])]) // w_ns for i in index])
    groups: dict[tuple[int, int], list[int]] = {}
    for i, w in zip(index, win, strict=True):
        groups.setdefault((int(ds.device[i]), int(w)), []).append(int(i))
    owner = np.empty(len(index), np.int64)
    pos = {int(i): p for p, i in enumerate(index)}
    lasts, keep = [], []
    for g, (_, members) in enumerate(sorted(groups.items())):
        members.sort(key=lambda j: (int(ds.start_ns[j]), j))
        last = members[-1]
        lasts.append(last)
        in_window = set(members)
        keep.append(np.array([c in in_window for c in ds.context[last]], np.bool_))
        for j in members:
            owner[pos[j]] = g
    return np.asarray(lasts, np.int64), owner, keep


def _timed_probs(
    model: torch.nn.Module,
    ds: FlowDataset,
    index: IntArray,
    temperature: float,
    *,
    with_context: bool,
    keep_rows: list[BoolArray] | None = None,
) -> tuple[np.ndarray, float]:
    model.eval()
    out = []
    blank = torch.from_numpy(empty_row())
    start = time.process_time()
    with torch.inference_mode():
        for lo in range(0, len(index), 256):
            x = torch.from_numpy(matrices(ds, index[lo : lo + 256], with_context=with_context))
            if keep_rows is not None:
                for b, keep in enumerate(keep_rows[lo : lo + 256]):
                    for r, k in enumerate(keep[: x.shape[1] - 1]):
                        if not k:
                            x[b, r + 1] = blank
            out.append(model(x).float().numpy())
    seconds = time.process_time() - start
    logits = np.concatenate(out) if out else np.zeros((0, len(ds.classes)), np.float32)
    return softmax(logits, temperature), seconds


def compare_strategies(
    model: torch.nn.Module,
    ds: FlowDataset,
    index: IntArray,
    *,
    temperature: float,
    threshold: float,
    window_s: float = 60.0,
) -> list[StrategyResult]:
    """Run the three strategies over flows ``index`` and measure them (module docstring)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        flops = flops_per_matrix(model, ds.config.rows)
        n = len(index)
        labels = ds.label[index]
        total_packets = float(ds.packets[index].sum())
        total_bytes = float(ds.bytes[index].sum())
        head_packets = ds.head_packets()
        head_bytes = ds.head_bytes()
        results = []
        for name in STRATEGIES:
            if name == "device_window":
                lasts, owner, keep = device_windows(ds, index, window_s)
                probs, secs = _timed_probs(
                    model, ds, lasts, temperature, with_context=True, keep_rows=keep
                )
                flow_probs = probs[owner]
                inspected = np.unique(
                    np.concatenate(
                        [lasts]
                        + [
                            ds.context[j][k & (ds.context[j] >= 0)]
                            for j, k in zip(lasts, keep, strict=True)
                        ]
                    )
                )
                calls = len(lasts)
            else:
                flow_probs, secs = _timed_probs(
                    model, ds, index, temperature, with_context=name == "sliding_window"
                )
                inspected = index
                calls = n
            pred = flow_probs.argmax(axis=1)
            conf = flow_probs.max(axis=1)
            report = classification_report(labels, pred, ds.classes)
            per_k = 1000.0 / max(n, 1)
            results.append(
                StrategyResult(
                    strategy=name,
                    flows=n,
                    accuracy=report.accuracy,
                    macro_f1=report.macro_f1,
                    coverage=float(np.mean(conf >= threshold)) if n else 0.0,
                    invocations_per_1k_flows=calls * per_k,
                    cpu_ms_per_1k_flows=secs * 1000.0 * per_k,
                    mflops_per_1k_flows=calls * flops / 1e6 * per_k,
                    packet_selectivity=float(head_packets[inspected].sum()) / max(total_packets, 1),
                    byte_selectivity=float(head_bytes[inspected].sum()) / max(total_bytes, 1),
                )
            )
        return results
    finally:
        torch.set_num_threads(threads)
