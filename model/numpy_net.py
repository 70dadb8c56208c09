"""IoT-AMLHP inference in numpy alone: the scorer of an install without torch.

Why: a gateway tap or a CPU worker needs the committed model, not the 6 GB of torch and its
CUDA wheels. This module computes what :class:`amlhp.model.reparam.FastAMLHP` computes,
from the artifact's safetensors arrays read with ``safetensors.numpy`` (no pickle, no
torch): per-tap lookup tables for each modality's extractor (built in float64, the same
algebra as :class:`~amlhp.model.reparam.FastExtractor`), max pooling as a reshape, the
projection as one GEMM, the post-norm encoder layers and the classifier head, all in
float32. The tests check it against the torch model on every packet of the demo capture:
the same class, probabilities within 1e-5.

The sizes are read from the weights (channels, kernels, tokens, feature dimension, layer
count); the artifact's ``config`` gives what the weights cannot say (byte encoding, heads,
masked modalities). Architectures other than the IoT-AMLHP family need torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from amlhp.encoders.layout import HEADER_LEN
from amlhp.model.exceptions import ScoringError

F32 = npt.NDArray[np.float32]
Arrays = Mapping[str, npt.NDArray[Any]]


def same_padding(kernel_size: int) -> tuple[int, int]:
    """Left/right zero padding that keeps the length for any kernel size, even ones too."""
    left = (kernel_size - 1) // 2
    return left, kernel_size - 1 - left


def byte_feature_table(encoding: str) -> npt.NDArray[np.float64]:
    """(256, channels): the features of each byte value (``value``: v / 255; ``bits``: its
    eight bits, most significant first), as :func:`amlhp.model.network.byte_features`."""
    values = np.arange(256)
    if encoding == "value":
        return (values / 255.0)[:, None]
    if encoding == "bits":
        return ((values[:, None] >> np.arange(7, -1, -1)[None, :]) & 1).astype(np.float64)
    raise ScoringError(f"unknown byte_encoding {encoding!r}: expected 'value' or 'bits'")


class NumpyExtractor:
    """One modality's extractor as per-tap tables ``T_j[v]`` of (B+1)C numbers: B branch
    pre-activations plus residual, then the residual (see FastExtractor for the algebra)."""

    def __init__(self, w: Arrays, length: int, feature_dim: int, encoding: str) -> None:
        stem_w = w["stem.weight"][:, :, 0].astype(np.float64)  # (C, in)
        stem_b = w["stem.bias"].astype(np.float64)
        kernels = [w[f"branches.{i}.depthwise.weight"].shape[2] for i in range(_count(w))]
        c, nb = stem_w.shape[0], len(kernels)
        self.lo = max(same_padding(k)[0] for k in kernels)
        self.hi = max(same_padding(k)[1] for k in kernels)
        window = self.lo + self.hi + 1
        stem = stem_w @ byte_feature_table(encoding).T + stem_b[:, None]  # (C, 256)
        tables = np.zeros((window, 257, (nb + 1) * c))  # row 256: a tap outside the sequence
        tables[self.lo, :256, nb * c :] = stem.T
        for i, k in enumerate(kernels):
            cols = slice(i * c, (i + 1) * c)
            dw = w[f"branches.{i}.depthwise.weight"][:, 0, :].astype(np.float64)  # (C, k)
            pw = w[f"branches.{i}.pointwise.weight"][:, :, 0].astype(np.float64)  # (C, C)
            for j in range(k):
                tap = self.lo + j - same_padding(k)[0]
                tables[tap, :256, cols] += (pw @ (dw[:, j : j + 1] * stem)).T
            tables[self.lo, :256, cols] += stem.T + w[f"branches.{i}.pointwise.bias"]
        self.tables = tables.astype(np.float32)
        self.proj_w = np.ascontiguousarray(w["project.weight"][:, :, 0].T, np.float32)
        self.proj_b = w["project.bias"].astype(np.float32)
        if length % feature_dim:
            raise ScoringError(f"input length {length} is not a multiple of {feature_dim}")
        self.length, self.pool, self.channels, self.branches = length, length // feature_dim, c, nb

    def __call__(self, x: npt.NDArray[np.uint8]) -> F32:
        """(N, L) bytes to (N, tokens, feature_dim) features."""
        n, length, c, nb = x.shape[0], self.length, self.channels, self.branches
        xp = np.pad(x.astype(np.intp), ((0, 0), (self.lo, self.hi)), constant_values=256)
        z = self.tables[0][xp[:, :length]]
        for j in range(1, self.tables.shape[0]):
            z += self.tables[j][xp[:, j : j + length]]
        d = length // self.pool
        pooled = z.reshape(n, d, self.pool, -1).max(axis=2)
        y = np.maximum(pooled[..., : nb * c].reshape(n, d, nb, c), pooled[:, :, None, nb * c :])
        tokens = y.reshape(n * d, nb * c) @ self.proj_w + self.proj_b
        return np.ascontiguousarray(tokens.reshape(n, d, -1).transpose(0, 2, 1))


class _Constant:
    """A masked modality: the extractor's output for zero bytes, the same for every packet."""

    def __init__(self, extractor: NumpyExtractor) -> None:
        self.extractor = extractor
        self.value = extractor(np.zeros((1, extractor.length), np.uint8))

    def __call__(self, x: npt.NDArray[np.uint8]) -> F32:
        return np.broadcast_to(self.value, (x.shape[0], *self.value.shape[1:]))


def _layer_norm(x: F32, weight: F32, bias: F32, eps: float = 1e-5) -> F32:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    out: F32 = centred / np.sqrt(var + eps) * weight + bias
    return out


class NumpyEncoderLayer:
    """Post-norm transformer encoder layer (self-attention, ReLU feed-forward), eval mode."""

    def __init__(self, w: Arrays, heads: int) -> None:
        f = {k: v.astype(np.float32) for k, v in w.items()}
        d = f["self_attn.out_proj.weight"].shape[0]
        scale = np.float32((d // heads) ** -0.5)
        in_w, in_b = f["self_attn.in_proj_weight"].copy(), f["self_attn.in_proj_bias"].copy()
        in_w[:d] *= scale  # the 1/sqrt(d_k) of the scores, folded into the queries
        in_b[:d] *= scale
        self.in_w, self.in_b = np.ascontiguousarray(in_w.T), in_b
        self.out_w, self.out_b = (
            np.ascontiguousarray(f["self_attn.out_proj.weight"].T),
            f["self_attn.out_proj.bias"],
        )
        self.w1, self.b1 = np.ascontiguousarray(f["linear1.weight"].T), f["linear1.bias"]
        self.w2, self.b2 = np.ascontiguousarray(f["linear2.weight"].T), f["linear2.bias"]
        self.n1 = f["norm1.weight"], f["norm1.bias"]
        self.n2 = f["norm2.weight"], f["norm2.bias"]
        self.d, self.heads = d, heads

    def __call__(self, x: F32) -> F32:
        n, t, d = x.shape
        h = self.heads
        qkv = (x @ self.in_w + self.in_b).reshape(n, t, 3, h, d // h).transpose(2, 0, 3, 1, 4)
        scores = qkv[0] @ qkv[1].transpose(0, 1, 3, 2)  # (N, H, T, T)
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        attn = (scores @ qkv[2]).transpose(0, 2, 1, 3).reshape(n, t, d)
        x = _layer_norm(x + attn @ self.out_w + self.out_b, *self.n1)
        ff = np.maximum(x @ self.w1 + self.b1, 0.0) @ self.w2 + self.b2
        return _layer_norm(x + ff, *self.n2)


class NumpyFCFusion:
    """Ablation Variant 3: one fully connected layer across the tokens, then ReLU."""

    def __init__(self, w: Arrays) -> None:
        self.w = np.ascontiguousarray(w["mix.weight"].T, np.float32)
        self.b = w["mix.bias"].astype(np.float32)

    def __call__(self, x: F32) -> F32:
        mixed = np.maximum(x.transpose(0, 2, 1) @ self.w + self.b, 0.0)
        return np.ascontiguousarray(mixed.transpose(0, 2, 1))


class NumpyAMLHP:
    """An IoT-AMLHP artifact's network: uint8 header (N, 128) and payload (N, P) to logits."""

    def __init__(self, arrays: Arrays, config: Mapping[str, Any], payload_bytes: int) -> None:
        encoding = str(config.get("byte_encoding", "value"))
        feature_dim = _feature_dim(arrays)
        self.payload_bytes = payload_bytes
        self.header: NumpyExtractor | _Constant = NumpyExtractor(
            _part(arrays, "header"), HEADER_LEN, feature_dim, encoding
        )
        self.payload: NumpyExtractor | _Constant = NumpyExtractor(
            _part(arrays, "payload"), payload_bytes, feature_dim, encoding
        )
        if config.get("mask_header", False):
            self.header = _Constant(self.header)
        if config.get("mask_payload", False):
            self.payload = _Constant(self.payload)
        fusion = _part(arrays, "fusion")
        self.fusion: list[NumpyEncoderLayer | NumpyFCFusion]
        if "mix.weight" in fusion:
            self.fusion = [NumpyFCFusion(fusion)]
        else:
            heads = int(config.get("num_heads", 8))
            self.fusion = [
                NumpyEncoderLayer(_part(fusion, str(i)), heads) for i in range(_count(fusion, ""))
            ]
        head = _part(arrays, "head")
        self.h0 = np.ascontiguousarray(head["0.weight"].T, np.float32), head["0.bias"]
        self.h3 = np.ascontiguousarray(head["3.weight"].T, np.float32), head["3.bias"]
        self.num_classes = int(head["3.bias"].shape[0])

    def __call__(self, header: npt.NDArray[np.uint8], payload: npt.NDArray[np.uint8]) -> F32:
        x = np.concatenate([self.header(header), self.payload(payload)], axis=1)
        for layer in self.fusion:
            x = layer(x)
        hidden = np.maximum(x.mean(axis=1) @ self.h0[0] + self.h0[1], 0.0)
        out: F32 = (hidden @ self.h3[0] + self.h3[1]).astype(np.float32, copy=False)
        return out


def _part(arrays: Arrays, prefix: str) -> dict[str, npt.NDArray[Any]]:
    """The arrays under ``prefix.``, with the prefix removed."""
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in arrays.items() if k.startswith(prefix + ".")}


def _count(arrays: Arrays, prefix: str = "branches") -> int:
    """How many numbered sub-modules ``prefix.<i>.`` (or ``<i>.`` for an empty prefix)."""
    pattern = re.compile(rf"^{re.escape(prefix + '.') if prefix else ''}(\d+)\.")
    found = {int(m.group(1)) for k in arrays if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def _feature_dim(arrays: Arrays) -> int:
    """The tokens' feature dimension: the encoder layers' width, or the head's input."""
    return int(arrays["head.0.weight"].shape[1])
