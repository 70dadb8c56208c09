"""`amlhp infra fetch`: the pinned Kafka jars are cached and a second fetch is a no-op."""

from __future__ import annotations

import time

from amlhp.infra.fetch import fetch_kafka, kafka_libs_ready
from amlhp.infra.paths import default_paths


def test_fetch_is_idempotent_and_provides_the_broker_classes() -> None:
    paths = default_paths()
    version = paths.kafka_version()
    assert int(version.split(".")[0]) >= 4  # KRaft only, no ZooKeeper
    fetch_kafka(paths)  # downloads on a fresh machine, else a directory check
    begin = time.monotonic()
    again = fetch_kafka(paths)
    assert time.monotonic() - begin < 2.0
    assert not again.downloaded
    assert again.libs == kafka_libs_ready(paths)
    assert again.libs.parts[-3:] == ("kafka", version, "libs")
    names = {p.name for p in again.libs.glob("*.jar")}
    assert f"kafka_2.13-{version}.jar" in names
    assert f"kafka-server-{version}.jar" in names
    assert any(n.startswith("log4j-slf4j2-impl-") for n in names)
    assert again.jars == len(names)
