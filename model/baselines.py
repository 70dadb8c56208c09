"""Packet-level baselines of the paper's Tables 5 and 6, re-implemented from their papers.

Both read the first ``input_bytes`` bytes of the packet from its IPv4 header on (see
:func:`amlhp.model.packet_bytes.packet_bytes`), with the same address masking as IoT-AMLHP,
scaled to [0, 1] (Deep Packet) or embedded as tokens (SAM). The defaults are the published
sizes; the results table trains a narrower Deep Packet (``channels=32``) because the full
one (about 10M parameters, 0.2 GFLOPs per packet) would take hours per run on two CPU cores.
Both sizes' counts are reported.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from amlhp.model.network import scale_bytes


class _PacketBytesModel(nn.Module):
    """What both baselines share: they read the first ``input_bytes`` bytes of the packet
    (the registry's ``packet_bytes`` input kind) and end in one linear ``classifier`` over
    the features of ``forward_features``."""

    input_kind = "packet_bytes"
    classifier: nn.Linear

    def __init__(self, num_classes: int, input_bytes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.input_bytes = input_bytes

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, features: Tensor) -> Tensor:
        out: Tensor = self.classifier(features)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class DeepPacket(_PacketBytesModel):
    """Deep Packet's CNN (Lotfollahi et al., 2020): two 1-D convs, max pool, three FC layers.

    Published sizes: 1,500 input bytes, 200 filters of width 4 (stride 3) then of width 5
    (stride 1), max pooling by 2, fully connected layers of 200, 100 and 50 units, dropout
    0.05.
    """

    def __init__(
        self,
        *,
        num_classes: int = 9,
        input_bytes: int = 1500,
        channels: int = 200,
        hidden: tuple[int, ...] = (200, 100, 50),
        dropout: float = 0.05,
    ) -> None:
        super().__init__(num_classes, input_bytes)
        self.conv1 = nn.Conv1d(1, channels, 4, stride=3)
        self.conv2 = nn.Conv1d(channels, channels, 5, stride=1)
        length = ((input_bytes - 4) // 3 + 1 - 4) // 2
        layers: list[nn.Module] = []
        width = channels * length
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU(), nn.Dropout(dropout)]
            width = units
        self.fc = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """(N, input_bytes) bytes to (N, last hidden width) features."""
        y = F.relu(self.conv1(scale_bytes(x).unsqueeze(1)))
        y = F.max_pool1d(F.relu(self.conv2(y)), 2)
        out: Tensor = self.fc(y.flatten(1))
        return out


class SAM(_PacketBytesModel):
    """SAM (Xie et al., 2019): byte and position embeddings, self-attention, two 1-D convs.

    The paper takes the first 50 bytes of a packet; embedding size, heads and filter counts
    are our choices (64, 4 and 64/64 with widths 3 and 3).
    """

    def __init__(
        self,
        *,
        num_classes: int = 9,
        input_bytes: int = 50,
        embed_dim: int = 64,
        num_heads: int = 4,
        channels: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(num_classes, input_bytes)
        self.byte_embed = nn.Embedding(256, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, input_bytes, embed_dim))
        nn.init.normal_(self.pos_embed, std=0.02)
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(embed_dim)
        self.conv1 = nn.Conv1d(embed_dim, channels, 3, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """(N, input_bytes) bytes to (N, channels) features."""
        e = self.byte_embed(x.long()) + self.pos_embed
        a, _ = self.attn(e, e, e, need_weights=False)
        y = self.norm(e + a).transpose(1, 2)
        y = F.max_pool1d(F.relu(self.conv1(y)), 2)
        y = F.relu(self.conv2(y))
        out: Tensor = self.dropout(y.amax(dim=2))
        return out
