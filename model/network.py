"""The IoT-AMLHP network (paper section 3.3-3.4) and its three ablation variants (Table 4).

Layout of one forward pass, for ``N`` packets:

* header ``h`` (N, 128) and payload ``d`` (N, P) bytes, 0-255, each fed as its 8 bits
  (``byte_encoding="bits"``, our default) or scaled to [0, 1] (``"value"``, the paper's);
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
are chosen in :mod:`amlhp.model.registry` to stay under 25,000 parameters at a token count
the CPU scorer can sustain; the README gives the measured trade-off against FLOPs.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from amlhp.model.numpy_net import same_padding

FusionKind = Literal["attention", "fc"]

HEADER_BYTES = 128
HEADER_KERNELS = (1, 2, 4)
PAYLOAD_KERNELS = (2, 4, 8)


def scale_bytes(x: Tensor) -> Tensor:
    """Bytes 0-255 (any integer or float dtype) to float32 in [0, 1]."""
    return x.to(torch.float32) * (1.0 / 255.0)


ByteEncoding = Literal["value", "bits"]


def byte_channels(encoding: str) -> int:
    return 1 if encoding == "value" else 8


def byte_features(x: Tensor, encoding: str) -> Tensor:
    """(N, L) bytes to (N, channels, L) float features.

    ``value``: the byte scaled to [0, 1], as the paper feeds it. ``bits``: its eight bits,
    most significant first (the value is a linear function of them, so nothing is lost),
    so that flags and exact values (a protocol number, a message type) are one linear
    threshold away instead of a bump the network has to build from ReLUs.
    """
    if encoding == "value":
        return scale_bytes(x).unsqueeze(1)
    shifts = torch.arange(7, -1, -1, dtype=torch.int32, device=x.device).view(1, 8, 1)
    bits = (x.to(torch.int32).unsqueeze(1) >> shifts) & 1
    return bits.to(torch.float32)


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
    """Multi-scale feature extractor of one modality (paper Fig. 4).

    Two implementations of the same function, sharing the parameters:

    * :meth:`forward_blocks` (the default) runs stem, depthwise and pointwise convs block by
      block, as the paper draws it; FLOPs "as described" are counted on it;
    * with ``folded = True`` the stem, depthwise and pointwise weights, all linear, are
      composed into one kernel per branch applied to the byte features: a single
      ``(N, in, L) -> (N, 4C, L)`` conv for the three branches and the residual. The fast
      scorer builds its lookup tables from :meth:`folded_weights`; the tests check that
      both forms agree.
    """

    def __init__(
        self,
        *,
        length: int,
        kernel_sizes: tuple[int, ...],
        channels: int,
        tokens: int,
        feature_dim: int,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        if length % feature_dim != 0:
            raise ValueError(f"input length {length} is not a multiple of {feature_dim}")
        pool = length // feature_dim
        self.length = length
        self.pool = pool
        self.channels = channels
        self.folded = False
        self.stem = nn.Conv1d(in_channels, channels, 1)
        self.branches = nn.ModuleList(
            ResConv1d(channels=channels, kernel_size=k, pool=pool) for k in kernel_sizes
        )
        self.project = nn.Conv1d(channels * len(kernel_sizes), tokens, 1)
        self.lo = max(same_padding(k)[0] for k in kernel_sizes)
        self.hi = max(same_padding(k)[1] for k in kernel_sizes)
        positions = torch.arange(length)[:, None]
        for i, k in enumerate(kernel_sizes):
            # valid[t, j]: tap j of the block at position t reads inside the sequence
            # (the depthwise conv pads the stem's output with zeros, not the bytes).
            offsets = positions + torch.arange(k)[None, :] - same_padding(k)[0]
            valid = ((offsets >= 0) & (offsets < length)).to(torch.float32)
            self.register_buffer(f"valid{i}", valid, persistent=False)

    def folded_weights(self) -> tuple[Tensor, Tensor]:
        """Kernel ((B+1)C, in, W) on the byte features and bias ((B+1)C, L) of the first stage.

        Output channels: the B branches' pre-activations, then the stem output (residual).
        """
        a = self.stem.weight[:, :, 0]  # (C, in)
        b = self.stem.bias if self.stem.bias is not None else a.new_zeros(a.shape[0])
        window = self.lo + self.hi + 1
        weights: list[Tensor] = []
        biases: list[Tensor] = []
        for i, branch in enumerate(self.branches):
            assert isinstance(branch, ResConv1d)
            dw = branch.depthwise.weight[:, 0, :]  # (C, k)
            pw = branch.pointwise.weight[:, :, 0]  # (C, C)
            start = self.lo - branch.padding[0]
            composed = torch.einsum("oc,cj,ci->oij", pw, dw, a)  # (C, in, k)
            weights.append(F.pad(composed, (start, window - start - branch.kernel_size)))
            valid: Tensor = getattr(self, f"valid{i}")
            bias = ((valid @ dw.T) * b) @ pw.T  # (L, C)
            if branch.pointwise.bias is not None:
                bias = bias + branch.pointwise.bias
            biases.append(bias.T)
        weights.append(F.pad(a[:, :, None], (self.lo, self.hi)))
        biases.append(b[:, None].expand(-1, self.length))
        return torch.cat(weights), torch.cat(biases)

    def forward_folded(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """The extractor given :meth:`folded_weights` (shared with the fast scorer)."""
        c = self.channels
        bc = len(self.branches) * c
        z = F.conv1d(F.pad(x, (self.lo, self.hi)), weight) + bias
        residual = z[:, bc:]
        y = torch.cat(
            [torch.relu(z[:, i * c : (i + 1) * c]) + residual for i in range(len(self.branches))],
            dim=1,
        )
        out: Tensor = self.project(F.max_pool1d(y, self.pool) if self.pool > 1 else y)
        return out

    def forward_blocks(self, x: Tensor) -> Tensor:
        """Block by block, as the paper draws it."""
        s = self.stem(x)
        out: Tensor = self.project(torch.cat([branch(s) for branch in self.branches], dim=1))
        return out

    def forward(self, x: Tensor) -> Tensor:
        """(N, in_channels, length) byte features to (N, tokens, feature_dim) features."""
        if not self.folded:
            return self.forward_blocks(x)
        weight, bias = self.folded_weights()
        return self.forward_folded(x, weight, bias)


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
        byte_encoding: ByteEncoding = "value",
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
        if byte_encoding not in ("value", "bits"):
            raise ValueError(f"unknown byte_encoding {byte_encoding!r}: expected 'value' or 'bits'")
        self.byte_encoding: ByteEncoding = byte_encoding
        # the two modalities get the same extractor; only their length and kernels differ
        extractor = partial(
            ModalityExtractor,
            channels=channels,
            tokens=tokens,
            feature_dim=feature_dim,
            in_channels=byte_channels(byte_encoding),
        )
        self.header = extractor(length=HEADER_BYTES, kernel_sizes=HEADER_KERNELS)
        self.payload = extractor(length=payload_bytes, kernel_sizes=PAYLOAD_KERNELS)
        self.fusion: nn.Module
        if fusion == "attention":
            layers = [
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
            ]
            for layer in layers:
                # Dropout stays on the sub-layer outputs and inside the feed-forward; on the
                # (N, heads, T, T) attention weights it cost a third of CPU training time.
                layer.self_attn.dropout = 0.0
            self.fusion = nn.Sequential(*layers)
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
        if self.mask_header:
            header = torch.zeros_like(header)
        if self.mask_payload:
            payload = torch.zeros_like(payload)
        h = byte_features(header, self.byte_encoding)
        d = byte_features(payload, self.byte_encoding)
        features = torch.cat([self.header(h), self.payload(d)], dim=1)
        out: Tensor = self.fusion(features)
        return out

    def forward_head(self, features: Tensor) -> Tensor:
        """Fused features to class logits (N, K): mean over tokens, then the classifier."""
        out: Tensor = self.head(features.mean(dim=1))
        return out

    def forward(self, header: Tensor, payload: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(header, payload))
