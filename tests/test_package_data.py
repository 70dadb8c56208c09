"""What an installed ``amlhp`` reads from its own package: captures, model, pom, dashboards."""

from __future__ import annotations

import json

from amlhp.dashboards.generate import GENERATED_DIR
from amlhp.data import BENCH_CAPTURE, DEMO_CAPTURE
from amlhp.infra.paths import default_paths
from amlhp.model.scorer import default_model_path


def test_the_package_data_is_found_through_the_package() -> None:
    manifest = json.loads(DEMO_CAPTURE.with_suffix(".manifest.json").read_text())
    assert DEMO_CAPTURE.stat().st_size == manifest["bytes"]
    assert BENCH_CAPTURE.is_file()
    assert BENCH_CAPTURE.with_name("demo.json").is_file()
    model = default_model_path()
    assert model.with_suffix(".json").is_file()
    assert model.with_suffix(".safetensors").is_file()
    assert default_paths().kafka_version()
    assert sorted(p.name for p in GENERATED_DIR.glob("*.json"))
