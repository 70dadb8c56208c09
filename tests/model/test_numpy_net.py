"""The numpy backend (an install without torch) computes what the torch model computes.

The issue's exactness bar: the same class as the torch model on every packet of the demo
capture and probabilities within 1e-5; and the same for every IoT-AMLHP variant (masked
modalities, FC fusion, bytes as values), whose weights here are random.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from amlhp.data import DEMO_CAPTURE
from amlhp.encoders.arrays import model_inputs
from amlhp.encoders.capture import encode_captures
from amlhp.model.artifact import load_artifact, save_artifact
from amlhp.model.decision import softmax
from amlhp.model.exceptions import ScoringError
from amlhp.model.registry import create_model, model_kwargs
from amlhp.model.scorer import Scorer, load_scorer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_numpy_equals_torch_on_every_packet_of_the_demo_capture() -> None:
    reference = load_scorer(backend="torch", device="cpu")
    served = load_scorer(backend="numpy")
    assert served.backend == "numpy"
    assert served.artifact.module is None  # loaded without building the torch module
    header, payload, ok = model_inputs(encode_captures([DEMO_CAPTURE], served.encoder_config))
    header, payload = header[ok], payload[ok]
    assert len(header) > 50_000
    want_ids, want = reference.predict(header, payload)
    got_ids, got = served.predict(header, payload)
    assert np.array_equal(got_ids, want_ids)
    assert float(np.abs(got - want).max()) < 1e-5


@pytest.mark.parametrize(
    "architecture",
    ["amlhp", "amlhp-value", "amlhp-no-header", "amlhp-no-payload", "amlhp-fc-fusion"],
)
def test_every_amlhp_variant(architecture: str, tmp_path: Path) -> None:
    import torch

    torch.manual_seed(3)
    config = model_kwargs(architecture, num_classes=5, payload_bytes=32)
    model = create_model(architecture, **config).eval()
    path = tmp_path / architecture
    encoding = {"payload_bytes": 32, "mask_fields": ["ip.src", "ip.dst"]}
    save_artifact(path, model, architecture=architecture, config=config,
                  classes=["benign", "a", "b", "c", "d"], encoding=encoding)  # fmt: skip
    artifact = load_artifact(path)
    rng = np.random.default_rng(0)
    header = rng.integers(0, 256, (300, 128), dtype=np.uint8)
    payload = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    with torch.inference_mode():
        want = model(torch.from_numpy(header), torch.from_numpy(payload)).numpy()
    got = Scorer(artifact, backend="numpy", chunk=64).logits(header, payload)
    assert got.shape == want.shape == (300, 5)
    assert np.isfinite(got).all()
    assert float(np.abs(softmax(got) - softmax(want)).max()) < 1e-5
    assert np.array_equal(got.argmax(1), want.argmax(1))


def test_numpy_backend_refuses_what_it_cannot_serve(tmp_path: Path) -> None:
    with pytest.raises(ScoringError, match="CPU only"):
        load_scorer(backend="numpy", device="cuda")
    config = model_kwargs("sam", num_classes=2)
    path = tmp_path / "sam"
    save_artifact(path, create_model("sam", **config), architecture="sam", config=config,
                  classes=["benign", "x"], encoding={"payload_bytes": 64})  # fmt: skip
    with pytest.raises(ScoringError, match="IoT-AMLHP models only"):
        load_scorer(path, backend="numpy")
