"""Settings -> a child's environment and back: every field, every -X property, secrets."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from amlhp.errors import ConfigError
from amlhp.infra.paths import default_paths
from amlhp.pipeline.children import SETTINGS_LOG_PREFIX, child_env, log_settings
from amlhp.settings import Settings, load_settings, rdkafka_env_name, rdkafka_from_env

SECRET = "hunter2-do-not-log"
TOKEN = "glsa_not_a_real_token"


pytestmark = pytest.mark.usefixtures("clean_amlhp_environment")


def parent_settings(home: Path) -> Settings:
    """A value different from the default in every field, as a parent might run with."""
    return load_settings(
        {
            "bootstrap_servers": "kafka-1:9093,kafka-2:9093",
            "topic_raw": "site.raw",
            "topic_verdicts": "site.verdicts",
            "topic_dead_letter": "site.dead",
            "topic_flow_verdicts": "site.flows",
            "topic_devices": "site.devices",
            "topic_explanations": "site.explanations",
            "topic_alerts": "site.alerts",
            "topic_alert_ticks": "site.alerts.ticks",
            "topic_feedback": "site.feedback",
            "alert_suppressions": home / "allow.yaml",
            "sites_dir": home / "sites",
            "export_webhook_token": "hook-t0ken",
            "alert_window_s": 20.0,
            "alert_quiet_s": 120.0,
            "alert_update_s": 45.0,
            "alert_idle_close_s": 40.0,
            "alert_min_packets": 30,
            "alert_min_score": 0.9,
            "alert_scan_min_targets": 12,
            "alert_brute_min_attempts": 7,
            "alert_dos_min_pps": 20.0,
            "alert_target_min_sources": 20,
            "alert_explain_every": 100,
            "alert_minutes_s": 600.0,
            "alert_hour_s": 7200.0,
            "alert_behaviour_scale": 1.2,
            "alert_model_min_share": 0.6,
            "alert_flow_min_share": 0.4,
            "alert_flow_wait_s": 5.0,
            "alert_arp_rebind_s": 120.0,
            "alert_model_packets_scale": 1.5,
            "session_timeout_s": 15.0,
            "partitions": 12,
            "replication_factor": 3,
            "retention_ms": 3_600_000,
            "consumer_group": "site-group",
            "metrics_host": "0.0.0.0",
            "metrics_tls_cert": home / "metrics.pem",
            "metrics_tls_key": home / "metrics.key",
            "metrics_tls_ca": home / "ca.pem",
            "metrics_user": "prometheus",
            "metrics_password": "scrape-pa55",
            "payload_bytes": 32,
            "grafana_token": TOKEN,
            "home": home,
        },
        rdkafka_flags=[
            "security.protocol=SASL_SSL",
            f"sasl.password={SECRET}",
            "socket.keepalive.enable=true",
        ],
    )


def test_every_field_differs_from_its_default_in_the_parent(tmp_path: Path) -> None:
    """Guards the round trip below: a new field must get a non-default value there."""
    settings, default = parent_settings(tmp_path), Settings.model_validate({})
    same = [n for n in Settings.model_fields if getattr(settings, n) == getattr(default, n)]
    assert same == []


def test_a_child_builds_exactly_the_parents_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = parent_settings(tmp_path)
    env = child_env(parent, {"PATH": "/usr/bin", "OMP_NUM_THREADS": "1"})
    assert env["PATH"] == "/usr/bin"
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["AMLHP_REPLICATION_FACTOR"] == "3"
    assert env["AMLHP_HOME"] == str(tmp_path)
    assert env["AMLHP_RDKAFKA_SOCKET_KEEPALIVE_ENABLE"] == "true"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(Path("/"))  # the child's working directory does not matter
    child = load_settings()
    assert child.redacted() == parent.redacted()
    assert child.kafka_config() == parent.kafka_config()  # secrets included
    assert child.grafana_token is not None
    assert child.grafana_token.get_secret_value() == TOKEN


def test_the_parents_overrides_beat_its_own_environment(tmp_path: Path) -> None:
    """A value the parent replaced (a flag, -X, bench topics) must not come back."""
    settings = load_settings({"partitions": 2, "home": tmp_path})
    env = child_env(
        settings,
        {
            "AMLHP_PARTITIONS": "99",
            "amlhp_topic_raw": "stale.raw",
            "AMLHP_RDKAFKA_CLIENT_ID": "stale",
            "AMLHP_GRAFANA_TOKEN": "stale-token",
            "AMLHP_TEST_PROMETHEUS_URL": "http://127.0.0.1:9090",  # not a setting: kept
        },
    )
    assert env["AMLHP_PARTITIONS"] == "2"
    assert env["AMLHP_TOPIC_RAW"] == settings.topic_raw
    assert "amlhp_topic_raw" not in env
    assert "AMLHP_RDKAFKA_CLIENT_ID" not in env
    assert "AMLHP_GRAFANA_TOKEN" not in env  # None in the parent: absent in the child
    assert env["AMLHP_TEST_PROMETHEUS_URL"] == "http://127.0.0.1:9090"


def test_property_names_that_cannot_round_trip_are_refused() -> None:
    assert rdkafka_env_name("sasl.oauthbearer.client.id") == (
        "AMLHP_RDKAFKA_SASL_OAUTHBEARER_CLIENT_ID"
    )
    assert rdkafka_from_env({rdkafka_env_name("client.rack"): "r"}) == {"client.rack": "r"}
    for name in ("some_property", "Client.Id"):
        with pytest.raises(ConfigError, match="cannot be passed to a child process"):
            child_env(load_settings(rdkafka_flags=[f"{name}=x"]), {})


def test_secrets_reach_the_child_but_never_a_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = parent_settings(tmp_path)
    with caplog.at_level(logging.DEBUG):
        env = child_env(settings, {})
        log_settings("worker", settings)
    assert env["AMLHP_RDKAFKA_SASL_PASSWORD"] == SECRET
    assert env["AMLHP_GRAFANA_TOKEN"] == TOKEN
    assert SECRET not in caplog.text
    assert TOKEN not in caplog.text
    [line] = [r.getMessage() for r in caplog.records if SETTINGS_LOG_PREFIX in r.getMessage()]
    logged = json.loads(line.split(": ", 1)[1])
    assert logged["rdkafka"]["sasl.password"] == "**********"
    assert logged["grafana_token"] == "**********"
    assert logged["rdkafka"]["socket.keepalive.enable"] == "true"
    assert logged["replication_factor"] == 3


def test_the_home_defaults_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings().home == tmp_path
    monkeypatch.setenv("AMLHP_HOME", "relative/home")
    home = load_settings().home
    assert home == tmp_path / "relative" / "home"  # fixed when read, not when used
    paths = default_paths(home)
    assert (paths.var, paths.cache) == (home / "var", home / ".cache")
    assert paths.pom.is_file()  # package data, wherever the home is
