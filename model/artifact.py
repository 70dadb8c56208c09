"""A model artifact: weights in safetensors plus JSON metadata, both verified on load.

``NAME.safetensors`` holds the tensors only (no pickle is ever loaded). ``NAME.json`` holds
what is needed to rebuild and trust the model: architecture name and keyword arguments,
class names, the encoder settings it was trained with (P, layout version, masked fields),
parameter and FLOP counts, metrics, the training data fingerprint, a version string and
the sha256 of the weights file. The weights file in turn stores the sha256 of the metadata
(all of it but the ``sha256`` field), so editing either file, or pairing a JSON with other
weights, fails the load with one :class:`ArtifactError`.

A path may name either file or their common stem (``model/artifacts/amlhp-default``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from safetensors import SafetensorError, safe_open

from amlhp import __version__
from amlhp.digest import file_sha256
from amlhp.model.exceptions import ArtifactError, UnknownModelError

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "amlhp-model"
FORMAT_VERSION = 1
_META_HASH_KEY = "amlhp_metadata_sha256"


@dataclass(frozen=True)
class Artifact:
    """A loaded, verified artifact: its weights as numpy arrays, and the torch module
    unless it was loaded without torch (``load_artifact(..., torch_module=False)``)."""

    meta: dict[str, Any]
    json_path: Path
    weights_path: Path
    arrays: dict[str, npt.NDArray[Any]]
    module: nn.Module | None = None

    @property
    def model(self) -> nn.Module:
        """The torch module (eval mode, CPU)."""
        if self.module is None:
            raise ArtifactError(f"{self.json_path}: loaded without torch, it has no module")
        return self.module

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def version(self) -> str:
        return str(self.meta["version"])


def artifact_paths(path: str | Path) -> tuple[Path, Path]:
    """(json, safetensors) paths for a path naming either file or their stem."""
    p = Path(path)
    if p.suffix == ".json":
        return p, p.with_suffix(".safetensors")
    if p.suffix == ".safetensors":
        return p.with_suffix(".json"), p
    return p.with_name(p.name + ".json"), p.with_name(p.name + ".safetensors")


def _meta_hash(meta: dict[str, Any]) -> str:
    core = {k: v for k, v in meta.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()


def _tensors_hash(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].numpy().tobytes())
    return h.hexdigest()


def save_artifact(
    path: str | Path,
    model: nn.Module,
    *,
    architecture: str,
    config: dict[str, Any],
    classes: list[str],
    encoding: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write NAME.safetensors and NAME.json; returns the metadata written.

    ``config`` is the full keyword set of ``create_model(architecture, **config)``;
    ``encoding`` the encoder settings (``payload_bytes``, ``layout_version``,
    ``mask_fields``); ``extra`` anything else to record (counts, metrics, training).
    """
    json_path, weights_path = artifact_paths(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": f"{architecture}-{stamp}-{_tensors_hash(tensors)[:12]}",
        "package_version": __version__,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "architecture": architecture,
        "config": config,
        "classes": list(classes),
        "payload_bytes": int(encoding["payload_bytes"]),
        "encoding": encoding,
        "input_kind": str(getattr(model, "input_kind", "header_payload")),
        "input_bytes": int(getattr(model, "input_bytes", 0)),
        "weights_file": weights_path.name,
        **(extra or {}),
    }
    return write_locked(json_path, weights_path, {k: v.numpy() for k, v in tensors.items()}, meta)


def write_locked(
    json_path: Path, weights_path: Path, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]
) -> dict[str, Any]:
    """Write arrays (safetensors, no pickle) and metadata (JSON) locked to each other: the
    JSON holds the weights' sha256, the weights the hash of the JSON (all but ``sha256``).
    Model artifacts and site profiles (:mod:`amlhp.model.site`) are written so."""
    from safetensors.numpy import save_file

    json_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: np.ascontiguousarray(v) for k, v in arrays.items()},
        str(weights_path),
        metadata={"format": str(meta["format"]), _META_HASH_KEY: _meta_hash(meta)},
    )
    weights_path.chmod(0o644)  # safetensors writes 0600; artifacts are shared read-only
    meta["sha256"] = file_sha256(weights_path)
    json_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The artifact's JSON metadata, checked for shape but not against the weights."""
    json_path, _ = artifact_paths(path)
    try:
        meta = json.loads(json_path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"{json_path}: no such model metadata file") from exc
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{json_path}: unreadable model metadata ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{json_path}: not an {FORMAT} metadata file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{json_path}: format version {meta.get('format_version')!r}, "
            f"this program reads {FORMAT_VERSION}"
        )
    for key in ("architecture", "config", "classes", "sha256", "version", "payload_bytes"):
        if key not in meta:
            raise ArtifactError(f"{json_path}: metadata lacks {key!r}")
    return meta


def verify_artifact(path: str | Path) -> dict[str, Any]:
    """Check the weights' sha256 and the metadata hash stored in the weights."""
    json_path, weights_path = artifact_paths(path)
    meta = read_metadata(json_path)
    verify_locked(json_path, weights_path, meta)
    return meta


def verify_locked(json_path: Path, weights_path: Path, meta: dict[str, Any]) -> None:
    """Check that the weights' sha256 is the metadata's, and the metadata the weights'
    (see :func:`write_locked`); any mismatch is one :class:`ArtifactError`."""
    if not weights_path.is_file():
        raise ArtifactError(f"{weights_path}: weights file missing")
    digest = file_sha256(weights_path)
    if digest != meta.get("sha256"):
        raise ArtifactError(
            f"{weights_path}: sha256 {digest[:16]}... does not match the metadata's "
            f"{str(meta.get('sha256'))[:16]}... (tampered or mismatched artifact)"
        )
    try:
        with safe_open(str(weights_path), framework="numpy") as fh:
            stored = (fh.metadata() or {}).get(_META_HASH_KEY)
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{weights_path}: not a readable safetensors file ({exc})") from exc
    if stored != _meta_hash(meta):
        raise ArtifactError(
            f"{json_path}: metadata was edited or belongs to other weights "
            "(tampered or mismatched artifact)"
        )


def load_artifact(path: str | Path, *, torch_module: bool = True) -> Artifact:
    """Verify and load an artifact; the model is returned in eval mode on CPU.

    ``torch_module=False`` reads the weights as numpy arrays only (no torch import): what
    the ``numpy`` scorer backend of an install without torch serves from.
    """
    json_path, weights_path = artifact_paths(path)
    meta = verify_artifact(json_path)
    from safetensors.numpy import load_file

    arrays = load_file(str(weights_path))
    found = Artifact(meta=meta, json_path=json_path, weights_path=weights_path, arrays=arrays)
    if not torch_module:
        return found
    model = _torch_module(found)
    if int(getattr(model, "num_classes", len(meta["classes"]))) != len(meta["classes"]):
        raise ArtifactError(
            f"{json_path}: {len(meta['classes'])} class names for a model of "
            f"{getattr(model, 'num_classes', '?')} outputs"
        )
    model.eval()
    return Artifact(meta, json_path, weights_path, arrays, model)


def _torch_module(artifact: Artifact) -> nn.Module:
    """The registry's module for the artifact's architecture, with its weights."""
    import torch

    from amlhp.model.registry import create_model

    meta = artifact.meta
    try:
        model = create_model(str(meta["architecture"]), **dict(meta["config"]))
    except UnknownModelError as exc:
        raise ArtifactError(f"{artifact.json_path}: {exc}") from exc
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in artifact.arrays.items()}
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ArtifactError(
            f"{artifact.weights_path}: weights do not fit {meta['architecture']}: {first}"
        ) from exc
    return model
