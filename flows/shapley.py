"""Shapley-value attributions of flow verdicts over five feature groups.

The players are groups of slots of the model input, not single slots:

=====================  ===================================================================
``metadata``           current flow: start offset, protocol, total bytes, total packets
``addresses_ports``    current flow: remote address (4 octets), remote port, device port
``packets``            current flow: time offset, size, direction of the first 10 packets
``payload``            current flow: the 3,000-slot payload buffer
``context``            every preceding flow (rows 1..R-1) as a whole
=====================  ===================================================================

A group that is "absent" from a coalition takes the value a record has where there is
nothing: the padding value -1 (and 0 in the present slot of an empty context row). So the
attribution of a group answers "how much does knowing this part of the flow move the
probability of the class, compared with not having it".

With five players the Shapley values are computed *exactly*: the model is evaluated on all
2^5 = 32 coalitions in one batch, and every class's attributions come out of the same
evaluations. The value function is the calibrated probability (softmax of logits / T), so
a flow's attributions sum to p(class | flow) - p(class | nothing). Captum's exact
``ShapleyValues`` (permutation enumeration, 600 evaluations per flow) gives the same numbers;
a test checks it, and :func:`captum_shapley` uses it for one-off explanations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import combinations
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from amlhp.flows import record
from amlhp.flows.calibration import softmax

if TYPE_CHECKING:
    from torch import Tensor, nn

GROUPS: Final = ("metadata", "addresses_ports", "packets", "payload", "context")
F32 = npt.NDArray[np.float32]


def group_slots(name: str, rows: int) -> npt.NDArray[np.bool_]:
    """Boolean (rows, ROW_LEN) mask of the slots a group covers."""
    mask = np.zeros((rows, record.ROW_LEN), np.bool_)
    if name == "metadata":
        mask[0, [record.SLOT_START, record.SLOT_PROTO, record.SLOT_BYTES, record.SLOT_PACKETS]] = (
            True
        )
    elif name == "addresses_ports":
        mask[0, record.SLOT_REMOTE_IP : record.SLOT_DEVICE_PORT + 1] = True
    elif name == "packets":
        mask[0, record.PACKETS_OFFSET : record.PAYLOAD_OFFSET] = True
    elif name == "payload":
        mask[0, record.PAYLOAD_OFFSET :] = True
    elif name == "context":
        mask[1:, :] = True
    else:
        raise ValueError(f"unknown feature group {name!r}; known: {', '.join(GROUPS)}")
    return mask


def absent_input(rows: int) -> F32:
    """The value every slot takes when its group is absent (padding, empty present slot)."""
    out = np.full((rows, record.ROW_LEN), record.PAD, np.float32)
    out[:, record.SLOT_PRESENT] = 0.0
    out[0, record.SLOT_PRESENT] = 1.0  # the current flow's row is always there
    return out


def _weights(g: int) -> dict[int, float]:
    """Shapley weight |S|! (G - |S| - 1)! / G! by coalition size."""
    return {s: math.factorial(s) * math.factorial(g - s - 1) / math.factorial(g) for s in range(g)}


class RowModel(Protocol):
    """A flow network in two halves over numpy arrays (the numpy network is one)."""

    def embed_rows(self, x: F32, first_row: int = 0) -> tuple[F32, F32]: ...

    def combine(self, rows: F32, present: F32) -> F32: ...


class TorchRows:
    """The torch FlowCNN seen as a :class:`RowModel` (training and evaluation use it)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net.eval()

    def embed_rows(self, x: F32, first_row: int = 0) -> tuple[F32, F32]:
        import torch

        with torch.inference_mode():
            emb, present = self.net.embed_rows(torch.from_numpy(x), first_row)  # type: ignore[operator]
        return emb.float().numpy(), present.float().numpy()

    def combine(self, rows: F32, present: F32) -> F32:
        import torch

        with torch.inference_mode():
            out = self.net.combine(torch.from_numpy(rows), torch.from_numpy(present))  # type: ignore[operator]
        return np.asarray(out.float().numpy(), np.float32)


def _as_numpy(x: Any) -> F32:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, np.float32)


def exact_shapley(
    model: Any,
    x: Any,
    *,
    temperature: float = 1.0,
    groups: tuple[str, ...] = GROUPS,
    batch_size: int = 16,
) -> tuple[F32, F32]:
    """Exact group Shapley values of calibrated probabilities, for every class.

    ``model``: the numpy network, a torch FlowCNN, or any torch module over whole matrices
    (the generic path, 32 full passes per flow). ``x``: (B, R, ROW_LEN), numpy or torch.
    Returns (phi (B, G, K), probs (B, K)): ``phi[b, g, k]`` is group g's contribution to
    the probability of class k for flow b.
    """
    xs = _as_numpy(x)
    if groups == GROUPS and hasattr(model, "embed_rows") and hasattr(model, "combine"):
        rows_model = TorchRows(model) if hasattr(model, "state_dict") else model
        return _exact_shapley_rows(rows_model, xs, temperature, batch_size)
    return _exact_shapley_generic(model, xs, temperature, groups, batch_size)


def _exact_shapley_generic(
    model: nn.Module, x: F32, temperature: float, groups: tuple[str, ...], batch_size: int
) -> tuple[F32, F32]:
    import torch

    model.eval()
    rows = x.shape[1]
    g = len(groups)
    masks = np.stack([group_slots(name, rows) for name in groups])  # (G, R, L)
    absent = absent_input(rows)
    coalitions = np.array([[(c >> i) & 1 for i in range(g)] for c in range(2**g)], np.float32)
    # slots present in each coalition: union of the groups it holds, plus never-grouped slots
    grouped = masks.any(axis=0)
    keep = (coalitions @ masks.reshape(g, -1).astype(np.float32)).reshape(
        2**g, rows, record.ROW_LEN
    ) > 0
    keep = keep | ~grouped

    def coalition_logits(chunk: F32) -> F32:
        n = chunk.shape[0]
        inputs = np.where(keep[None], chunk[:, None], absent)  # (n, 2^G, R, L)
        with torch.inference_mode():
            out = model(torch.from_numpy(inputs.reshape(n * 2**g, rows, record.ROW_LEN)))
        return np.asarray(out.float().numpy(), np.float32)

    return _shapley_by_chunks(x, g, temperature, batch_size, coalition_logits)


def _shapley_by_chunks(
    x: F32,
    g: int,
    temperature: float,
    batch_size: int,
    coalition_logits: Callable[[F32], F32],
) -> tuple[F32, F32]:
    """Shapley values and full-coalition probabilities, ``batch_size`` flows at a time.

    ``coalition_logits(chunk)`` gives the logits of every coalition of each flow of the
    chunk, (n * 2^G, K) in flow-major order; the two exact methods differ only there.
    """
    b = x.shape[0]
    values: F32 | None = None
    for lo in range(0, b, batch_size):
        chunk = x[lo : lo + batch_size]
        n = chunk.shape[0]
        probs = softmax(coalition_logits(chunk), temperature).reshape(n, 2**g, -1)
        if values is None:
            values = np.empty((b, 2**g, probs.shape[-1]), np.float32)
        values[lo : lo + n] = probs
    if values is None:
        raise ValueError("no flow to explain")
    return _shapley_from_values(values, g), values[:, 2**g - 1]


def _shapley_from_values(values: F32, g: int) -> F32:
    """phi (B, G, K) from coalition values (B, 2^G, K); bit i of a coalition = player i."""
    weights = _weights(g)
    phi = np.zeros((values.shape[0], g, values.shape[2]), np.float32)
    for i in range(g):
        others = [j for j in range(g) if j != i]
        for size in range(g):
            for members in combinations(others, size):
                without = sum(1 << j for j in members)
                phi[:, i] += weights[size] * (values[:, without | (1 << i)] - values[:, without])
    return phi


def _exact_shapley_rows(
    model: RowModel, x: F32, temperature: float, batch_size: int
) -> tuple[F32, F32]:
    """The same exact values for the flow CNN, about 9x cheaper.

    Rows are embedded independently, so the 32 coalitions need only 16 embeddings of the
    current row (the four row-0 groups on or off), the embeddings of the context rows and
    one of an empty row; only the inter-flow part and the head run 32 times. A model that
    embeds a row from its head slots and its branch parts (the numpy network) runs the
    costly branches on 4 of the 16 (the packets and payload groups on or off).
    """
    rows = x.shape[1]
    g = len(GROUPS)
    row_groups = GROUPS[:-1]  # the context group is last: bit g-1
    masks0 = np.stack([group_slots(name, rows)[0] for name in row_groups])  # (4, L)
    absent = absent_input(rows)
    subsets = np.array(
        [[(c >> i) & 1 for i in range(len(row_groups))] for c in range(2 ** len(row_groups))],
        np.float32,
    )
    keep0 = (subsets @ masks0.astype(np.float32)) > 0  # (16, L)
    keep0 = keep0 | ~masks0.any(axis=0)
    empty_emb, empty_present = model.embed_rows(absent[None, 1:], 1)

    by_parts = hasattr(model, "row_parts") and hasattr(model, "embed_heads")

    def coalition_logits(chunk: F32) -> F32:
        n = chunk.shape[0]
        row0 = np.where(keep0[None], chunk[:, :1], absent[0]).astype(np.float32)  # (n, 16, L)
        if by_parts:
            # a row's packet and payload branches read only the packets and payload groups
            # (bits 2 and 3): 4 distinct variants of the 16, at subsets 0, 4, 8 and 12
            variants = np.ascontiguousarray(row0[:, ::4]).reshape(n * 4, record.ROW_LEN)
            split: Any = model  # a NumpyFlowCNN (by_parts)
            parts = split.row_parts(variants).reshape(n, 4, -1)[:, np.arange(16) >> 2]
            emb0, pres0 = split.embed_heads(
                row0.reshape(n * 16, 1, record.ROW_LEN), parts.reshape(n * 16, 1, -1)
            )
        else:
            emb0, pres0 = model.embed_rows(row0.reshape(n * 16, 1, record.ROW_LEN), 0)
        emb0 = emb0.reshape(n, 16, -1, 1)
        pres0 = pres0.reshape(n, 16, 1)
        ctx_emb, ctx_present = model.embed_rows(np.ascontiguousarray(chunk[:, 1:]), 1)
        width = emb0.shape[2]
        all_rows = np.empty((n, 2**g, width, rows), np.float32)
        all_present = np.empty((n, 2**g, rows), np.float32)
        for c in range(2**g):
            sub = c & 15
            all_rows[:, c, :, :1] = emb0[:, sub]
            all_present[:, c, :1] = pres0[:, sub]
            if c >> (g - 1):
                all_rows[:, c, :, 1:] = ctx_emb
                all_present[:, c, 1:] = ctx_present
            else:
                all_rows[:, c, :, 1:] = empty_emb
                all_present[:, c, 1:] = empty_present
        return model.combine(
            all_rows.reshape(n * 2**g, width, rows), all_present.reshape(n * 2**g, rows)
        )

    return _shapley_by_chunks(x, g, temperature, batch_size, coalition_logits)


def captum_shapley(
    model: nn.Module,
    x: Tensor,
    target: int,
    *,
    temperature: float = 1.0,
    groups: tuple[str, ...] = GROUPS,
) -> npt.NDArray[np.float32]:
    """The same attributions through Captum's exact ``ShapleyValues`` (one flow, one class).

    Slots outside every group get their own input value as baseline, so they are a null
    player and change nobody's value. Returns (G,) for ``x`` of shape (1, R, ROW_LEN).
    """
    import torch
    from captum.attr import ShapleyValues

    rows = x.shape[1]
    feature_mask = torch.zeros(1, rows, record.ROW_LEN, dtype=torch.long)
    grouped = torch.zeros(rows, record.ROW_LEN, dtype=torch.bool)
    for i, name in enumerate(groups):
        m = torch.from_numpy(group_slots(name, rows))
        feature_mask[0][m] = i
        grouped |= m
    baseline = torch.where(grouped, torch.from_numpy(absent_input(rows)), x[0]).unsqueeze(0)
    # ungrouped slots join group 0 with a baseline equal to their input: no effect
    model.eval()

    def forward(inp: Tensor) -> Tensor:
        return torch.softmax(model(inp).float() / temperature, dim=1)

    sv = ShapleyValues(forward)
    with torch.no_grad():
        attr = sv.attribute(x, baselines=baseline, target=target, feature_mask=feature_mask)
    out = np.zeros(len(groups), np.float32)
    for i in range(len(groups)):
        sel = feature_mask[0] == i
        out[i] = float(attr[0][sel].flatten()[0])
    return out
