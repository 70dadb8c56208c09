"""The shapes of the local Kafka deployments and the files that configure them.

Two layouts exist: a single combined broker+controller on 127.0.0.1:9092 (controller on
9093) for development and most tests, and a three-node cluster on 19092-19094 (controllers
on 19192-19194) with replication factor 3 and ``min.insync.replicas=2`` defaults, so that
losing one broker loses no acknowledged write. Both run in KRaft mode (no ZooKeeper): every
node is broker and controller at once, which is what fits on a 2-core machine.

Each has a secured twin (``--secure``, :mod:`amlhp.infra.kafka_security`) on ports of its
own, so that both can run side by side: clients on SASL_SSL (SCRAM-SHA-512), brokers and
controllers between themselves on mutual TLS, and the ``StandardAuthorizer`` refusing what
no ACL allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from amlhp.infra.exceptions import InfraError
from amlhp.infra.kafka_security import (
    SecurityFiles,
    admin_client_config,
    read_env_file,
    security_properties,
)
from amlhp.infra.paths import InfraPaths, default_paths
from amlhp.settings import Settings, rdkafka_from_env

LOCALHOST = "127.0.0.1"
SINGLE_PORT = 9092
SINGLE_CONTROLLER_PORT = 9093
CLUSTER_PORTS = (19092, 19093, 19094)
CLUSTER_CONTROLLER_PORTS = (19192, 19193, 19194)
# the secured twins: clients (SASL_SSL), controllers and the brokers' own listener (mTLS)
SECURE_SINGLE_PORTS = (9392, 9393, 9394)
SECURE_CLUSTER_PORTS = ((39092, 39093, 39094), (39192, 39193, 39194), (39292, 39293, 39294))
DEFAULT_HEAP = "512m"


@dataclass(frozen=True)
class KafkaNode:
    """One broker+controller process and the folder holding its config, data and logs."""

    node_id: int
    port: int
    controller_port: int
    home: Path
    #: the brokers' own listener (replication) of a secured layout; None: PLAINTEXT's
    broker_port: int | None = None

    @property
    def config(self) -> Path:
        return self.home / "server.properties"

    @property
    def log4j_config(self) -> Path:
        return self.home / "log4j2.properties"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def console_log(self) -> Path:
        """stdout/stderr of the JVM (startup failures land here, before log4j is up)."""
        return self.logs_dir / "console.out"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def formatted(self) -> bool:
        return (self.data_dir / "meta.properties").is_file()

    @property
    def marker(self) -> str:
        """What identifies this node's JVM in ``/proc/<pid>/cmdline``: its config path."""
        return str(self.config)


@dataclass(frozen=True)
class KafkaLayout:
    """A local deployment: its nodes, topic defaults and where it keeps its files."""

    name: str
    home: Path
    nodes: tuple[KafkaNode, ...]
    replication_factor: int
    min_insync_replicas: int
    host: str = LOCALHOST
    heap: str = DEFAULT_HEAP
    security: SecurityFiles | None = None

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{self.host}:{node.port}" for node in self.nodes)

    @property
    def lock_file(self) -> Path:
        """Beside the layout's folder, so that ``down --purge`` does not delete it."""
        return self.home.parent / f".{self.name}.lock"

    @property
    def cluster_id_file(self) -> Path:
        return self.home / "cluster.id"

    @property
    def quorum_voters(self) -> str:
        return ",".join(f"{n.node_id}@{self.host}:{n.controller_port}" for n in self.nodes)

    def admin_config(self) -> dict[str, str]:
        """librdkafka settings of an administrator of this layout (its admin principal
        when secured): what waiting for brokers and applying ACLs connect with."""
        if self.security is None:
            return {"bootstrap.servers": self.bootstrap_servers}
        return admin_client_config(self.security, self.bootstrap_servers)

    def node(self, node_id: int) -> KafkaNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise InfraError(f"{self.name} has no node {node_id} (nodes: {self.node_ids()})")

    def node_ids(self) -> list[int]:
        return [n.node_id for n in self.nodes]


def make_layout(
    name: str,
    ports: tuple[int, ...],
    controller_ports: tuple[int, ...],
    *,
    paths: InfraPaths | None = None,
    heap: str = DEFAULT_HEAP,
    broker_ports: tuple[int, ...] | None = None,
) -> KafkaLayout:
    """A layout of ``len(ports)`` nodes under ``var/kafka/<name>``; RF follows the size.

    With ``broker_ports`` (one per node) the layout is secured (module docstring).
    """
    if len(ports) != len(controller_ports) or not ports:
        raise InfraError("one controller port per broker port, at least one of each")
    if broker_ports is not None and len(broker_ports) != len(ports):
        raise InfraError("a secured layout needs one broker listener port per node")
    home = (paths or default_paths()).var / "kafka" / name
    inner = broker_ports or (None,) * len(ports)
    nodes = tuple(
        KafkaNode(i + 1, port, cport, home / f"node-{i + 1}", bport)
        for i, (port, cport, bport) in enumerate(zip(ports, controller_ports, inner, strict=True))
    )
    rf = min(3, len(nodes))
    return KafkaLayout(
        name=name,
        home=home,
        nodes=nodes,
        replication_factor=rf,
        min_insync_replicas=max(1, rf - 1),
        heap=heap,
        security=SecurityFiles(home / "security") if broker_ports is not None else None,
    )


def single_layout(paths: InfraPaths | None = None, name: str = "single") -> KafkaLayout:
    return make_layout(name, (SINGLE_PORT,), (SINGLE_CONTROLLER_PORT,), paths=paths)


def cluster_layout(paths: InfraPaths | None = None, name: str = "cluster") -> KafkaLayout:
    return make_layout(name, CLUSTER_PORTS, CLUSTER_CONTROLLER_PORTS, paths=paths)


def secure_single_layout(
    paths: InfraPaths | None = None, name: str = "single-secure"
) -> KafkaLayout:
    client, controller, broker = SECURE_SINGLE_PORTS
    return make_layout(name, (client,), (controller,), paths=paths, broker_ports=(broker,))


def secure_cluster_layout(
    paths: InfraPaths | None = None, name: str = "cluster-secure"
) -> KafkaLayout:
    client, controller, broker = SECURE_CLUSTER_PORTS
    return make_layout(name, client, controller, paths=paths, broker_ports=broker)


def principal_settings(settings: Settings, layout: KafkaLayout, principal: str) -> Settings:
    """``settings`` as one principal of a secured layout connects: the layout's bootstrap
    servers and the ``AMLHP_RDKAFKA_*`` of that principal's credentials file, in place of
    ``settings``' own (the rest, topics and group, kept)."""
    if layout.security is None:
        raise InfraError(f"{layout.name} is not a secured layout")
    env = read_env_file(layout.security.env_file(principal))
    data = settings.model_dump()
    data.update(bootstrap_servers=layout.bootstrap_servers, rdkafka=rdkafka_from_env(env))
    return Settings.model_validate(data)


def layout_for(paths: InfraPaths, *, cluster: bool, secure: bool) -> KafkaLayout:
    """The layout the ``--cluster`` and ``--secure`` flags name."""
    if secure:
        return secure_cluster_layout(paths) if cluster else secure_single_layout(paths)
    return cluster_layout(paths) if cluster else single_layout(paths)


def all_layouts(paths: InfraPaths) -> list[KafkaLayout]:
    return [layout_for(paths, cluster=c, secure=s) for s in (False, True) for c in (False, True)]


def _listeners(layout: KafkaLayout, node: KafkaNode) -> dict[str, object]:
    host = layout.host
    if layout.security is None or node.broker_port is None:
        return {
            "listeners": f"PLAINTEXT://{host}:{node.port},CONTROLLER://{host}:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{host}:{node.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        }
    return {
        "listeners": (
            f"SASL_SSL://{host}:{node.port},BROKER://{host}:{node.broker_port},"
            f"CONTROLLER://{host}:{node.controller_port}"
        ),
        "advertised.listeners": f"SASL_SSL://{host}:{node.port},BROKER://{host}:{node.broker_port}",
        "inter.broker.listener.name": "BROKER",
        "listener.security.protocol.map": "CONTROLLER:SSL,BROKER:SSL,SASL_SSL:SASL_SSL",
        **security_properties(layout.security),
    }


def server_properties(layout: KafkaLayout, node: KafkaNode) -> str:
    """The node's ``server.properties``: KRaft combined mode, loopback only, small footprint."""
    rf = layout.replication_factor
    isr = layout.min_insync_replicas
    props = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": layout.quorum_voters,
        **_listeners(layout, node),
        "controller.listener.names": "CONTROLLER",
        "log.dirs": node.data_dir,
        # Replication defaults: the cluster keeps every acknowledged write with one node down.
        "default.replication.factor": rf,
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": isr,
        # Small machine, fast tests: fewer internal partitions and threads, no join delay.
        "offsets.topic.num.partitions": 8,
        "transaction.state.log.num.partitions": 8,
        "group.initial.rebalance.delay.ms": 0,
        "num.partitions": 1,
        "num.network.threads": 2,
        "num.io.threads": 4,
        "num.recovery.threads.per.data.dir": 1,
        "background.threads": 4,
        "log.retention.hours": 168,
        "log.segment.bytes": 256 * 1024 * 1024,
        "auto.create.topics.enable": "true",
        # A crashed (SIGKILLed) broker is fenced and its partitions led by a follower after
        # 3 s without a heartbeat instead of the default 9 s: recovery is bounded by this.
        "broker.heartbeat.interval.ms": 500,
        "broker.session.timeout.ms": 3000,
    }
    header = f"# Generated by amlhp.infra for layout {layout.name!r}; edits are overwritten.\n"
    return header + "".join(f"{key}={value}\n" for key, value in props.items())


def log4j2_properties(node: KafkaNode) -> str:
    """Broker logging to a size-capped file in the node's ``logs/`` folder."""
    logs = node.logs_dir
    return f"""# Generated by amlhp.infra; edits are overwritten.
status = warn
name = amlhp-kafka
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {logs}/server.log
appender.file.filePattern = {logs}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 2
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.stateChange.name = state.change.logger
logger.stateChange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def write_configs(layout: KafkaLayout) -> None:
    """(Re)write every node's config files; data folders are left alone."""
    for node in layout.nodes:
        node.logs_dir.mkdir(parents=True, exist_ok=True)
        node.config.write_text(server_properties(layout, node))
        node.log4j_config.write_text(log4j2_properties(node))
