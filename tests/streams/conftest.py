"""Fixtures for pipeline tests: real topics, real worker and sink processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from amlhp.settings import Settings
from amlhp.streams.demo import StageProcess, start_stage
from amlhp.streams.topics import ensure_pipeline_topics

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CAPTURE = REPO_ROOT / "data" / "demo" / "lab-demo.pcap"


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child ``amlhp`` process use these settings."""
    env = dict(os.environ)
    env.update(
        {
            "AMLHP_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "AMLHP_TOPIC_RAW": settings.topic_raw,
            "AMLHP_TOPIC_ENCODED": settings.topic_encoded,
            "AMLHP_TOPIC_VERDICTS": settings.topic_verdicts,
            "AMLHP_TOPIC_DEAD_LETTER": settings.topic_dead_letter,
            "AMLHP_TOPIC_FLOW_VERDICTS": settings.topic_flow_verdicts,
            "AMLHP_TOPIC_EXPLANATIONS": settings.topic_explanations,
            "AMLHP_CONSUMER_GROUP": settings.consumer_group,
            "AMLHP_PARTITIONS": str(settings.partitions),
            "OMP_NUM_THREADS": "1",
        }
    )
    return env


@pytest.fixture
def pipeline_settings(kafka_settings: Settings) -> Settings:
    """This test's own pipeline topics (4 partitions each), created on the real broker."""
    settings = kafka_settings.model_copy(update={"partitions": 4})
    ensure_pipeline_topics(settings)
    return settings


StageStarter = Callable[..., StageProcess]


@pytest.fixture
def stages(pipeline_settings: Settings, tmp_path: Path) -> Iterator[StageStarter]:
    """Start ``amlhp`` stage processes for this test; all are stopped at the end."""
    started: list[StageProcess] = []

    def start(name: str, *args: str) -> StageProcess:
        stage = start_stage(name, list(args), tmp_path / "logs", settings_env(pipeline_settings))
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
