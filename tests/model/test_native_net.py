"""The native kernel computes what the torch model computes, in every variant this CPU runs.

The issue's exactness bar: the same class as the torch model on every packet of the demo
capture and probabilities within 1e-5, for each ISA build (AVX-512, AVX2, generic) this
machine can execute; the masked and byte-value variants too (random weights); and clear
refusals where the kernel cannot serve, with ``auto`` falling back and saying why.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from amlhp.data import DEMO_CAPTURE
from amlhp.encoders.arrays import model_inputs
from amlhp.encoders.capture import encode_captures
from amlhp.model.artifact import load_artifact, save_artifact
from amlhp.model.decision import softmax
from amlhp.model.exceptions import ScoringError
from amlhp.model.native_net import NativeAMLHP, NativeUnavailable, build_library, supported_isas
from amlhp.model.registry import create_model, model_kwargs
from amlhp.model.scorer import Scorer, load_scorer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def demo_inputs() -> tuple[np.ndarray, np.ndarray]:
    scorer = load_scorer(backend="numpy")
    header, payload, ok = model_inputs(encode_captures([DEMO_CAPTURE], scorer.encoder_config))
    assert len(header[ok]) > 50_000
    return header[ok], payload[ok]


@pytest.fixture(scope="module")
def torch_reference(demo_inputs: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, ...]:
    return load_scorer(backend="torch", device="cpu").predict(*demo_inputs)


@pytest.mark.parametrize("isa", ["avx512", "avx2", "generic"])
def test_native_equals_torch_on_every_packet_of_the_demo_capture(
    isa: str, demo_inputs: tuple[np.ndarray, np.ndarray], torch_reference: tuple[np.ndarray, ...]
) -> None:
    if isa not in supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} kernel (it runs {supported_isas()})")
    served = load_scorer(backend="native", isa=isa, workers=2)
    assert (served.backend, served.isa) == ("native", isa)
    assert served.artifact.module is None  # served without building the torch module
    want_ids, want = torch_reference
    got_ids, got = served.predict(*demo_inputs)
    assert np.array_equal(got_ids, want_ids)
    assert float(np.abs(got - want).max()) < 1e-5


@pytest.mark.parametrize("architecture", ["amlhp-value", "amlhp-no-header", "amlhp-no-payload"])
def test_native_variants(architecture: str, tmp_path: Path) -> None:
    import torch

    torch.manual_seed(5)
    config = model_kwargs(architecture, num_classes=4, payload_bytes=64)
    model = create_model(architecture, **config).eval()
    path = tmp_path / architecture
    save_artifact(path, model, architecture=architecture, config=config,
                  classes=["benign", "a", "b", "c"], encoding={"payload_bytes": 64})  # fmt: skip
    rng = np.random.default_rng(1)
    header = rng.integers(0, 256, (200, 128), dtype=np.uint8)
    payload = rng.integers(0, 256, (200, 64), dtype=np.uint8)
    payload[:50] = 0  # runs of one value: ties in the max pools
    with torch.inference_mode():
        want = model(torch.from_numpy(header), torch.from_numpy(payload)).numpy()
    got = Scorer(load_artifact(path, torch_module=False), backend="native").logits(header, payload)
    assert got.shape == want.shape == (200, 4)
    assert np.isfinite(got).all()
    assert float(np.abs(softmax(got) - softmax(want)).max()) < 1e-5
    assert np.array_equal(got.argmax(1), want.argmax(1))


def test_auto_serves_with_the_native_kernel_on_the_cpu() -> None:
    scorer = load_scorer(device="cpu")
    assert scorer.backend == "native"
    assert scorer.describe()["isa"] == supported_isas()[0]


def test_auto_falls_back_and_says_why_when_no_compiler_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AMLHP_HOME", str(tmp_path))  # an empty kernel cache
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with caplog.at_level(logging.WARNING, logger="amlhp.model.scorer"):
        scorer = load_scorer(device="cpu")
    assert scorer.backend == "fast"
    assert "native kernel unavailable" in caplog.text
    assert "no-such-cc" in caplog.text
    with pytest.raises(NativeUnavailable, match="no-such-cc"):
        load_scorer(backend="native")


def test_a_kernel_is_built_once_per_sizes_and_isa(tmp_path: Path) -> None:
    art = load_artifact(load_scorer(backend="numpy").artifact.json_path, torch_module=False)
    first = NativeAMLHP(art.arrays, art.meta["config"], 64, isa="generic", cache_dir=tmp_path)
    again = NativeAMLHP(art.arrays, art.meta["config"], 64, isa="generic", cache_dir=tmp_path)
    assert first.library == again.library
    assert [p.name for p in tmp_path.iterdir()] == [first.library.name]  # no temp left


def test_native_refuses_what_it_cannot_serve(tmp_path: Path) -> None:
    with pytest.raises(ScoringError, match="unknown ISA"):
        load_scorer(backend="native", isa="sse9")
    with pytest.raises(ScoringError, match="CPU only"):
        load_scorer(backend="native", device="cuda")
    config = model_kwargs("amlhp-fc-fusion", num_classes=2, payload_bytes=32)
    path = tmp_path / "fc"
    fc = create_model("amlhp-fc-fusion", **config)
    save_artifact(path, fc, architecture="amlhp-fc-fusion", config=config,
                  classes=["benign", "x"], encoding={"payload_bytes": 32})  # fmt: skip
    with pytest.raises(NativeUnavailable, match="FC ablation"):
        load_scorer(path, backend="native")
    assert load_scorer(path, device="cpu").backend == "fast"  # auto falls back
    scorer = load_scorer(backend="native")
    with pytest.raises(ScoringError, match="bytes"):
        scorer._forward(np.zeros((3, 100), np.uint8), np.zeros((3, 64), np.uint8))
    with pytest.raises(NativeUnavailable, match=r"no C compiler|failed"):
        build_library({"D": 1}, "generic", tmp_path / "cache")
