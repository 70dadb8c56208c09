"""The scorer: encoded packets in, class ids and probabilities out (stream and offline).

Backends, all computing the same network (the tests compare their argmax on real packets):

* ``fast`` (default on CPU for IoT-AMLHP): :class:`amlhp.model.reparam.FastAMLHP`, the
  exact re-parameterisation, under ``torch.inference_mode``, in cache-sized chunks;
* ``torch``: the trained module as is (default on CUDA and for the baselines);
* ``onnx``: the fast graph exported to ONNX and run by ONNX Runtime (checked for parity
  with PyTorch when it is built).

``predict`` takes the encoder's uint8 arrays (header (N, 128), payload (N, P)); baselines
get their "first n packet bytes" rebuilt from the same arrays. ``assess`` adds what the
artifact's :class:`~amlhp.model.decision.DecisionPolicy` derives from the logits (the
calibrated ``malicious_score``, the energy as OOD score, the three-way ``decision``).
``score_batch`` takes an encoded Arrow batch and assesses its ok rows only.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import torch
from torch import Tensor

from amlhp.encoders.arrays import model_inputs
from amlhp.encoders.layout import LAYOUT_VERSION, EncoderConfig
from amlhp.model.artifact import Artifact, load_artifact
from amlhp.model.decision import Assessment, DecisionPolicy, benign_mask
from amlhp.model.exceptions import ScoringError
from amlhp.model.network import AMLHPNet
from amlhp.model.packet_bytes import packet_bytes

BACKENDS: tuple[str, ...] = ("auto", "fast", "torch", "onnx")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
#: Packets per forward pass on CPU: larger batches are cut so intermediates stay in cache.
DEFAULT_CHUNK = 256
#: package data (``amlhp.model`` ships ``artifacts/*``), found where the package is installed
DEFAULT_ARTIFACT = Path(str(resources.files("amlhp.model").joinpath("artifacts", "amlhp-default")))

IdArray = npt.NDArray[np.int64]
ProbArray = npt.NDArray[np.float32]


def default_model_path() -> Path:
    """Stem of the committed default model (``.json`` + ``.safetensors`` beside it)."""
    return DEFAULT_ARTIFACT


@dataclass(frozen=True)
class Scores:
    """Scores of an encoded batch: one entry per row, ``-1``/NaN where not scored."""

    class_ids: npt.NDArray[np.int16]
    scores: npt.NDArray[np.float32]
    probs: ProbArray
    ok: npt.NDArray[np.bool_]
    inference_ns: int
    malicious_score: npt.NDArray[np.float32]
    ood_score: npt.NDArray[np.float32]
    #: decision codes (:data:`amlhp.model.decision.DECISIONS`), -1 where not scored
    decision: npt.NDArray[np.int8]


def resolve_device(device: str) -> torch.device:
    if device not in DEVICES:
        raise ScoringError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ScoringError("--device cuda, but no CUDA device is available")
    return torch.device(device)


class Scorer:
    """Scores packets with a verified artifact; satisfies the stream's ``BatchScorer``."""

    def __init__(
        self,
        artifact: Artifact,
        *,
        backend: str = "auto",
        device: str = "auto",
        chunk: int = DEFAULT_CHUNK,
        workers: int = 1,
    ) -> None:
        if backend not in BACKENDS:
            raise ScoringError(
                f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}"
            )
        self.artifact = artifact
        meta = artifact.meta
        self._classes = list(meta["classes"])
        self._version = str(meta["version"])
        enc = meta.get("encoding", {})
        if str(enc.get("layout_version", LAYOUT_VERSION)) != LAYOUT_VERSION:
            raise ScoringError(
                f"model was trained on encoding layout {enc.get('layout_version')!r}, "
                f"this encoder writes {LAYOUT_VERSION!r}"
            )
        self.encoder_config = EncoderConfig(
            payload_bytes=int(meta["payload_bytes"]),
            mask_fields=tuple(enc.get("mask_fields", ("ip.src", "ip.dst"))),
        )
        self.payload_bytes = self.encoder_config.payload_bytes
        self.policy = DecisionPolicy.from_meta(meta.get("decision"))
        self._benign = benign_mask(self._classes)
        self.device = resolve_device(device)
        model = artifact.model.eval()
        self.input_kind = str(meta.get("input_kind", "header_payload"))
        self.input_bytes = int(meta.get("input_bytes", 0))
        is_amlhp = isinstance(model, AMLHPNet)
        if backend == "auto":
            backend = "fast" if is_amlhp and self.device.type == "cpu" else "torch"
        if backend in ("fast", "onnx") and not is_amlhp:
            raise ScoringError(
                f"backend {backend!r} serves IoT-AMLHP models only, not {meta['architecture']}"
            )
        self.backend = backend
        self.chunk = chunk if self.device.type == "cpu" else 1 << 30
        self.workers = workers if self.device.type == "cpu" else 1
        self._pool = ThreadPoolExecutor(workers) if self.workers > 1 else None
        self._forward = self._build(model, backend)

    @property
    def classes(self) -> list[str]:
        return self._classes

    @property
    def version(self) -> str:
        return self._version

    def _build(self, model: torch.nn.Module, backend: str) -> Callable[..., Tensor]:
        if backend == "torch":
            net = copy.deepcopy(model).to(self.device) if self.device.type != "cpu" else model
            return lambda *xs: net(*xs)
        from amlhp.model.reparam import FastAMLHP

        assert isinstance(model, AMLHPNet)
        fast = FastAMLHP(model).eval().to(self.device)
        if backend == "fast":
            return lambda *xs: fast(*xs)
        from amlhp.model.onnx_export import OnnxRunner
        from amlhp.model.reparam import export_friendly

        return OnnxRunner(export_friendly(fast), self.payload_bytes)

    def _inputs(self, header: np.ndarray, payload: np.ndarray) -> tuple[np.ndarray, ...]:
        if header.ndim != 2 or header.shape[1] != 128:
            raise ScoringError(f"header must be (N, 128) bytes, got {header.shape}")
        if payload.ndim != 2 or payload.shape[0] != header.shape[0]:
            raise ScoringError(f"payload must be (N, P) bytes, got {payload.shape}")
        if payload.shape[1] != self.payload_bytes:
            raise ScoringError(
                f"payload has {payload.shape[1]} bytes per packet, the model was trained on "
                f"P={self.payload_bytes}"
            )
        # writable: torch refuses to wrap read-only memory (Arrow buffers) without a warning
        header = np.require(header, np.uint8, ("C", "W"))
        payload = np.require(payload, np.uint8, ("C", "W"))
        if self.input_kind == "packet_bytes":
            return (packet_bytes(header, payload, self.input_bytes),)
        return header, payload

    @torch.inference_mode()
    def logits(self, header: np.ndarray, payload: np.ndarray) -> ProbArray:
        """Class logits (N, K) for uint8 header/payload arrays, in chunks."""
        inputs = self._inputs(header, payload)
        n = inputs[0].shape[0]
        if n == 0:
            return np.zeros((0, len(self._classes)), np.float32)
        starts = range(0, n, self.chunk)
        if self._pool is not None and len(starts) > 1:
            outs = list(self._pool.map(lambda lo: self._chunk(inputs, lo), starts))
        else:
            outs = [self._chunk(inputs, lo) for lo in starts]
        out = torch.cat(outs) if len(outs) > 1 else outs[0]
        return out.cpu().numpy()

    def predict(self, header: np.ndarray, payload: np.ndarray) -> tuple[IdArray, ProbArray]:
        """Class ids (N,) and probabilities (N, K) for uint8 header/payload arrays."""
        logits = torch.from_numpy(self.logits(header, payload))
        probs = torch.softmax(logits, dim=1)
        return probs.argmax(dim=1).numpy().astype(np.int64), probs.numpy()

    def assess(self, header: np.ndarray, payload: np.ndarray) -> Assessment:
        """Class, probabilities, calibrated malicious score, OOD score and decision."""
        return self.policy.assess(self.logits(header, payload), self._benign)

    def _chunk(self, inputs: tuple[np.ndarray, ...], lo: int) -> Tensor:
        """Logits of rows ``lo:lo+chunk`` (one forward pass)."""
        with torch.inference_mode():
            xs = [torch.from_numpy(x[lo : lo + self.chunk]).to(self.device) for x in inputs]
            return self._forward(*xs).float()

    def check_batch(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Refuse encoded records written with another P, layout or masking."""
        problem = self.encoder_config.mismatch(batch.schema)
        if problem is not None:
            raise ScoringError(problem)

    def score_batch(self, batch: pa.RecordBatch | pa.Table) -> Scores:
        """Scores of every row of an encoded batch (only ``ok`` rows reach the model)."""
        self.check_batch(batch)
        header, payload, ok = model_inputs(batch)
        n = len(ok)
        k = len(self._classes)
        class_ids = np.full(n, -1, np.int16)
        scores = np.full(n, np.nan, np.float32)
        probs = np.full((n, k), np.nan, np.float32)
        malicious = np.full(n, np.nan, np.float32)
        ood = np.full(n, np.nan, np.float32)
        decision = np.full(n, -1, np.int8)
        idx = np.flatnonzero(ok)
        started = time.perf_counter_ns()
        if idx.size:
            a = self.assess(header[idx], payload[idx])
            class_ids[idx] = a.class_ids.astype(np.int16)
            probs[idx] = a.probs
            scores[idx] = a.probs[np.arange(idx.size), a.class_ids]
            malicious[idx] = a.malicious_score
            ood[idx] = a.ood_score
            decision[idx] = a.decision
        elapsed = time.perf_counter_ns() - started
        return Scores(class_ids, scores, probs, ok, elapsed, malicious, ood, decision)

    def describe(self) -> dict[str, Any]:
        return {
            "version": self._version,
            "architecture": self.artifact.meta["architecture"],
            "backend": self.backend,
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "chunk": self.chunk,
            "workers": self.workers,
            "payload_bytes": self.payload_bytes,
            "decision": self.policy.to_meta(),
        }


def load_scorer(
    path: str | Path | None = None,
    *,
    backend: str = "auto",
    device: str = "auto",
    chunk: int = DEFAULT_CHUNK,
    workers: int = 1,
) -> Scorer:
    """Verify and load an artifact (the committed default when ``path`` is None).

    ``workers`` > 1 scores the chunks of a large batch on that many threads (each op of a
    chunk then runs on torch's intra-op threads too; set ``torch.set_num_threads(1)`` for
    pure data parallelism).
    """
    return Scorer(
        load_artifact(path or default_model_path()),
        backend=backend,
        device=device,
        chunk=chunk,
        workers=workers,
    )
