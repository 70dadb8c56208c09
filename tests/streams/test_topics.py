"""Pipeline topics: created with the configured shape, idempotently, on the real broker."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from amlhp.cli import build_app
from amlhp.pipeline.children import child_env
from amlhp.settings import Settings
from amlhp.streams.topics import (
    TopicError,
    TopicSpec,
    admin_client,
    create_topics,
    delete_topics,
    ensure_pipeline_topics,
    list_topics,
    pipeline_topic_specs,
)
from tests.support.kafka import KafkaNames


def test_specs_follow_the_settings() -> None:
    settings = Settings.model_validate(
        {"partitions": 6, "replication_factor": 3, "retention_ms": 1234, "topic_raw": "r"}
    )
    specs = pipeline_topic_specs(settings)
    assert [s.name for s in specs] == settings.topics.all()
    assert specs[0].name == "r"
    assert {(s.partitions, s.replication_factor) for s in specs} == {(6, 3)}
    compacted = {settings.topic_devices, settings.topic_feedback}
    expiring = [s for s in specs if s.name not in compacted]
    assert {s.config["retention.ms"] for s in expiring} == {"1234"}
    # the device inventory is the latest entry per host, the feedback the latest verdict
    # per incident, however old: compacted
    kept = [s for s in specs if s.name in compacted]
    assert [s.config for s in kept] == [{"cleanup.policy": "compact"}] * 2
    custom = pipeline_topic_specs(settings, partitions=2, replication_factor=1, retention_ms=-1)
    assert {
        (s.partitions, s.replication_factor, s.config.get("retention.ms", "compact"))
        for s in custom
        if s.name not in compacted
    } == {(2, 1, "-1")}


@pytest.mark.kafka
def test_ensure_pipeline_topics_is_idempotent(kafka_settings: Settings) -> None:
    from confluent_kafka.admin import ConfigResource, ResourceType

    first = ensure_pipeline_topics(kafka_settings, retention_ms=3_600_000)
    assert [r.name for r in first] == kafka_settings.topics.all()
    assert all(r.created for r in first)
    second = ensure_pipeline_topics(kafka_settings, partitions=7)
    assert not any(r.created for r in second)
    assert {r.partitions for r in second} == {kafka_settings.partitions}  # left as they were

    admin = admin_client(kafka_settings.kafka_config())
    listed = {t.name: t for t in list_topics(admin)}
    for name in kafka_settings.topics.all():
        assert listed[name].partitions == kafka_settings.partitions
        assert listed[name].replication_factor == 1
    resource = ConfigResource(ResourceType.TOPIC, kafka_settings.topics.raw)
    config = admin.describe_configs([resource])[resource].result(timeout=30)
    assert config["retention.ms"].value == "3600000"

    delete_topics(admin, kafka_settings.topics.all())
    delete_topics(admin, kafka_settings.topics.all())  # absent topics: not an error
    remaining = {t.name for t in list_topics(admin)}
    assert remaining.isdisjoint(kafka_settings.topics.all())


@pytest.mark.kafka
def test_impossible_replication_is_a_clear_error(
    kafka_bootstrap: str, kafka_names: KafkaNames
) -> None:
    admin = admin_client({"bootstrap.servers": kafka_bootstrap})
    topic = f"{kafka_names.prefix}.rf3"
    with pytest.raises(TopicError, match=r"cannot create topic .*rf3"):
        create_topics(admin, [TopicSpec(topic, 1, 3)])  # one broker cannot hold 3 replicas


@pytest.mark.kafka
def test_topics_cli_creates_then_lists(kafka_settings: Settings) -> None:
    env = child_env(kafka_settings, base={})  # CliRunner adds it to this environment
    runner = CliRunner()
    app = build_app()
    created = runner.invoke(app, ["topics", "create", "--partitions", "3", "--json"], env=env)
    assert created.exit_code == 0, created.output
    assert {(r["name"], r["created"]) for r in json.loads(created.stdout)} == {
        (name, True) for name in kafka_settings.topics.all()
    }
    again = runner.invoke(app, ["topics", "create", "--json"], env=env)
    assert again.exit_code == 0, again.output
    assert not any(r["created"] for r in json.loads(again.stdout))
    listed = runner.invoke(app, ["topics", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert sorted((t["name"], t["partitions"]) for t in json.loads(listed.stdout)) == sorted(
        (name, 3) for name in kafka_settings.topics.all()
    )
