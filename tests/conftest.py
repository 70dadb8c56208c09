"""Fixtures shared by every test: the public captures and the real local infrastructure.

The Kafka and Prometheus fixtures run the real programs from ``infra/`` (no fakes). Each
reuses what a developer already runs (``make kafka-up``, ``make cluster-up``,
``make prometheus-up``, or any broker answering on the same ports) and otherwise starts its
own copy with data under ``var/kafka/pytest-*`` or ``var/pytest-prometheus``, which it stops
and deletes at the end of the session. Tests that use them are marked ``kafka``,
``cluster`` or ``prometheus`` automatically, so ``make unit`` deselects them.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from amlhp.infra import kafka_broker, prometheus_server
from amlhp.infra.fetch import prometheus_binary
from amlhp.infra.kafka_config import (
    KafkaLayout,
    cluster_layout,
    secure_single_layout,
    single_layout,
)
from amlhp.infra.paths import InfraPaths
from amlhp.infra.process import port_open
from amlhp.infra.prometheus_server import PrometheusLayout
from amlhp.settings import Settings
from tests.support.kafka import KafkaHandle, KafkaNames, SessionUsers

REPO_ROOT = Path(__file__).resolve().parent.parent
#: the tests' infrastructure lives in the checkout's var/ and .cache/, whatever the cwd
CHECKOUT = InfraPaths(root=REPO_ROOT)
PUBLIC_DATA = REPO_ROOT.parent / "shared" / "data" / "public"

# Fixture name -> marker its tests get, so `-m "not kafka"` never starts a broker.
_FIXTURE_MARKERS = {
    "kafka_broker_handle": "kafka",
    "kafka_bootstrap": "kafka",
    "kafka_settings": "kafka",
    "kafka_cluster": "cluster",
    "kafka_secure": "kafka",
    "prometheus_layout": "prometheus",
    "prometheus_url": "prometheus",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, marker in _FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture
def one_torch_thread() -> None:
    """Torch on one thread: the tests' timings and results do not depend on the cores."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def clean_amlhp_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No AMLHP_* variable of the developer's shell may leak into the test."""
    for name in list(os.environ):
        if name.upper().startswith("AMLHP_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def public_data() -> Path:
    """``<repo>/../shared/data/public``: the real IoT captures (MANIFEST.csv, README.md)."""
    if not PUBLIC_DATA.is_dir():
        pytest.skip(f"public captures not found at {PUBLIC_DATA} (shared/ is not beside the repo)")
    return PUBLIC_DATA


@contextmanager
def _kafka_for_session(developers: KafkaLayout, own: KafkaLayout) -> Iterator[KafkaHandle]:
    """Reuse the developer's running layout, or run the tests' own one while needed."""
    if any(node.pid is not None for node in kafka_broker.status(developers)):
        kafka_broker.up(developers, paths=CHECKOUT)  # starts any stopped node, else a no-op
        yield KafkaHandle(developers, for_tests=False, external=False)
        return
    users = SessionUsers(own.home.parent / f".{own.name}.users", os.getpid())
    users.join()
    try:
        result = kafka_broker.up(own, paths=CHECKOUT)
        yield KafkaHandle(own, for_tests=not result.external, external=result.external)
    finally:
        if users.leave():
            kafka_broker.down(own, purge=True)


@pytest.fixture(scope="session")
def kafka_broker_handle() -> Iterator[KafkaHandle]:
    """The single local broker (127.0.0.1:9092), started for the session if not running."""
    with _kafka_for_session(
        single_layout(CHECKOUT), single_layout(CHECKOUT, name="pytest-single")
    ) as handle:
        yield handle


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker_handle: KafkaHandle) -> str:
    """``bootstrap.servers`` of the single local broker, e.g. ``127.0.0.1:9092``."""
    return kafka_broker_handle.bootstrap_servers


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[KafkaHandle]:
    """The 3-broker cluster (127.0.0.1:19092-19094, RF 3, min ISR 2), started if not running.

    ``handle.layout`` lets a test stop and restart one node
    (:func:`amlhp.infra.kafka_broker.stop_nodes` / ``restart_node``); it must leave all
    three running again.
    """
    with _kafka_for_session(
        cluster_layout(CHECKOUT), cluster_layout(CHECKOUT, name="pytest-cluster")
    ) as handle:
        yield handle


@pytest.fixture(scope="session")
def kafka_secure() -> Iterator[KafkaHandle]:
    """The secured single broker (SASL_SSL on 127.0.0.1:9392, SCRAM-SHA-512, ACLs), started
    if not running; ``handle.layout.security`` holds its CA and principals' credentials."""
    with _kafka_for_session(
        secure_single_layout(CHECKOUT), secure_single_layout(CHECKOUT, name="pytest-single-secure")
    ) as handle:
        yield handle


@pytest.fixture
def kafka_names(request: pytest.FixtureRequest) -> KafkaNames:
    """A fresh topic name and consumer group id for this test (not created)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:60]
    prefix = f"test.{slug}.{uuid.uuid4().hex[:8]}"
    return KafkaNames(prefix=prefix, topic=f"{prefix}.topic", group=f"{prefix}.group")


def _names_settings(bootstrap: str, names: KafkaNames) -> Settings:
    """Settings pointing at ``bootstrap`` with this test's own topic names and group."""
    p = names.prefix
    # model_validate rather than keywords: mypy has no pydantic plugin to know the fields.
    return Settings.model_validate(
        {
            "bootstrap_servers": bootstrap,
            "topic_raw": f"{p}.packets.raw",
            "topic_verdicts": f"{p}.verdicts",
            "topic_dead_letter": f"{p}.deadletter",
            "topic_flow_verdicts": f"{p}.flows.verdicts",
            "topic_devices": f"{p}.devices",
            "topic_explanations": f"{p}.explanations",
            "topic_alerts": f"{p}.alerts",
            "topic_alert_ticks": f"{p}.alerts.ticks",
            "topic_feedback": f"{p}.feedback",
            "consumer_group": names.group,
            "partitions": 2,
            "replication_factor": 1,
        }
    )


@pytest.fixture
def kafka_settings(kafka_bootstrap: str, kafka_names: KafkaNames) -> Settings:
    """Settings pointing at the local broker with this test's own topic names and group."""
    return _names_settings(kafka_bootstrap, kafka_names)


@pytest.fixture
def secure_admin(kafka_secure: KafkaHandle, kafka_names: KafkaNames) -> Settings:
    """The secured broker's admin with this test's own topics (created) and every stage's
    ACLs on them (``amlhp topics create --acls``); other principals:
    :func:`amlhp.infra.kafka_config.principal_settings`."""
    from amlhp.infra.kafka_acls import apply_acls, stage_acls
    from amlhp.infra.kafka_config import principal_settings
    from amlhp.streams.topics import admin_client, ensure_pipeline_topics

    names = _names_settings(kafka_secure.bootstrap_servers, kafka_names)
    admin = principal_settings(names, kafka_secure.layout, "admin")
    ensure_pipeline_topics(admin)
    apply_acls(admin_client(admin.kafka_config()), stage_acls(admin))
    return admin


@pytest.fixture(scope="session")
def prometheus_layout() -> Iterator[PrometheusLayout]:
    """The local Prometheus (127.0.0.1:9090), started for the session if not running.

    Skips when Debian's ``prometheus`` is not installed or port 9090 belongs to a
    Prometheus that amlhp did not start (its scrape targets would not be ours to add).
    """
    developers = prometheus_server.prometheus_layout(CHECKOUT)
    if prometheus_server.pid(developers) is not None:
        yield developers
        return
    if prometheus_binary() is None:
        pytest.skip("prometheus is not installed (run `amlhp infra fetch` or `make setup`)")
    own_pid = prometheus_server.pid(PrometheusLayout(home=CHECKOUT.var / "pytest-prometheus"))
    if own_pid is None and port_open(developers.host, developers.port):
        pytest.skip(f"port {developers.port} is taken by a process amlhp did not start")
    own = PrometheusLayout(home=CHECKOUT.var / "pytest-prometheus")
    users = SessionUsers(own.home.parent / ".pytest-prometheus.users", os.getpid())
    users.join()
    try:
        prometheus_server.up(own)  # a no-op when another test session runs it
        yield own
    finally:
        if users.leave():
            prometheus_server.down(own, purge=True)


@pytest.fixture(scope="session")
def prometheus_url(prometheus_layout: PrometheusLayout) -> str:
    """Base URL of the local Prometheus, e.g. ``http://127.0.0.1:9090``."""
    return prometheus_layout.url
