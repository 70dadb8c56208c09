"""ONNX export of the fast IoT-AMLHP graph and an ONNX Runtime runner with a parity check.

The export is checked against PyTorch on random packets when the runner is built: any
argmax difference, or logits further apart than ``PARITY_ATOL``, raises
:class:`ScoringError` so a broken export never serves.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import Tensor, nn

from amlhp.model.exceptions import ScoringError

PARITY_ATOL = 1e-4
PARITY_PACKETS = 512


def export_onnx(model: nn.Module, payload_bytes: int) -> bytes:
    """The model as ONNX bytes with a dynamic batch axis (opset 17)."""
    header = torch.randint(0, 256, (4, 128), dtype=torch.uint8)
    payload = torch.randint(0, 256, (4, payload_bytes), dtype=torch.uint8)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (header, payload),
            buffer,  # type: ignore[arg-type]  # a file-like object is accepted
            input_names=["header", "payload"],
            output_names=["logits"],
            dynamic_axes={"header": {0: "n"}, "payload": {0: "n"}, "logits": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )
    return buffer.getvalue()


class OnnxRunner:
    """Callable like the module: uint8 tensors in, logits tensor out."""

    def __init__(self, model: nn.Module, payload_bytes: int, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            export_onnx(model, payload_bytes), options, providers=["CPUExecutionProvider"]
        )
        self._check_parity(model, payload_bytes)

    def run(self, header: np.ndarray, payload: np.ndarray) -> np.ndarray:
        out = self.session.run(["logits"], {"header": header, "payload": payload})[0]
        return np.asarray(out)

    def __call__(self, header: Tensor, payload: Tensor) -> Tensor:
        return torch.from_numpy(self.run(header.numpy(), payload.numpy()))

    def _check_parity(self, model: nn.Module, payload_bytes: int) -> None:
        g = torch.Generator().manual_seed(0)
        header = torch.randint(0, 256, (PARITY_PACKETS, 128), dtype=torch.uint8, generator=g)
        payload = torch.randint(
            0, 256, (PARITY_PACKETS, payload_bytes), dtype=torch.uint8, generator=g
        )
        header[: PARITY_PACKETS // 2, 20:60] = 0xFF  # packets without IP options look like this
        with torch.inference_mode():
            expected = model(header, payload).numpy()
        got = self.run(header.numpy(), payload.numpy())
        if not np.array_equal(got.argmax(1), expected.argmax(1)):
            raise ScoringError("ONNX export disagrees with PyTorch on the predicted class")
        diff = float(np.abs(got - expected).max())
        if diff > PARITY_ATOL:
            raise ScoringError(f"ONNX export differs from PyTorch by {diff:.2e} > {PARITY_ATOL}")
