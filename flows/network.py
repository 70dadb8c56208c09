"""The flow CNN: intra-flow convolutions along each row, an inter-flow convolution across rows.

Input: (B, R, ROW_LEN) float32 records as laid out in :mod:`amlhp.flows.record` (row 0 the
current flow, rows 1..R-1 its preceding flows of the same device). The network first turns
the raw slots into fixed, unlearned features (:class:`RowFeatures`): metadata scaled to
about [0, 1] (log for counts and times, /255 for octets, /65535 for ports), the ten packets'
(log time, size/1500, direction, present) as 4 channels over 10 positions, and the payload
buffer as 4 channels over 3,000 positions (byte/255, start marker, end marker, padding).

Intra-flow (per row, weights shared by all rows; 2-D convolutions with (1, k) kernels, so a
row never sees another row here):

* metadata: a (1, 1) convolution, 11 -> 16 channels;
* packets: two (1, 3) convolutions, 4 -> 16 -> 16, max over the 10 packets;
* payload: a (1, 8) convolution with stride 4 (4 -> 16), max pool 4, a (1, 5) convolution
  with stride 2 (16 -> 32), max over the buffer: the first layer sees two bytes plus
  framing at a time and the second ~40 bytes, enough for protocol keywords and headers of
  the application layer;
* a (1, 1) convolution mixes the three to a 64-channel row embedding.

Inter-flow: a (3, 1) convolution across rows (each output row sees a flow and its two
neighbours in time), then a max over the rows that hold a flow. The head concatenates the
current flow's own embedding with that context summary, so the current flow can never be
drowned by its predecessors: Linear(128, 64), ReLU, dropout, Linear(64, K).

About 31,000 parameters and 4.5 MFLOPs (multiply-adds) per 6-row matrix.

``blind`` lists feature groups (see :mod:`amlhp.flows.shapley`) the model replaces with
their "absent" value before looking: such a model provably cannot use them, which is what
the attribution sanity check needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from amlhp.flows.numpy_net import LOG_BYTES, LOG_HOUR, LOG_MINUTE, LOG_PACKETS
from amlhp.flows.record import (
    END_MARKER,
    FIRST_PACKETS,
    HEAD_LEN,
    META_LEN,
    PACKET_FIELDS,
    PACKETS_OFFSET,
    PAD,
    PAYLOAD_OFFSET,
    ROW_LEN,
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


class RowFeatures(nn.Module):
    """Raw record slots to scaled feature tensors (no parameters)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(B, R, ROW_LEN) -> meta (B, 11, R, 1), packets (B, 4, R, 10),
        payload (B, 4, R, 3000), present (B, R)."""
        present = (x[..., SLOT_PRESENT] > 0.5).to(x.dtype)
        m = x[..., :META_LEN]
        valid = (m >= 0).to(x.dtype)
        pos = m.clamp(min=0.0)
        meta = torch.stack(
            [
                present,
                torch.log1p(pos[..., SLOT_START]) / LOG_HOUR,
                pos[..., SLOT_REMOTE_IP] / 255.0,
                pos[..., SLOT_REMOTE_IP + 1] / 255.0,
                pos[..., SLOT_REMOTE_IP + 2] / 255.0,
                pos[..., SLOT_REMOTE_IP + 3] / 255.0,
                pos[..., SLOT_REMOTE_PORT] / 65535.0,
                pos[..., SLOT_DEVICE_PORT] / 65535.0,
                pos[..., SLOT_PROTO] / 255.0,
                torch.log1p(pos[..., SLOT_BYTES]) / LOG_BYTES,
                torch.log1p(pos[..., SLOT_PACKETS]) / LOG_PACKETS,
            ],
            dim=1,
        )
        meta = meta * torch.cat([present.unsqueeze(1), valid[..., 1:].permute(0, 2, 1)], dim=1)
        p = x[..., PACKETS_OFFSET:PAYLOAD_OFFSET].reshape(
            *x.shape[:2], FIRST_PACKETS, PACKET_FIELDS
        )
        has = (p[..., 1] >= 0).to(x.dtype)
        pp = p.clamp(min=0.0)
        packets = torch.stack(
            [torch.log1p(pp[..., 0]) / LOG_MINUTE, pp[..., 1] / 1500.0, pp[..., 2], has], dim=1
        )
        packets = packets * has.unsqueeze(1)
        b = x[..., PAYLOAD_OFFSET:]
        is_byte = (b >= 0).to(x.dtype)
        payload = torch.stack(
            [
                b.clamp(min=0.0) / 255.0 * is_byte,
                (b == START_MARKER).to(x.dtype),
                (b == END_MARKER).to(x.dtype),
                (b == PAD).to(x.dtype),
            ],
            dim=1,
        )
        return meta.unsqueeze(-1), packets, payload, present


class FlowCNN(nn.Module):
    """Lightweight CNN over a device's flow matrix; see the module docstring."""

    def __init__(
        self,
        *,
        num_classes: int,
        rows: int = 6,
        width: int = 64,
        dropout: float = 0.2,
        blind: Sequence[str] = (),
    ) -> None:
        super().__init__()
        from amlhp.flows.shapley import group_slots  # the groups' slot lists

        self.num_classes = num_classes
        self.rows = rows
        self.blind = tuple(blind)
        mask = torch.zeros(rows, ROW_LEN, dtype=torch.bool)
        for name in self.blind:
            mask |= torch.from_numpy(group_slots(name, rows))
        self.register_buffer("blind_mask", mask, persistent=False)
        self.features = RowFeatures()
        self.meta = nn.Conv2d(META_LEN, 16, (1, 1))
        self.pk1 = nn.Conv2d(4, 16, (1, 3), padding=(0, 1))
        self.pk2 = nn.Conv2d(16, 16, (1, 3), padding=(0, 1))
        self.pl1 = nn.Conv2d(4, 16, (1, 8), stride=(1, 4))
        self.pl2 = nn.Conv2d(16, 32, (1, 5), stride=(1, 2))
        self.row = nn.Conv2d(64, width, (1, 1))
        self.inter = nn.Conv2d(width, width, (3, 1), padding=(1, 0))
        self.head = nn.Sequential(
            nn.Linear(2 * width, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, num_classes)
        )

    def hide(self, x: Tensor, first_row: int = 0) -> Tensor:
        """Replace blind groups by their absent value (padding; 0 for the present slot).

        ``x`` holds rows ``first_row .. first_row + x.shape[1] - 1`` of a matrix."""
        if not self.blind:
            return x
        absent = torch.full_like(x, PAD)
        absent[..., SLOT_PRESENT] = 0.0
        mask: Tensor = self.blind_mask  # type: ignore[assignment]
        return torch.where(mask[first_row : first_row + x.shape[1]], absent, x)

    def embed_rows(self, x: Tensor, first_row: int = 0) -> tuple[Tensor, Tensor]:
        """(B, R', ROW_LEN) -> row embeddings (B, width, R') and present mask (B, R').

        Rows are embedded independently of each other (every kernel is (1, k)), so any
        subset of a matrix's rows can be embedded on its own (``first_row`` says which)."""
        meta, packets, payload, present = self.features(self.hide(x, first_row))
        m = F.relu(self.meta(meta)).squeeze(-1)  # (B, 16, R)
        p = F.relu(self.pk2(F.relu(self.pk1(packets)))).amax(dim=-1)  # (B, 16, R)
        d = F.max_pool2d(F.relu(self.pl1(payload)), (1, 4))
        d = F.relu(self.pl2(d)).amax(dim=-1)  # (B, 32, R)
        rows = F.relu(self.row(torch.cat([m, p, d], dim=1).unsqueeze(-1)))  # (B, W, R, 1)
        return rows.squeeze(-1), present

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, K) of flow matrices (B, R, ROW_LEN)."""
        rows, present = self.embed_rows(x)
        return self.combine(rows, present)

    def combine(self, rows: Tensor, present: Tensor) -> Tensor:
        """Inter-flow part and head: row embeddings (B, W, R) + present (B, R) -> logits."""
        mixed = F.relu(self.inter(rows.unsqueeze(-1))).squeeze(-1)  # (B, W, R)
        fill = torch.finfo(mixed.dtype).min
        masked = torch.where(present.unsqueeze(1) > 0, mixed, torch.full_like(mixed, fill))
        context = masked.amax(dim=-1)
        context = torch.where(present.sum(dim=1, keepdim=True) > 0, context, 0.0)
        out: Tensor = self.head(torch.cat([rows[..., 0], context], dim=1))
        return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_matrix(model: nn.Module, rows: int) -> int:
    """Floating-point operations of one forward pass on one matrix (torch's counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.full((1, rows, ROW_LEN), PAD)
    x[:, :, SLOT_PRESENT] = 1.0
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()
        model(x)
    return int(counter.get_total_flops())


__all__ = ["HEAD_LEN", "FlowCNN", "RowFeatures", "count_parameters", "flops_per_matrix"]
