"""The flow CNN in numpy alone: what the serving install runs (no torch).

Why: the flow worker runs beside the packet worker on gateways' clusters that install
``amlhp`` without the ``train`` extra. This module computes what
:class:`amlhp.flows.network.FlowCNN` computes, from the artifact's safetensors arrays read
with ``safetensors.numpy`` (no pickle, no torch): the same fixed row features, each
``(1, k)`` convolution as one GEMM over sliding windows, the inter-flow ``(3, 1)``
convolution as three GEMMs over shifted rows, the masked max over the rows that hold a
flow and the two-layer head, all in float32. ``tests/flows/test_numpy_net.py`` checks it
against the torch network: logits within 1e-4, the same class, and the same Shapley values.

It keeps the torch network's two halves (``embed_rows`` and ``combine``), because rows are
embedded independently: the exact Shapley values of :mod:`amlhp.flows.shapley` embed the
current row 16 times and the context once, and run only ``combine`` 32 times.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from amlhp.flows.exceptions import FlowArtifactError
from amlhp.flows.record import (
    END_MARKER,
    FIRST_PACKETS,
    META_LEN,
    PACKET_FIELDS,
    PACKETS_OFFSET,
    PAD,
    PAYLOAD_OFFSET,
    PAYLOAD_SLOTS,
    SLOT_BYTES,
    SLOT_DEVICE_PORT,
    SLOT_PACKETS,
    SLOT_PRESENT,
    SLOT_PROTO,
    SLOT_REMOTE_IP,
    SLOT_REMOTE_PORT,
    SLOT_START,
    START_MARKER,
)

F32 = npt.NDArray[np.float32]
_ROW_CHUNK = 64
#: the fixed feature scaling (log for times and counts), shared with the torch network
#: (:class:`amlhp.flows.network.RowFeatures`): the two must scale exactly alike
LOG_HOUR = math.log1p(3600.0)
LOG_MINUTE = math.log1p(60.0)
LOG_BYTES = math.log1p(1e7)
LOG_PACKETS = math.log1p(1e5)
#: the weights a FlowCNN artifact holds (name -> dimensions), checked on load
_SHAPES = {
    "meta.weight": 4,
    "meta.bias": 1,
    "pk1.weight": 4,
    "pk1.bias": 1,
    "pk2.weight": 4,
    "pk2.bias": 1,
    "pl1.weight": 4,
    "pl1.bias": 1,
    "pl2.weight": 4,
    "pl2.bias": 1,
    "row.weight": 4,
    "row.bias": 1,
    "inter.weight": 4,
    "inter.bias": 1,
    "head.0.weight": 2,
    "head.0.bias": 1,
    "head.3.weight": 2,
    "head.3.bias": 1,
}


def _payload_table() -> F32:
    """Features of each payload slot code (see :func:`_payload_codes`): byte / 255, start
    marker, end marker, padding, as the torch network's four payload channels."""
    table = np.zeros((264, 4), np.float32)
    table[:256, 0] = np.arange(256) / 255.0
    table[_code(START_MARKER), 1] = 1.0
    table[_code(END_MARKER), 2] = 1.0
    table[_code(PAD), 3] = 1.0
    return table


def _code(value: float) -> int:
    return int(value) if value >= 0 else 255 - int(value)


def _payload_codes(b: F32) -> npt.NDArray[np.intp]:
    """Payload slots to table rows: a byte is itself, a marker -m is 255 + m."""
    return np.where(b >= 0, b, 255.0 - b).astype(np.intp)


_PAYLOAD_TABLE = _payload_table()


def payload_features(slots: F32) -> F32:
    """(N, 3000) payload slots -> (N, 3000, 4) features, channels last."""
    return _PAYLOAD_TABLE[_payload_codes(slots)]


def payload_prefix(slots: F32) -> int:
    """How many leading payload slots decide the payload branch's output for these rows.

    The branch (see :meth:`NumpyFlowCNN._payload`) has no padding of its own and ends in a
    max over positions; its second convolution's window ``q`` reads slots
    ``[32 q, 32 q + 84)``, so every window past the rows' last non-padding slot reads only
    padding and gives the same output. Computing up to the first such window gives the
    same maximum: with the taps' 64 payload bytes a flow fills at most 660 of the 3,000
    slots, and the branch then reads 756."""
    used = np.flatnonzero((slots != PAD).any(axis=0))
    last = int(used[-1]) if used.size else -1
    first_padded = (last + 32) // 32
    return min(PAYLOAD_SLOTS, 32 * first_padded + 84)


def head_features(x: F32) -> tuple[F32, F32, F32]:
    """(N, ROW_LEN) rows -> meta (N, 11), packets (N, 4, 10), present (N,): the torch
    network's :class:`~amlhp.flows.network.RowFeatures` before the payload."""
    present = (x[:, SLOT_PRESENT] > 0.5).astype(np.float32)
    m = x[:, :META_LEN]
    valid = (m >= 0).astype(np.float32)
    pos = np.maximum(m, 0.0)
    meta = np.stack(
        [
            present,
            np.log1p(pos[:, SLOT_START]) / LOG_HOUR,
            pos[:, SLOT_REMOTE_IP] / 255.0,
            pos[:, SLOT_REMOTE_IP + 1] / 255.0,
            pos[:, SLOT_REMOTE_IP + 2] / 255.0,
            pos[:, SLOT_REMOTE_IP + 3] / 255.0,
            pos[:, SLOT_REMOTE_PORT] / 65535.0,
            pos[:, SLOT_DEVICE_PORT] / 65535.0,
            pos[:, SLOT_PROTO] / 255.0,
            np.log1p(pos[:, SLOT_BYTES]) / LOG_BYTES,
            np.log1p(pos[:, SLOT_PACKETS]) / LOG_PACKETS,
        ],
        axis=1,
    ).astype(np.float32)
    meta *= np.concatenate([present[:, None], valid[:, 1:]], axis=1)
    p = x[:, PACKETS_OFFSET:PAYLOAD_OFFSET].reshape(-1, FIRST_PACKETS, PACKET_FIELDS)
    has = (p[..., 1] >= 0).astype(np.float32)
    pp = np.maximum(p, 0.0)
    packets = np.stack(
        [np.log1p(pp[..., 0]) / LOG_MINUTE, pp[..., 1] / 1500.0, pp[..., 2], has], axis=1
    ).astype(np.float32)
    packets *= has[:, None, :]
    return meta, packets, present


def _conv1d(x: F32, w: F32, bias: F32, stride: int = 1, pad: int = 0) -> F32:
    """(N, C_in, L) * (C_out, C_in, k) -> (N, C_out, L_out), one GEMM over the windows."""
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad)))
    k = w.shape[-1]
    win = sliding_window_view(x, k, axis=2)[:, :, ::stride]  # (N, C_in, L_out, k)
    n, c_in, l_out, _ = win.shape
    cols = win.transpose(0, 2, 1, 3).reshape(n * l_out, c_in * k)
    out = cols @ w.reshape(w.shape[0], -1).T + bias
    return np.ascontiguousarray(out.reshape(n, l_out, -1).transpose(0, 2, 1))


def _relu(x: F32) -> F32:
    return np.maximum(x, 0.0, out=x)


class NumpyFlowCNN:
    """A FlowCNN's inference from its weights (numpy arrays); see the module docstring."""

    def __init__(self, weights: Mapping[str, npt.NDArray[Any]]) -> None:
        missing = [k for k, dims in _SHAPES.items() if k not in weights or weights[k].ndim != dims]
        if missing:
            raise FlowArtifactError(f"flow model weights lack or misshape: {', '.join(missing)}")
        w = {k: np.asarray(weights[k], np.float32) for k in _SHAPES}
        self.weights = w
        self.meta_w = w["meta.weight"][:, :, 0, 0]  # (16, 11)
        self.meta_b = w["meta.bias"]
        self.conv = {
            name: (w[f"{name}.weight"][:, :, 0, :], w[f"{name}.bias"])
            for name in ("pk1", "pk2", "pl1", "pl2")
        }
        w1 = self.conv["pl1"][0]  # (C_out, C_in, 8) -> taps 0-3 and 4-7 as (4 * C_in, C_out)
        if w1.shape[2] != 8 or PAYLOAD_SLOTS % 4:
            raise FlowArtifactError("the payload convolution is not kernel 8 over 4-slot blocks")
        self.pl1_blocks = np.concatenate(
            [
                w1[:, :, :4].transpose(2, 1, 0).reshape(-1, w1.shape[0]),
                w1[:, :, 4:].transpose(2, 1, 0).reshape(-1, w1.shape[0]),
            ],
            axis=1,
        )
        self.row_w = w["row.weight"][:, :, 0, 0]  # (W, 64)
        self.row_b = w["row.bias"]
        self.inter_w = w["inter.weight"][:, :, :, 0]  # (W, W, 3)
        self.inter_taps = np.ascontiguousarray(
            self.inter_w.transpose(2, 1, 0).reshape(-1, self.inter_w.shape[0])
        )  # (3W, W): tap j's (W_in, W_out) block at rows j*W..(j+1)*W
        self.inter_b = w["inter.bias"]
        self.h0_w, self.h0_b = w["head.0.weight"], w["head.0.bias"]
        self.h1_w, self.h1_b = w["head.3.weight"], w["head.3.bias"]
        self.num_classes = int(self.h1_b.shape[0])
        self.width = int(self.row_b.shape[0])

    def _payload(self, payload: F32) -> F32:
        """The payload branch, channels last. The first convolution (kernel 8, stride 4)
        is two GEMMs over 4-slot blocks: output t sees block t (taps 0-3) and t + 1."""
        n, length, c = payload.shape
        blocks = payload.reshape(n, length // 4, 4 * c)
        y = blocks @ self.pl1_blocks  # (N, L/4, 2 * C_out)
        half = self.pl1_blocks.shape[1] // 2
        d = _relu(y[:, :-1, :half] + y[:, 1:, half:] + self.conv["pl1"][1])  # (N, 749, 16)
        pooled = d.shape[1] // 4
        d = d[:, : pooled * 4].reshape(n, pooled, 4, -1).max(axis=2)  # (N, 187, 16)
        w2, b2 = self.conv["pl2"]
        win = sliding_window_view(d, w2.shape[2], axis=1)[:, ::2]  # (N, 92, 16, 5)
        cols = win.reshape(n * win.shape[1], -1)  # channel-major taps, as w2's (C_in, k)
        out = _relu(cols @ w2.reshape(w2.shape[0], -1).T + b2)
        return out.reshape(n, win.shape[1], -1).max(axis=1)

    def row_parts(self, rows: F32) -> F32:
        """(N, ROW_LEN) -> (N, 48): each row's packets (16) and payload (32) branches.

        They do not depend on the row's start offset (slot 1, relative to the matrix's
        current flow), so a flow's parts serve every matrix it is a row of: the scorer
        computes them once per flow and keeps them while the flow is device context."""
        if rows.shape[0] == 0:
            return np.zeros((0, 48), np.float32)
        _, packets, _ = head_features(rows)
        p = _relu(_conv1d(packets, *self.conv["pk1"], pad=1))
        p = _relu(_conv1d(p, *self.conv["pk2"], pad=1)).max(axis=2)  # (N, 16)
        d = []
        for lo in range(0, rows.shape[0], _ROW_CHUNK):  # the intermediates stay in cache
            slots = rows[lo : lo + _ROW_CHUNK, PAYLOAD_OFFSET:]
            d.append(self._payload(payload_features(slots[:, : payload_prefix(slots)])))
        payload = np.concatenate(d) if d else np.zeros((0, 32), np.float32)
        return np.concatenate([p, payload], axis=1)

    def embed_heads(self, heads: F32, parts: F32) -> tuple[F32, F32]:
        """Row embeddings from the rows' head slots (B, R', >= HEAD_LEN) and their parts
        (B, R', 48): (B, width, R') and the present mask (B, R')."""
        b, r = heads.shape[:2]
        meta, _, present = head_features(heads.reshape(b * r, -1))
        m = _relu(meta @ self.meta_w.T + self.meta_b)  # (N, 16)
        rows = _relu(
            np.concatenate([m, parts.reshape(b * r, -1)], axis=1) @ self.row_w.T + self.row_b
        )
        return (
            np.ascontiguousarray(rows.reshape(b, r, -1).transpose(0, 2, 1)),
            present.reshape(b, r),
        )

    def embed_rows(self, x: F32, first_row: int = 0) -> tuple[F32, F32]:
        """(B, R', ROW_LEN) -> row embeddings (B, width, R') and present mask (B, R')."""
        del first_row  # no blind groups here: every row is embedded the same way
        b, r, length = x.shape
        parts = self.row_parts(x.reshape(b * r, length))
        return self.embed_heads(x, parts.reshape(b, r, -1))

    def combine(self, rows: F32, present: F32) -> F32:
        """Inter-flow part and head: row embeddings (B, W, R) + present (B, R) -> logits."""
        return self.head_out(self.summary(rows, present))

    def summary(self, rows: F32, present: F32) -> F32:
        """The (B, 64) hidden layer of the head: what the class is read from, and where
        :mod:`amlhp.flows.hidden_profile` measures how far a flow is from its class's flows."""
        b, w, r = rows.shape
        padded = np.pad(rows.transpose(0, 2, 1), ((0, 0), (1, 1), (0, 0)))  # (B, R + 2, W)
        # the kernel-3 convolution over rows as one product: each row's three neighbours
        # side by side (B * R, 3W) times the taps stacked (3W, W)
        windows = np.concatenate([padded[:, j : j + r] for j in range(3)], axis=2)
        mixed = windows.reshape(b * r, 3 * w) @ self.inter_taps + self.inter_b
        mixed = _relu(np.asarray(mixed.reshape(b, r, -1), np.float32))
        masked = np.where(present[:, :, None] > 0, mixed, np.finfo(np.float32).min)
        context = masked.max(axis=1)
        context = np.where(present.sum(axis=1, keepdims=True) > 0, context, 0.0)
        h = np.concatenate([rows[:, :, 0], context], axis=1).astype(np.float32)
        return _relu(h @ self.h0_w.T + self.h0_b)

    def head_out(self, hidden: F32) -> F32:
        """Logits (B, K) of the head's hidden layer (B, 64)."""
        out: F32 = (hidden @ self.h1_w.T + self.h1_b).astype(np.float32)
        return out

    def __call__(self, x: F32, batch_size: int = 256) -> F32:
        """Class logits (B, K) of flow matrices (B, R, ROW_LEN), ``batch_size`` at a time."""
        x = np.asarray(x, np.float32)
        if x.shape[0] == 0:
            return np.zeros((0, self.num_classes), np.float32)
        parts = [
            self.combine(*self.embed_rows(x[lo : lo + batch_size]))
            for lo in range(0, x.shape[0], batch_size)
        ]
        return np.concatenate(parts)


__all__ = ["NumpyFlowCNN", "head_features", "payload_features"]
