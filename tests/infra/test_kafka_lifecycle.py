"""`up` twice is harmless, `down` leaves no broker process (a broker of its own ports)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from amlhp.infra import kafka_broker, process
from amlhp.infra.kafka_config import KafkaLayout, make_layout

# Ports of their own, so this test can stop its broker while the session's one serves others.
PORT, CONTROLLER_PORT = 29092, 29093


def _java_processes_with(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "kafka.Kafka" in cmd and marker in cmd:
            pids.append(int(proc.name))
    return pids


@pytest.fixture
def lifecycle_layout() -> Iterator[KafkaLayout]:
    layout = make_layout("pytest-lifecycle", (PORT,), (CONTROLLER_PORT,))
    if process.port_open(layout.host, PORT) or process.port_open(layout.host, CONTROLLER_PORT):
        pytest.fail(f"ports {PORT}/{CONTROLLER_PORT} must be free for this test")
    yield layout
    kafka_broker.down(layout, purge=True)


@pytest.mark.kafka
@pytest.mark.slow
def test_up_twice_is_harmless_and_down_leaves_no_process(lifecycle_layout: KafkaLayout) -> None:
    layout = lifecycle_layout
    node = layout.nodes[0]

    first = kafka_broker.up(layout)
    assert first.started == [1]
    assert not first.external
    pid = kafka_broker.node_pid(node)
    assert pid is not None
    assert _java_processes_with(node.marker) == [pid]
    assert kafka_broker.registered_brokers(layout) == 1

    second = kafka_broker.up(layout)
    assert second.started == []
    assert second.already_running == [1]
    assert kafka_broker.node_pid(node) == pid
    assert _java_processes_with(node.marker) == [pid]
    assert [s.state for s in kafka_broker.status(layout)] == ["running"]

    stopped = kafka_broker.down(layout)
    assert stopped.stopped == [1]
    assert stopped.killed == []  # SIGTERM was enough: a clean shutdown
    assert _java_processes_with(node.marker) == []
    assert not process.port_open(layout.host, PORT)
    assert not node.pid_file.exists()
    assert [s.state for s in kafka_broker.status(layout)] == ["stopped"]
    assert kafka_broker.down(layout).stopped == []  # down twice is harmless too

    # Data survives down/up: the formatted storage is reused, not reformatted.
    cluster_id = layout.cluster_id_file.read_text()
    again = kafka_broker.up(layout)
    assert again.started == [1]
    assert layout.cluster_id_file.read_text() == cluster_id
    assert f"cluster.id={cluster_id.strip()}" in (node.data_dir / "meta.properties").read_text()
