"""The scorer: encoded packets in, class ids and probabilities out (stream and offline).

Backends, all computing the same network (the tests compare them on real packets):

* ``fast``: :class:`amlhp.model.reparam.FastAMLHP`, the exact re-parameterisation, under
  ``torch.inference_mode``, in cache-sized chunks;
* ``torch``: the trained module as is (what ``auto`` picks on CUDA and for the baselines);
  on CUDA ``fast`` and ``torch`` go through the pipelined fixed-batch forward;
* ``onnx``: the fast graph exported to ONNX and run by ONNX Runtime (checked for parity
  with PyTorch when it is built);
* ``numpy``: :class:`amlhp.model.numpy_net.NumpyAMLHP`, the same tables and layers in numpy
  from the safetensors arrays, IoT-AMLHP models only;
* ``native``: :class:`amlhp.model.native_net.NativeAMLHP`, a C kernel compiled on this
  machine for its ISA (AVX-512, AVX2 or generic, chosen at run time) from the same tables:
  the fastest on CPU, and what ``auto`` picks there for IoT-AMLHP. Where it cannot be built
  (no C compiler) ``auto`` falls back to ``fast`` (torch installed) or ``numpy`` and logs
  why.

The torch backends live in :mod:`amlhp.model.torch_forward`, imported only when one is used;
``numpy`` and ``native`` need no torch (``pip install amlhp`` without the ``train`` extra).
``predict`` takes the encoder's uint8 arrays (header (N, 128), payload (N, P)); baselines
get their "first n packet bytes" rebuilt from the same arrays. ``assess`` adds what the
artifact's :class:`~amlhp.model.decision.DecisionPolicy` derives from the logits (the
calibrated ``malicious_score``, the energy as OOD score, the three-way ``decision``).
``score_batch`` takes an encoded Arrow batch and assesses its ok rows only.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from amlhp.encoders.arrays import model_inputs
from amlhp.encoders.layout import HEADER_LEN, LAYOUT_VERSION, EncoderConfig
from amlhp.model.artifact import Artifact, load_artifact
from amlhp.model.decision import Assessment, DecisionPolicy, benign_mask, softmax
from amlhp.model.exceptions import ScoringError
from amlhp.model.packet_bytes import packet_bytes
from amlhp.model.site import SiteProfiles

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("auto", "native", "fast", "torch", "onnx", "numpy")
#: backends that serve from the safetensors arrays, without torch
TORCH_FREE: frozenset[str] = frozenset({"native", "numpy"})
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
#: Packets per forward pass on CPU: larger batches are cut so intermediates stay in cache.
DEFAULT_CHUNK = 256
#: Fewest packets a scoring thread is handed: below that a thread costs more than it saves.
MIN_SHARE = 16
#: package data (``amlhp.model`` ships ``artifacts/*``), found where the package is installed
DEFAULT_ARTIFACT = Path(str(resources.files("amlhp.model").joinpath("artifacts", "amlhp-default")))

IdArray = npt.NDArray[np.int64]
ProbArray = npt.NDArray[np.float32]


def default_model_path() -> Path:
    """Stem of the committed default model (``.json`` + ``.safetensors`` beside it)."""
    return DEFAULT_ARTIFACT


@functools.cache
def torch_installed() -> bool:
    """Whether torch can be imported (the ``train`` extra, or ``make setup``)."""
    try:
        return importlib.util.find_spec("torch") is not None and _import_torch()
    except (ImportError, ValueError):
        return False


def _import_torch() -> bool:
    import torch  # noqa: F401

    return True


def resolve_backend(backend: str, architecture: str, device: str) -> str:
    """The backend asked for, checked; ``auto`` becomes ``native`` for IoT-AMLHP on the CPU
    (the scorer falls back when it cannot be built) and ``torch`` otherwise."""
    if backend not in BACKENDS:
        raise ScoringError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if device not in DEVICES:
        raise ScoringError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    is_amlhp = architecture.startswith("amlhp")
    if backend == "auto":
        on_cuda = device == "cuda" or (device == "auto" and _cuda_available())
        backend = "native" if is_amlhp and not on_cuda else "torch"
    if backend in TORCH_FREE and device == "cuda":
        raise ScoringError(f"the {backend} backend runs on the CPU only")
    if backend != "torch" and not is_amlhp:
        raise ScoringError(f"backend {backend!r} serves IoT-AMLHP models only, not {architecture}")
    if backend not in TORCH_FREE and not torch_installed():
        raise ScoringError(
            f"backend {backend!r} needs torch: install amlhp[train], or use --backend native"
            " or numpy"
        )
    return backend


def fallback_backend() -> str:
    """Where ``auto`` goes when the native kernel cannot be built here."""
    return "fast" if torch_installed() else "numpy"


def _cuda_available() -> bool:
    """Whether torch sees a GPU. Asked only where an NVIDIA driver is installed: importing
    torch costs about 700 MB of memory and a second, which a CPU-only ``amlhp score``
    that the native kernel serves must not pay."""
    import shutil

    if not Path("/proc/driver/nvidia/version").exists() and shutil.which("nvidia-smi") is None:
        return False
    if not torch_installed():
        return False
    import torch

    return bool(torch.cuda.is_available())


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
    #: per row, the version that judged it where a site profile did (None: the model's)
    versions: npt.NDArray[np.object_] | None = None


class Scorer:
    """Scores packets with a verified artifact; satisfies the stream's ``BatchScorer``."""

    def __init__(
        self,
        artifact: Artifact,
        *,
        backend: str = "auto",
        device: str = "auto",
        chunk: int | None = None,
        workers: int = 1,
        isa: str = "auto",
    ) -> None:
        """``chunk``: rows per forward pass, by default 256 on the CPU (cache-sized) and
        32,768 on CUDA (the fixed batch of the pipelined forward)."""
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
        self.input_kind = str(meta.get("input_kind", "header_payload"))
        self.input_bytes = int(meta.get("input_bytes", 0))
        architecture = str(meta["architecture"])
        asked = backend
        backend = resolve_backend(backend, architecture, device)
        self._forward: Callable[..., np.ndarray]
        self._threads: Callable[[], int] = lambda: 1
        self.device = "cpu"
        self.isa: str | None = None
        if backend == "native":
            from amlhp.model.native_net import NativeAMLHP, NativeUnavailable

            try:
                native = NativeAMLHP(artifact.arrays, meta["config"], self.payload_bytes, isa=isa)
            except NativeUnavailable as exc:
                if asked != "auto":
                    raise
                backend = fallback_backend()
                log.warning("native kernel unavailable (%s); scoring with %s", exc, backend)
            else:
                self._forward, self.isa = native, native.isa
        if backend == "numpy":
            from amlhp.model.numpy_net import NumpyAMLHP

            self._forward = NumpyAMLHP(artifact.arrays, meta["config"], self.payload_bytes)
        elif backend != "native":
            from amlhp.model.torch_forward import TorchForward, resolve_device

            if artifact.module is None:  # loaded for a torch-free backend that fell back
                self.artifact = artifact = load_artifact(artifact.json_path)
            on = resolve_device(device)
            raw_bytes = self.input_kind == "packet_bytes"
            widths = (self.input_bytes,) if raw_bytes else (HEADER_LEN, self.payload_bytes)
            torch_forward = TorchForward(
                artifact.model, backend, on, widths=widths, classes=len(self._classes),
                batch=chunk,
            )  # fmt: skip
            self._forward, self._threads = torch_forward, torch_forward.threads
            self.device = str(on)
        self.backend = backend
        on_cpu = self.device == "cpu"
        # on CUDA the pipelined forward cuts the whole request into fixed batches itself
        self.chunk = (chunk or DEFAULT_CHUNK) if on_cpu else 1 << 30
        self.workers = workers if on_cpu else 1
        self._pool = ThreadPoolExecutor(workers) if self.workers > 1 else None
        #: learnt sites (``amlhp model adapt``), applied per gateway by :meth:`judge_sites`
        self.sites = SiteProfiles()

    @property
    def classes(self) -> list[str]:
        return self._classes

    @property
    def version(self) -> str:
        return self._version

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

    def logits(self, header: np.ndarray, payload: np.ndarray) -> ProbArray:
        """Class logits (N, K) for uint8 header/payload arrays, in chunks."""
        inputs = self._inputs(header, payload)
        n = inputs[0].shape[0]
        if n == 0:
            return np.zeros((0, len(self._classes)), np.float32)
        size = self.chunk
        if self._pool is not None:  # every thread gets a share of a small batch too
            size = max(MIN_SHARE, min(size, -(-n // self.workers)))
        starts = range(0, n, size)
        if self._pool is not None and len(starts) > 1:
            outs = list(self._pool.map(lambda lo: self._chunk(inputs, lo, size), starts))
        else:
            outs = [self._chunk(inputs, lo, size) for lo in starts]
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

    def predict(self, header: np.ndarray, payload: np.ndarray) -> tuple[IdArray, ProbArray]:
        """Class ids (N,) and probabilities (N, K) for uint8 header/payload arrays."""
        probs = softmax(self.logits(header, payload))
        return probs.argmax(axis=1).astype(np.int64), probs

    def assess(self, header: np.ndarray, payload: np.ndarray) -> Assessment:
        """Class, probabilities, calibrated malicious score, OOD score and decision."""
        return self.policy.assess(self.logits(header, payload), self._benign)

    def judge_sites(
        self, gateways: Any, header: np.ndarray, payload: np.ndarray, assessment: Assessment
    ) -> tuple[Assessment, npt.NDArray[np.object_] | None]:
        """The assessment of rows from ``gateways`` with their learnt sites applied, and
        per row the version that judged it (None when this scorer serves no site)."""
        if not self.sites:
            return assessment, None
        return self.sites.judge(gateways, header, payload, assessment, self._version)

    def _chunk(self, inputs: tuple[np.ndarray, ...], lo: int, size: int) -> np.ndarray:
        """Logits of rows ``lo:lo+size`` (one forward pass)."""
        return self._forward(*(x[lo : lo + size] for x in inputs))

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
        versions = None
        idx = np.flatnonzero(ok)
        started = time.perf_counter_ns()
        if idx.size:
            a = self.assess(header[idx], payload[idx])
            if self.sites:
                gateways = batch.column("gateway").to_numpy(zero_copy_only=False)[idx]
                a, judged = self.judge_sites(gateways, header[idx], payload[idx], a)
                versions = np.full(n, self._version, dtype=object)
                versions[idx] = judged
            class_ids[idx] = a.class_ids.astype(np.int16)
            probs[idx] = a.probs
            scores[idx] = a.probs[np.arange(idx.size), a.class_ids]
            malicious[idx] = a.malicious_score
            ood[idx] = a.ood_score
            decision[idx] = a.decision
        elapsed = time.perf_counter_ns() - started
        return Scores(class_ids, scores, probs, ok, elapsed, malicious, ood, decision, versions)

    def describe(self) -> dict[str, Any]:
        return {
            "version": self._version,
            "architecture": self.artifact.meta["architecture"],
            "backend": self.backend,
            "isa": self.isa,
            "device": self.device,
            "threads": self._threads(),
            "chunk": self.chunk,
            "workers": self.workers,
            "payload_bytes": self.payload_bytes,
            "decision": self.policy.to_meta(),
            "sites": self.sites.versions,
        }


class ScorerOptions(TypedDict, total=False):
    """The keyword arguments of :class:`Scorer` that :func:`load_scorer` passes on."""

    backend: str
    device: str
    chunk: int | None
    workers: int
    isa: str


def load_scorer(
    path: str | Path | None = None,
    sites: Path | None = None,
    **options: Unpack[ScorerOptions],
) -> Scorer:
    """Verify and load an artifact (the committed default when ``path`` is None).

    ``workers`` > 1 scores the chunks of a large batch on that many threads: the native
    kernel releases the GIL, so they run in parallel (torch backends also use torch's
    intra-op threads; set ``torch.set_num_threads(1)`` for pure data parallelism). The
    weights are loaded without importing torch unless a torch backend is asked for (or
    ``auto`` has to fall back to one). ``isa`` forces a native kernel variant. ``sites``:
    a folder of site profiles (``amlhp model adapt``); those learnt over this model are
    served for their gateways, the others are logged and left out.
    """
    backend = options.get("backend", "auto")
    torch_free = backend in TORCH_FREE or (backend == "auto" and not _cuda_available())
    artifact = load_artifact(path or default_model_path(), torch_module=not torch_free)
    scorer = Scorer(artifact, **options)
    if sites is not None:
        scorer.sites = SiteProfiles.load_dir(sites, scorer.version)
        for why in scorer.sites.skipped:
            log.warning("site profile not served: %s", why)
    return scorer
