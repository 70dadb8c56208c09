"""The scorer's torch backends (``fast``, ``torch``, ``onnx``): numpy bytes in, numpy logits out.

Kept apart from :mod:`amlhp.model.scorer` so that the scorer imports torch only when one of
these backends is asked for: an install without torch serves with the ``native`` or
``numpy`` backend. On CUDA every request runs through
:class:`amlhp.model.pipelined_forward.PipelinedForward`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from amlhp.model.exceptions import ScoringError
from amlhp.model.network import AMLHPNet
from amlhp.model.pipelined_forward import DEFAULT_CUDA_BATCH, PipelinedForward


def resolve_device(device: str) -> torch.device:
    """The torch device for a device name that :func:`amlhp.model.scorer.resolve_backend`
    has already checked against the scorer's ``DEVICES``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ScoringError("--device cuda, but no CUDA device is available")
    return torch.device(device)


class TorchForward:
    """One forward pass of a chunk on ``device`` with the chosen torch backend; on CUDA the
    whole request goes through :class:`PipelinedForward` (fixed batches of ``batch`` rows,
    pinned double-buffered transfers) with inputs of ``widths`` bytes and ``classes``
    logits."""

    def __init__(
        self,
        model: torch.nn.Module,
        backend: str,
        device: torch.device,
        *,
        widths: tuple[int, ...],
        classes: int,
        batch: int | None = None,
    ) -> None:
        self.device = device
        self._forward = self._build(model.eval(), backend, device)
        self._pipeline: PipelinedForward | None = None
        if device.type == "cuda":
            self._pipeline = PipelinedForward(
                self._forward, device, widths=widths, classes=classes,
                batch=batch or DEFAULT_CUDA_BATCH,
            )  # fmt: skip

    @staticmethod
    def _build(model: torch.nn.Module, backend: str, device: torch.device) -> Callable[..., Tensor]:
        if backend == "torch":
            net = copy.deepcopy(model).to(device) if device.type != "cpu" else model
            return lambda *xs: net(*xs)
        from amlhp.model.reparam import FastAMLHP

        assert isinstance(model, AMLHPNet)
        fast = FastAMLHP(model).eval().to(device)
        if backend == "fast":
            return lambda *xs: fast(*xs)
        from amlhp.model.onnx_export import OnnxRunner
        from amlhp.model.reparam import export_friendly

        return OnnxRunner(export_friendly(fast), model.payload_bytes)

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        if self._pipeline is not None:
            return self._pipeline(*inputs)
        with torch.inference_mode():
            xs = [torch.from_numpy(x).to(self.device) for x in inputs]
            return self._forward(*xs).float().cpu().numpy()

    @staticmethod
    def threads() -> int:
        return torch.get_num_threads()
