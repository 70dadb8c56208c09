"""Fixtures for pipeline tests: real topics, real worker and sink processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from amlhp.data import DEMO_CAPTURE
from amlhp.pipeline.children import StageProcess, child_env, start_stage
from amlhp.settings import Settings
from amlhp.streams.topics import ensure_pipeline_topics


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment of a child ``amlhp`` process with these settings, one torch thread."""
    return child_env(settings, {**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture
def pipeline_settings(kafka_settings: Settings) -> Settings:
    """This test's own pipeline topics (4 partitions each), created on the real broker.

    They keep every record however old: the taps stamp messages with capture time, and
    the synthetic scenarios' packets are dated 2025, so time-based retention would delete
    them at the broker's next check (docs/replay.md), under a stage still to read them
    (seen: an alert stage restarted after that check found its gateway's verdicts gone)."""
    settings = kafka_settings.model_copy(update={"partitions": 4})
    ensure_pipeline_topics(settings, retention_ms=-1)
    return settings


StageStarter = Callable[..., StageProcess]


@pytest.fixture
def stages(pipeline_settings: Settings, tmp_path: Path) -> Iterator[StageStarter]:
    """Start ``amlhp`` stage processes for this test; all are stopped at the end."""
    started: list[StageProcess] = []

    def start(name: str, *args: str, settings: Settings | None = None) -> StageProcess:
        """``settings``: this stage's own (e.g. one alert setting changed), default the test's."""
        env = settings_env(settings or pipeline_settings)
        stage = start_stage(name, list(args), tmp_path / "logs", env)
        started.append(stage)
        return stage

    yield start
    for stage in started:
        stage.stop(timeout_s=20)


@pytest.fixture
def demo_capture() -> Path:
    if not DEMO_CAPTURE.exists():
        pytest.fail(f"the committed demo capture is missing: {DEMO_CAPTURE}")
    return DEMO_CAPTURE
