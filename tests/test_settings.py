"""Settings: AMLHP_* environment, CLI overrides, librdkafka passthrough, secrets redacted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from amlhp.errors import ConfigError
from amlhp.settings import (
    Settings,
    is_sensitive,
    load_settings,
    parse_rdkafka_flags,
    rdkafka_from_env,
    unknown_env,
)

SECRET = "hunter2-do-not-log"


pytestmark = pytest.mark.usefixtures("clean_amlhp_environment")


def test_defaults_point_at_the_local_broker() -> None:
    settings = load_settings()
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.replication_factor == 1
    assert settings.rdkafka == {}
    assert settings.kafka_config() == {"bootstrap.servers": "127.0.0.1:9092"}
    assert len(set(settings.topics.all())) == 9


def test_environment_uses_the_amlhp_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMLHP_BOOTSTRAP_SERVERS", "kafka-1:9093,kafka-2:9093")
    monkeypatch.setenv("AMLHP_PARTITIONS", "12")
    monkeypatch.setenv("AMLHP_TOPIC_RAW", "site-a.raw")
    monkeypatch.setenv("BOOTSTRAP_SERVERS", "unprefixed:1")  # ignored: no prefix
    settings = load_settings()
    assert settings.bootstrap_servers == "kafka-1:9093,kafka-2:9093"
    assert settings.partitions == 12
    assert settings.topics.raw == "site-a.raw"


def test_cli_overrides_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMLHP_PARTITIONS", "12")
    monkeypatch.setenv("AMLHP_REPLICATION_FACTOR", "3")
    settings = load_settings({"partitions": 2, "replication_factor": None})
    assert settings.partitions == 2  # flag given
    assert settings.replication_factor == 3  # flag absent (None): environment stands


def test_invalid_values_are_config_errors_naming_the_flag_or_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError, match=r"--partitions: .* \(got 0\)"):
        load_settings({"partitions": 0})
    monkeypatch.setenv("AMLHP_REPLICATION_FACTOR", "many")
    with pytest.raises(ConfigError, match=r"AMLHP_REPLICATION_FACTOR: .* \(got 'many'\)"):
        load_settings()


def test_unknown_variables_are_named_with_the_closest_setting() -> None:
    environ = {
        "AMLHP_PARTITONS": "3",
        "AMLHP_PARTITIONS": "3",
        "AMLHP_RDKAFKA_SOCKET_TIMEOUT_MS": "1",
        "AMLHP_TEST_PROMETHEUS_URL": "x",
        "AMLHP_NOTHING_LIKE_IT": "1",
        "PATH": "/bin",
    }
    assert unknown_env(environ) == [
        "AMLHP_NOTHING_LIKE_IT",
        "AMLHP_PARTITONS (did you mean AMLHP_PARTITIONS?)",
    ]


def test_rdkafka_passthrough_from_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMLHP_RDKAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("AMLHP_RDKAFKA_SASL_MECHANISM", "PLAIN")
    settings = load_settings(rdkafka_flags=["sasl.mechanism=SCRAM-SHA-512", "sasl.username=amlhp"])
    config = settings.kafka_config(**{"group.id": "g"})
    assert config == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",  # -X beats the environment
        "sasl.username": "amlhp",
        "group.id": "g",
    }


def test_flag_parsing_keeps_equals_in_values_and_rejects_garbage() -> None:
    assert parse_rdkafka_flags(["sasl.oauthbearer.config=principal=me scope=x"]) == {
        "sasl.oauthbearer.config": "principal=me scope=x"
    }
    assert parse_rdkafka_flags(None) == {}
    for bad in ("no-equals", "=value", " =value"):
        with pytest.raises(ConfigError, match="-X expects name=value"):
            parse_rdkafka_flags([bad])
    assert rdkafka_from_env({"AMLHP_RDKAFKA_": "x", "OTHER_RDKAFKA_A": "y"}) == {}
    assert rdkafka_from_env({"amlhp_rdkafka_client_id": "c"}) == {"client.id": "c"}


def test_secrets_are_redacted_everywhere_but_the_client_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AMLHP_RDKAFKA_SASL_PASSWORD", SECRET)
    settings = load_settings(
        rdkafka_flags=[f"ssl.key.password={SECRET}-2", "ssl.key.location=/etc/amlhp/client.key"]
    )
    assert isinstance(settings.rdkafka["sasl.password"], SecretStr)
    assert isinstance(settings.rdkafka["ssl.key.password"], SecretStr)
    assert settings.rdkafka["ssl.key.location"] == "/etc/amlhp/client.key"  # a path, shown
    for text in (
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        json.dumps(settings.redacted()),
    ):
        assert SECRET not in text
    assert settings.redacted()["rdkafka"]["sasl.password"] == "**********"
    config = settings.kafka_config()
    assert config["sasl.password"] == SECRET
    assert config["ssl.key.password"] == f"{SECRET}-2"


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("sasl.password", True),
        ("ssl.key.password", True),
        ("ssl.keystore.password", True),
        ("sasl.oauthbearer.client.secret", True),
        ("sasl.jaas.config", True),
        ("ssl.key.location", False),
        ("ssl.keystore.location", False),
        ("ssl.ca.location", False),
        ("security.protocol", False),
        ("sasl.username", False),
    ],
)
def test_sensitive_property_names(name: str, sensitive: bool) -> None:
    assert is_sensitive(name) is sensitive


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.partitions = 99


def test_relative_output_paths_are_under_the_home(tmp_path: Path) -> None:
    settings = Settings.model_validate({"home": str(tmp_path)})
    assert settings.under_home(Path("out/verdicts")) == tmp_path / "out" / "verdicts"
    assert settings.under_home(Path("/data/verdicts")) == Path("/data/verdicts")


def test_the_docs_table_of_settings_is_the_settings_object() -> None:
    """docs/infra.md's table of variables cannot go stale: regenerate it with
    ``amlhp settings --markdown`` when a setting changes."""
    from amlhp.settings import settings_table

    text = (Path(__file__).parents[1] / "docs" / "infra.md").read_text()
    begin, end = "<!-- settings:begin -->\n", "\n<!-- settings:end -->"
    assert text[text.index(begin) + len(begin) : text.index(end)] == settings_table()
    for name in Settings.model_fields:
        assert f"`AMLHP_{name.upper()}" in settings_table()
