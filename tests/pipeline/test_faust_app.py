"""The one Faust app factory: the shared configuration, the broker URL and overrides."""

from __future__ import annotations

from amlhp.pipeline.faust_app import create_faust_app, faust_broker_url, faust_credentials
from amlhp.settings import Settings


def test_broker_url_lists_every_bootstrap_server() -> None:
    assert faust_broker_url("h1:9092, h2:9093,") == "kafka://h1:9092;kafka://h2:9093"


def test_app_takes_the_settings_and_the_overrides() -> None:
    settings = Settings.model_validate({"partitions": 3, "replication_factor": 2})
    app = create_faust_app(settings, "amlhp-test", broker_commit_interval=2.5)
    assert app.conf.id == "amlhp-test"
    assert app.conf.topic_partitions == 3
    assert app.conf.topic_replication_factor == 2
    assert app.conf.producer_acks == -1
    assert app.conf.broker_commit_interval == 2.5
    assert faust_credentials(settings) is None  # PLAINTEXT unless -X says otherwise
