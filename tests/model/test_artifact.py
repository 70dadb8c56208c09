"""Artifacts: round trip, and one clear error for every kind of tampering or mismatch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from amlhp.model.artifact import Artifact, artifact_paths, load_artifact, save_artifact
from amlhp.model.exceptions import ArtifactError
from amlhp.model.registry import create_model, model_kwargs

ENCODING = {"layout_version": "1", "payload_bytes": 64, "mask_fields": ["ip.dst", "ip.src"]}


def _save(path: Path, seed: int = 0) -> dict[str, object]:
    torch.manual_seed(seed)
    kwargs = model_kwargs("amlhp", num_classes=3)
    return save_artifact(
        path,
        create_model("amlhp", **kwargs),
        architecture="amlhp",
        config=kwargs,
        classes=["a", "b", "c"],
        encoding=ENCODING,
        extra={"params": 1},
    )


def test_round_trip_by_stem_json_or_weights(tmp_path: Path) -> None:
    meta = _save(tmp_path / "m")
    for path in (tmp_path / "m", tmp_path / "m.json", tmp_path / "m.safetensors"):
        art = load_artifact(path)
        assert art.classes == ["a", "b", "c"]
        assert art.version == meta["version"]
        assert not art.model.training
    stored = json.loads((tmp_path / "m.json").read_text())
    assert len(stored["sha256"]) == 64
    assert stored["payload_bytes"] == 64


def test_loaded_weights_are_the_saved_ones(tmp_path: Path, tiny_artifact: Artifact) -> None:
    again = load_artifact(tiny_artifact.json_path)
    for (name, a), (_, b) in zip(
        tiny_artifact.model.state_dict().items(), again.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_tampered_weights(tmp_path: Path) -> None:
    _save(tmp_path / "m")
    weights = tmp_path / "m.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(tmp_path / "m")


def test_edited_metadata(tmp_path: Path) -> None:
    _save(tmp_path / "m")
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["classes"] = ["b", "a", "c"]  # swapping labels would silently mislabel verdicts
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="edited or belongs to other weights"):
        load_artifact(tmp_path / "m")


def test_metadata_of_other_weights(tmp_path: Path) -> None:
    _save(tmp_path / "one", seed=1)
    _save(tmp_path / "two", seed=2)
    shutil.copy(tmp_path / "two.safetensors", tmp_path / "one.safetensors")
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(tmp_path / "one")


def test_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no such model metadata"):
        load_artifact(tmp_path / "absent")
    (tmp_path / "x.json").write_text('{"format": "something-else"}')
    with pytest.raises(ArtifactError, match="not an amlhp-model"):
        load_artifact(tmp_path / "x")
    _save(tmp_path / "m")
    (tmp_path / "m.safetensors").unlink()
    with pytest.raises(ArtifactError, match="weights file missing"):
        load_artifact(tmp_path / "m")


def test_paths() -> None:
    assert artifact_paths("a/b") == (Path("a/b.json"), Path("a/b.safetensors"))
    assert artifact_paths("a/b.safetensors") == (Path("a/b.json"), Path("a/b.safetensors"))
