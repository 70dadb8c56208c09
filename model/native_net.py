"""IoT-AMLHP inference through a small C kernel built on this machine: the fast CPU scorer.

Why: torch spends most of its time in attention over 8 heads of dimension 4, where no GEMM
library is efficient; the kernel (``kernels/amlhp_kernel.c``, see its header for the
layout) runs every op as vertical SIMD over the 32 tokens. It is compiled with the C
compiler found here (``cc``/``gcc``, or ``$CC``), once per ISA and model size, into the
user's cache folder, or the home's when ``AMLHP_HOME`` is set (:func:`default_cache_dir`;
``make setup`` builds the default model's; otherwise the first use does, in about a
second), and loaded with ctypes, which releases the GIL, so the
scorer's ``workers`` threads run it in parallel.

Run-time dispatch: ``avx512`` where the CPU has AVX-512 F/BW/VL/DQ, ``avx2`` (with FMA)
where it has those, ``generic`` otherwise; a test forces each variant this CPU can run and
checks it against the torch model. The tables and folded weights come from
:class:`amlhp.model.numpy_net.NumpyAMLHP`, so both torch-free backends share one
algebra. A missing compiler or a model outside the family raises :class:`NativeUnavailable`
and the scorer's ``auto`` falls back to another backend, saying why in its log.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from amlhp.encoders.layout import HEADER_LEN
from amlhp.model.exceptions import ScoringError
from amlhp.model.numpy_net import NumpyAMLHP, NumpyEncoderLayer, NumpyExtractor

log = logging.getLogger(__name__)

ISAS: tuple[str, ...] = ("auto", "avx512", "avx2", "generic")
_ISA_FLAGS: dict[str, tuple[str, ...]] = {
    "avx512": (
        "-DVW=16",
        "-mavx512f",
        "-mavx512bw",
        "-mavx512vl",
        "-mavx512dq",
        "-mavx2",
        "-mfma",
        "-mprefer-vector-width=512",
    ),
    "avx2": ("-DVW=8", "-mavx2", "-mfma"),
    "generic": ("-DVW=4",),
}
_CPU_FLAGS: dict[str, frozenset[str]] = {
    "avx512": frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma"}),
    "avx2": frozenset({"avx2", "fma"}),
    "generic": frozenset(),
}
_KERNEL = "amlhp_kernel.c"


class NativeUnavailable(ScoringError):
    """The native kernel cannot serve here (no compiler, a failed build, another model)."""


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where that file does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def supported_isas() -> list[str]:
    """The kernel variants this CPU can run, best first."""
    if platform.machine().lower() not in {"x86_64", "amd64"}:
        return ["generic"]
    have = cpu_flags()
    return [isa for isa in ("avx512", "avx2", "generic") if _CPU_FLAGS[isa] <= have]


def resolve_isa(isa: str) -> str:
    """``auto``: the best this CPU runs; an explicit one must be supported by the CPU."""
    if isa not in ISAS:
        raise ScoringError(f"unknown ISA {isa!r}; expected one of {', '.join(ISAS)}")
    usable = supported_isas()
    if isa == "auto":
        return usable[0]
    if isa not in usable:
        raise NativeUnavailable(f"this CPU cannot run the {isa} kernel (it runs {usable})")
    return isa


def compiler() -> str:
    """The C compiler: ``$CC``, else ``cc`` or ``gcc`` on the PATH."""
    found = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not found:
        raise NativeUnavailable("no C compiler (cc, gcc or $CC) to build the native kernel")
    return found


def default_cache_dir() -> Path:
    """Where built kernels are kept: ``<AMLHP_HOME>/.cache/native`` when a home is set,
    else the user's cache folder (``$XDG_CACHE_HOME/amlhp/native``, by default
    ``~/.cache/amlhp/native``), so that ``amlhp score`` run in any folder leaves nothing
    there and reuses the kernels it built elsewhere."""
    from amlhp.settings import load_settings, user_cache_dir

    settings = load_settings()
    if "home" in settings.model_fields_set:
        return settings.home / ".cache" / "native"
    return user_cache_dir() / "native"


def build_library(sizes: Mapping[str, int], isa: str, cache_dir: Path) -> Path:
    """The kernel compiled for these sizes and ISA: reused when built before (the file name
    is a hash of source, sizes, flags and compiler), else built and renamed into place."""
    source = resources.files("amlhp.model").joinpath("kernels", _KERNEL).read_text()
    header = "".join(f"#define {k} {int(v)}\n" for k, v in sorted(sizes.items()))
    cc = compiler()
    flags = ("-O3", "-std=gnu11", "-shared", "-fPIC", "-fno-math-errno", *_ISA_FLAGS[isa])
    digest = hashlib.sha256("\0".join([source, header, cc, *flags]).encode()).hexdigest()[:16]
    target = cache_dir / f"amlhp-{isa}-{digest}.so"
    if target.is_file():
        return target
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            _compile(cc, flags, source, header, Path(tmp), target)
    except OSError as exc:  # a read-only or full cache folder
        raise NativeUnavailable(f"cannot build the native kernel in {cache_dir}: {exc}") from exc
    log.info("built the native kernel %s", target)
    return target


def _compile(
    cc: str, flags: tuple[str, ...], source: str, header: str, work: Path, target: Path
) -> None:
    """Compile in ``work`` and rename the library onto ``target`` (atomic: concurrent
    workers building the same kernel each rename a whole file)."""
    (work / _KERNEL).write_text(source)
    (work / "amlhp_sizes.h").write_text(header)
    out = work / target.name
    cmd = [cc, *flags, "-I", str(work), str(work / _KERNEL), "-o", str(out)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NativeUnavailable(f"cannot run {cc}: {exc}") from exc
    if done.returncode != 0:
        raise NativeUnavailable(f"{cc} failed on the native kernel: {done.stderr[-2000:]}")
    os.replace(out, target)


class NativeAMLHP:
    """An IoT-AMLHP artifact's network on the native kernel: uint8 header (N, 128) and
    payload (N, P) to logits (N, K), the same interface as :class:`NumpyAMLHP`."""

    def __init__(
        self,
        arrays: Mapping[str, npt.NDArray[Any]],
        config: Mapping[str, Any],
        payload_bytes: int,
        *,
        isa: str = "auto",
        cache_dir: Path | None = None,
    ) -> None:
        ref = NumpyAMLHP(arrays, config, payload_bytes)
        if not all(isinstance(layer, NumpyEncoderLayer) for layer in ref.fusion):
            raise NativeUnavailable("the native kernel runs encoder fusion, not the FC ablation")
        self.isa = resolve_isa(isa)
        sizes, weights = _pack(ref)
        self._weights = weights  # kept alive: the kernel reads them through raw pointers
        self._table = (ctypes.c_void_p * len(weights))(*[w.ctypes.data for w in weights])
        path = build_library(sizes, self.isa, cache_dir or default_cache_dir())
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise NativeUnavailable(f"cannot load {path}: {exc}") from exc
        if lib.amlhp_signature() != sizes["SIGNATURE"]:
            raise NativeUnavailable(f"{path} was built for other sizes")
        self._fn = lib.amlhp_forward
        self._fn.restype = None
        self._fn.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_void_p,
        ]
        self.header_len, self.payload_bytes = sizes["L_H"], sizes["L_P"]
        self.num_classes = sizes["CLASSES"]
        self.library = path

    def __call__(self, header: npt.NDArray[np.uint8], payload: npt.NDArray[np.uint8]) -> Any:
        n = header.shape[0]
        if header.shape != (n, self.header_len) or payload.shape != (n, self.payload_bytes):
            raise ScoringError(
                f"native kernel wants ({n}, {self.header_len}) and ({n}, {self.payload_bytes})"
                f" bytes, got {header.shape} and {payload.shape}"
            )
        header = np.ascontiguousarray(header, np.uint8)
        payload = np.ascontiguousarray(payload, np.uint8)
        out = np.empty((n, self.num_classes), np.float32)
        self._fn(
            ctypes.addressof(self._table),
            header.ctypes.data,
            payload.ctypes.data,
            n,
            out.ctypes.data,
        )
        return out


def _round16(n: int) -> int:
    return -(-n // 16) * 16


def _extractor_weights(ext: NumpyExtractor) -> list[npt.NDArray[np.float32]]:
    """Tables, projection and bias with each branch's channels padded to 16 (zero columns
    and rows, so a branch is whole vectors) and the tokens padded to 16."""
    c, nb, cp = ext.channels, ext.branches, _round16(ext.channels)
    tok, tokp = ext.proj_w.shape[1], _round16(ext.proj_w.shape[1])
    tables = np.zeros((*ext.tables.shape[:2], (nb + 1) * cp), np.float32)
    proj_w = np.zeros((nb * cp, tokp), np.float32)
    for b in range(nb + 1):
        tables[:, :, b * cp : b * cp + c] = ext.tables[:, :, b * c : (b + 1) * c]
        if b < nb:
            proj_w[b * cp : b * cp + c, :tok] = ext.proj_w[b * c : (b + 1) * c]
    proj_b = np.zeros(tokp, np.float32)
    proj_b[:tok] = ext.proj_b
    return [tables, proj_w, proj_b]


def _pack(ref: NumpyAMLHP) -> tuple[dict[str, int], list[npt.NDArray[np.float32]]]:
    """The kernel's compile-time sizes and its weights in the order of its ``W_`` enum."""
    sizes: dict[str, int] = {}
    weights: list[npt.NDArray[Any]] = []
    first = ref.fusion[0]
    assert isinstance(first, NumpyEncoderLayer)
    d = first.d
    for tag, part, length in (("H", ref.header, HEADER_LEN), ("P", ref.payload, ref.payload_bytes)):
        ext = part if isinstance(part, NumpyExtractor) else part.extractor
        tok, tokp = ext.proj_w.shape[1], _round16(ext.proj_w.shape[1])
        const = np.zeros((d, tokp), np.float32)
        if not isinstance(part, NumpyExtractor):
            const[:, :tok] = part.value[0].T  # (tokens, D) as X[d][token]
        if length % d:
            raise NativeUnavailable(f"input length {length} is not a multiple of D={d}")
        if (ext.branches + 1) * _round16(ext.channels) > 64 * 16 or tokp > 256:
            raise NativeUnavailable("extractor wider than the native kernel's 1,024 columns")
        sizes.update(
            {
                f"C_{tag}": _round16(ext.channels),
                f"NB_{tag}": ext.branches,
                f"WIN_{tag}": ext.tables.shape[0],
                f"LO_{tag}": ext.lo,
                f"L_{tag}": length,
                f"TOK_{tag}": tok,
                f"TOKP_{tag}": tokp,
                f"MASK_{tag}": int(not isinstance(part, NumpyExtractor)),
            }
        )
        weights += [*_extractor_weights(ext), const]
    weights += [ref.h0[0].T, ref.h0[1], ref.h3[0].T, ref.h3[1]]
    for layer in ref.fusion:
        assert isinstance(layer, NumpyEncoderLayer)
        weights += [
            layer.in_w.T,
            layer.in_b,
            layer.out_w.T,
            layer.out_b,
            layer.w1.T,
            layer.b1,
            layer.w2.T,
            layer.b2,
            *layer.n1,
            *layer.n2,
        ]
    tokens = sizes["TOK_H"] + sizes["TOK_P"]
    if d % first.heads:
        raise NativeUnavailable(f"D={d} is not a multiple of {first.heads} heads")
    sizes.update(
        {
            "D": d,
            "HEADS": first.heads,
            "FFN": first.w1.shape[1],
            "LAYERS": len(ref.fusion),
            "HIDDEN": ref.h0[0].shape[1],
            "CLASSES": ref.num_classes,
            "T": tokens,
            "TP": 1 << max(2, (tokens - 1).bit_length()),
        }
    )
    sizes["SIGNATURE"] = int.from_bytes(
        hashlib.sha256(repr(sorted(sizes.items())).encode()).digest()[:3], "little"
    )
    return sizes, [np.ascontiguousarray(w, np.float32) for w in weights]
