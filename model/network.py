"""The IoT-AMLHP network (paper section 3.3-3.4) and its three ablation variants (Table 4).

Layout of one forward pass, for ``N`` packets:

* header ``h`` (N, 128) and payload ``d`` (N, P) bytes, 0-255, scaled to [0, 1];
* per modality a :class:`ModalityExtractor`: a pointwise stem lifts the byte sequence to
  ``channels`` channels, three parallel :class:`ResConv1d` blocks (header kernels 1, 2, 4;
  payload 2, 4, 8) each do depthwise-separable conv, ReLU, residual add, max pooling; the
  branches are concatenated on channels and a pointwise conv maps them to ``tokens``
  channels of length ``feature_dim`` (the header pools by 128 / feature_dim, the payload by
  P / feature_dim, so both modalities end at the same feature dimension);
* fusion: header and payload channels are concatenated on the channel axis, giving
  ``2 * tokens`` tokens of ``feature_dim`` features (the paper's F in R^{c x d}), and go
  through ``num_layers`` post-norm transformer encoder layers (8-head self-attention + ReLU
  feed-forward, residual + layer norm around each, dropout 0.1);
* head: mean over the tokens, a 32-unit linear layer with ReLU, a K-unit linear layer.
  Softmax is applied by the scorer; training uses cross-entropy on the logits.

The sizes the paper leaves open (channels, tokens, feature dimension, feed-forward width)
are chosen to stay under 25,000 parameters and near the paper's 7 MFLOPs per packet; see
``amlhp.model.flops`` and the README for the measured figures.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

FusionKind = Literal["attention", "fc"]

HEADER_BYTES = 128
HEADER_KERNELS = (1, 2, 4)
PAYLOAD_KERNELS = (2, 4, 8)


def same_padding(kernel_size: int) -> tuple[int, int]:
    """Left/right zero padding that keeps the length for any kernel size, even ones too."""
    left = (kernel_size - 1) // 2
    return left, kernel_size - 1 - left


def scale_bytes(x: Tensor) -> Tensor:
    """Bytes 0-255 (any integer or float dtype) to float32 in [0, 1]."""
    return x.to(torch.float32) * (1.0 / 255.0)


class ResConv1d(nn.Module):
    """Residual depthwise-separable 1-D conv block: ``pool(relu(pw(dw(x))) + x)``.

    Depthwise-separable (per-channel conv of width ``kernel_size`` then a pointwise mix)
    instead of a dense conv is what keeps the extractor within the parameter budget.
    """

    def __init__(self, *, channels: int, kernel_size: int, pool: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.padding = same_padding(kernel_size)
        self.depthwise = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=False)
        self.pointwise = nn.Conv1d(channels, channels, 1)
        self.pool = nn.MaxPool1d(pool) if pool > 1 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.pointwise(self.depthwise(F.pad(x, self.padding)))
        return self.pool(F.relu(y) + x)


class ModalityExtractor(nn.Module):
    """Multi-scale feature extractor of one modality (paper Fig. 4)."""

    def __init__(
        self,
        *,
        length: int,
        kernel_sizes: tuple[int, ...],
        channels: int,
        tokens: int,
        feature_dim: int,
    ) -> None:
        super().__init__()
        if length % feature_dim != 0:
            raise ValueError(f"input length {length} is not a multiple of {feature_dim}")
        pool = length // feature_dim
        self.length = length
        self.pool = pool
        self.stem = nn.Conv1d(1, channels, 1)
        self.branches = nn.ModuleList(
            ResConv1d(channels=channels, kernel_size=k, pool=pool) for k in kernel_sizes
        )
        self.project = nn.Conv1d(channels * len(kernel_sizes), tokens, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, length) scaled bytes to (N, tokens, feature_dim) features."""
        s = self.stem(x.unsqueeze(1))
        return self.project(torch.cat([branch(s) for branch in self.branches], dim=1))


class FCFusion(nn.Module):
    """Ablation Variant 3: one fully connected layer that mixes the tokens instead of attention.

    It mixes across the token (channel) axis, i.e. across modalities, which is the job the
    attention layers do in the full model, so only the mechanism changes.
    """

    def __init__(self, *, num_tokens: int) -> None:
        super().__init__()
        self.mix = nn.Linear(num_tokens, num_tokens)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.mix(x.transpose(1, 2))).transpose(1, 2)


class AMLHPNet(nn.Module):
    """IoT-AMLHP: header/payload extractors, self-attention fusion, two-layer classifier.

    ``mask_header`` / ``mask_payload`` replace that modality's bytes with zeros before the
    network sees them (ablation Variants 1 and 2); ``fusion="fc"`` is Variant 3. The masks
    live inside the model so that a saved artifact scores exactly as it was evaluated.
    """

    input_kind = "header_payload"

    def __init__(
        self,
        *,
        num_classes: int = 9,
        payload_bytes: int = 64,
        channels: int = 16,
        tokens: int = 48,
        feature_dim: int = 32,
        num_layers: int = 2,
        num_heads: int = 8,
        ffn_dim: int = 64,
        hidden: int = 32,
        dropout: float = 0.1,
        fusion: FusionKind = "attention",
        mask_header: bool = False,
        mask_payload: bool = False,
    ) -> None:
        super().__init__()
        if fusion not in ("attention", "fc"):
            raise ValueError(f"unknown fusion {fusion!r}: expected 'attention' or 'fc'")
        self.num_classes = num_classes
        self.payload_bytes = payload_bytes
        self.mask_header = mask_header
        self.mask_payload = mask_payload
        self.fusion_kind: FusionKind = fusion
        self.header = ModalityExtractor(
            length=HEADER_BYTES,
            kernel_sizes=HEADER_KERNELS,
            channels=channels,
            tokens=tokens,
            feature_dim=feature_dim,
        )
        self.payload = ModalityExtractor(
            length=payload_bytes,
            kernel_sizes=PAYLOAD_KERNELS,
            channels=channels,
            tokens=tokens,
            feature_dim=feature_dim,
        )
        self.fusion: nn.Module
        if fusion == "attention":
            self.fusion = nn.Sequential(
                *(
                    nn.TransformerEncoderLayer(
                        d_model=feature_dim,
                        nhead=num_heads,
                        dim_feedforward=ffn_dim,
                        dropout=dropout,
                        activation="relu",
                        batch_first=True,
                        norm_first=False,
                    )
                    for _ in range(num_layers)
                )
            )
        else:
            self.fusion = FCFusion(num_tokens=2 * tokens)
        self.head = nn.Sequential(
            nn.Linear(feature_dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward_features(self, header: Tensor, payload: Tensor) -> Tensor:
        """Bytes (N, 128) and (N, P) to fused features (N, 2 * tokens, feature_dim)."""
        h = scale_bytes(header)
        d = scale_bytes(payload)
        if self.mask_header:
            h = torch.zeros_like(h)
        if self.mask_payload:
            d = torch.zeros_like(d)
        features = torch.cat([self.header(h), self.payload(d)], dim=1)
        out: Tensor = self.fusion(features)
        return out

    def forward_head(self, features: Tensor) -> Tensor:
        """Fused features to class logits (N, K): mean over tokens, then the classifier."""
        out: Tensor = self.head(features.mean(dim=1))
        return out

    def forward(self, header: Tensor, payload: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(header, payload))
