"""Parameter, FLOP and size counts of a model, for one packet, from a counter.

Convention: :class:`torch.utils.flop_counter.FlopCounterMode` counts the matrix products,
convolutions and attention of one forward pass, **a multiply-add as two FLOPs**, and
ignores element-wise work (activations, normalisation, softmax, pooling). Tools such as
``thop`` report multiply-adds instead, so ``macs = flops / 2`` is reported too. The count is
taken on the training graph in train mode (dropout changes nothing counted) because the
eval-mode fast path of :class:`torch.nn.TransformerEncoderLayer` is one fused kernel the
counter cannot see into.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from safetensors.torch import save
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from amlhp.model.network import ModalityExtractor
from amlhp.model.registry import input_bytes, input_kind

HEADER_BYTES = 128
FLOPS_CONVENTION = (
    "torch.utils.flop_counter: a multiply-add counts as 2 FLOPs; element-wise ops not counted"
)


@dataclass(frozen=True)
class ModelCost:
    """What Table 6 of the paper reports, per packet."""

    params: int
    flops: int
    macs: int
    size_bytes: int
    flops_convention: str = FLOPS_CONVENTION

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def example_inputs(model: nn.Module, batch: int = 1) -> tuple[Tensor, ...]:
    """Random uint8 inputs of the right shapes for ``model`` (one packet by default)."""
    generator = torch.Generator().manual_seed(0)
    if input_kind(model) == "packet_bytes":
        shape = (batch, input_bytes(model))
        return (torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator),)
    payload = int(getattr(model, "payload_bytes", 64))
    return (
        torch.randint(0, 256, (batch, HEADER_BYTES), dtype=torch.uint8, generator=generator),
        torch.randint(0, 256, (batch, payload), dtype=torch.uint8, generator=generator),
    )


def count_flops(model: nn.Module, *, as_described: bool = True) -> int:
    """FLOPs of one packet's forward pass (2 per multiply-add).

    ``as_described`` counts the extractors block by block as the paper draws them (stem,
    depthwise, pointwise), not the cheaper folded form that :class:`ModalityExtractor`
    runs by default; the function computed is the same.
    """
    extractors = [m for m in model.modules() if isinstance(m, ModalityExtractor)]
    saved = [m.folded for m in extractors]
    was_training = model.training
    model.train()
    try:
        for m in extractors:
            m.folded = not as_described
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(*example_inputs(model))
    finally:
        model.train(was_training)
        for m, folded in zip(extractors, saved, strict=True):
            m.folded = folded
    return int(counter.get_total_flops())


def serialized_size(model: nn.Module) -> int:
    """Bytes of the model's weights as a safetensors file (float32)."""
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return len(save(tensors))


def model_cost(model: nn.Module) -> ModelCost:
    flops = count_flops(model)
    return ModelCost(
        params=count_params(model),
        flops=flops,
        macs=flops // 2,
        size_bytes=serialized_size(model),
    )
