"""The generated broker configuration: KRaft combined mode, ports and replication defaults."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from amlhp.infra.exceptions import InfraError
from amlhp.infra.kafka_broker import new_cluster_id
from amlhp.infra.kafka_config import (
    cluster_layout,
    make_layout,
    server_properties,
    single_layout,
)
from amlhp.infra.paths import InfraPaths


def _props(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {k: v for k, v in pairs}


def test_single_broker_is_kraft_on_loopback_with_rf1(tmp_path: Path) -> None:
    layout = single_layout(InfraPaths(tmp_path))
    props = _props(server_properties(layout, layout.nodes[0]))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["default.replication.factor"] == "1"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["min.insync.replicas"] == "1"
    assert props["log.dirs"] == str(tmp_path / "var/kafka/single/node-1/data")
    assert not any("zookeeper" in key for key in props)
    assert layout.bootstrap_servers == "127.0.0.1:9092"


def test_cluster_replicates_three_ways_and_tolerates_one_loss(tmp_path: Path) -> None:
    layout = cluster_layout(InfraPaths(tmp_path))
    assert layout.bootstrap_servers == "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    all_ports = [p for n in layout.nodes for p in (n.port, n.controller_port)]
    assert len(set(all_ports)) == 6
    for node in layout.nodes:
        props = _props(server_properties(layout, node))
        assert props["node.id"] == str(node.node_id)
        assert props["default.replication.factor"] == "3"
        assert props["min.insync.replicas"] == "2"
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["transaction.state.log.replication.factor"] == "3"
        assert props["transaction.state.log.min.isr"] == "2"
        assert props["controller.quorum.voters"] == (
            "1@127.0.0.1:19192,2@127.0.0.1:19193,3@127.0.0.1:19194"
        )
        assert props["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{node.port}"
    homes = {n.home for n in layout.nodes}
    assert len(homes) == 3


def test_layout_rejects_mismatched_ports(tmp_path: Path) -> None:
    with pytest.raises(InfraError, match="one controller port per broker port"):
        make_layout("x", (1, 2), (3,), paths=InfraPaths(tmp_path))
    layout = single_layout(InfraPaths(tmp_path))
    with pytest.raises(InfraError, match="no node 2"):
        layout.node(2)


def test_cluster_ids_are_kafka_uuids() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cid in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cid), cid
        assert not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16
