"""Start, wait for, inspect and stop the local Apache Kafka broker or cluster.

Each node is a JVM running ``kafka.Kafka`` from the jars ``amlhp infra fetch`` put in
``.cache/``; its storage is formatted once with ``kafka.tools.StorageTool`` (KRaft needs a
cluster id written before the first start). ``up`` is idempotent: nodes already running
are left alone; ``down`` sends SIGTERM to every node at once (a node stopping alone would
wait for a controller quorum the others are leaving), waits, then SIGKILLs stragglers.
"""

from __future__ import annotations

import base64
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from amlhp.infra import process
from amlhp.infra.exceptions import FetchError, InfraError, KafkaStartError
from amlhp.infra.fetch import fetch_kafka, kafka_libs_ready
from amlhp.infra.kafka_config import KafkaLayout, KafkaNode, write_configs
from amlhp.infra.kafka_security import (
    ensure_certificates,
    ensure_credentials,
    scram_format_args,
    upsert_scram_users,
)
from amlhp.infra.paths import InfraPaths, default_paths
from amlhp.infra.process import StatusCallback, ignore_status

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class NodeStatus:
    node_id: int
    port: int
    pid: int | None
    listening: bool

    @property
    def state(self) -> str:
        if self.pid is not None:
            return "running" if self.listening else "starting"
        return "foreign" if self.listening else "stopped"


@dataclass(frozen=True)
class UpResult:
    bootstrap_servers: str
    started: list[int]
    already_running: list[int]
    external: bool
    seconds: float


@dataclass(frozen=True)
class DownResult:
    stopped: list[int]
    killed: list[int]


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise InfraError("Java 17+ is needed to run Kafka: apt-get install openjdk-17-jre-headless")
    return java


def new_cluster_id() -> str:
    """A KRaft cluster id as Kafka's ``Uuid.randomUuid()`` makes it: URL-safe base64 of 16
    random bytes, never starting with ``-`` (it would read as a command-line option)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _cluster_id(layout: KafkaLayout) -> str:
    layout.home.mkdir(parents=True, exist_ok=True)
    if layout.cluster_id_file.is_file():
        return layout.cluster_id_file.read_text().strip()
    cid = new_cluster_id()
    layout.cluster_id_file.write_text(cid + "\n")
    return cid


def _jvm(libs: Path, node: KafkaNode, *, heap: str, tool: bool) -> list[str]:
    opts = [
        _java(),
        f"-Xmx{heap}",
        "-Djava.awt.headless=true",
        "-XX:-UsePerfData",  # no /tmp/hsperfdata_* file: nothing is written outside var/
        f"-Dlog4j2.configurationFile={node.log4j_config}",
        f"-Dkafka.logs.dir={node.logs_dir}",
    ]
    if tool:  # short-lived: start fast rather than run fast
        opts += ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]
    else:
        opts += ["-Xms128m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]
        opts += ["-XX:+ExitOnOutOfMemoryError"]
    return [*opts, "-cp", f"{libs}/*"]


def format_storage(layout: KafkaLayout, libs: Path) -> list[int]:
    """Format the nodes that have no ``meta.properties`` yet (in parallel); return their ids."""
    todo = [node for node in layout.nodes if not node.formatted]
    if not todo:
        return []
    cid = _cluster_id(layout)
    scram: list[str] = []
    if layout.security is not None:  # the first SCRAM users exist only if made at format
        scram = scram_format_args(ensure_credentials(layout.security, layout.bootstrap_servers))
    procs = []
    for node in todo:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            *_jvm(libs, node, heap="256m", tool=True),
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cid,
            "--config",
            str(node.config),
            "--ignore-formatted",
            *scram,
        ]
        procs.append(
            (node, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        )
    for node, proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            text = out.decode(errors="replace").strip()[-2000:]
            raise KafkaStartError(f"formatting node {node.node_id} of {layout.name} failed: {text}")
    return [node.node_id for node, _ in procs]


def node_pid(node: KafkaNode) -> int | None:
    return process.running_pid(node.pid_file, node.marker)


def status(layout: KafkaLayout) -> list[NodeStatus]:
    return [
        NodeStatus(n.node_id, n.port, node_pid(n), process.port_open(layout.host, n.port))
        for n in layout.nodes
    ]


def registered_brokers(layout: KafkaLayout, timeout: float = 2.0) -> int:
    """How many brokers the cluster's metadata lists (0 when it does not answer)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    # log_level 0: connection-refused noise while a broker boots is expected, not news.
    admin = AdminClient({**layout.admin_config(), "log_level": 0})
    try:
        return len(admin.list_topics(timeout=timeout).brokers)
    except KafkaException:
        return 0


def wait_ready(
    layout: KafkaLayout,
    *,
    expected: int | None = None,
    timeout: float = START_TIMEOUT_S,
    on_status: StatusCallback = ignore_status,
) -> float:
    """Block until ``expected`` brokers (default: all) are registered; return seconds waited.

    Fails early, with the log tail, when one of our node processes dies while we wait.
    """
    want = len(layout.nodes) if expected is None else expected
    start = time.monotonic()
    while True:
        waited = time.monotonic() - start
        ours = [n for n in layout.nodes if n.pid_file.exists()]
        dead = [n for n in ours if node_pid(n) is None]
        if dead:
            node = dead[0]
            raise KafkaStartError(
                f"Kafka node {node.node_id} of {layout.name} exited while starting; "
                f"see {node.logs_dir}:\n{process.log_tail(node.console_log)}\n"
                f"{process.log_tail(node.logs_dir / 'server.log')}"
            )
        listening = [n for n in layout.nodes if process.port_open(layout.host, n.port)]
        count = registered_brokers(layout) if listening else 0
        on_status(f"Kafka {layout.name}: {count}/{want} brokers ready ({waited:.0f}s)")
        if count >= want:
            return waited
        if waited > timeout:
            raise KafkaStartError(
                f"Kafka {layout.name} not ready after {timeout:.0f}s ({count}/{want} brokers); "
                f"logs in {layout.home}"
            )
        time.sleep(0.5)


def _libs(paths: InfraPaths, on_status: StatusCallback) -> Path:
    """The cached jars; fetched first (Maven) when missing, e.g. after ``rm -rf .cache``."""
    try:
        return kafka_libs_ready(paths)
    except FetchError:
        on_status(f"fetching Apache Kafka {paths.kafka_version()} jars with Maven")
        return fetch_kafka(paths).libs


def start_node(layout: KafkaLayout, node: KafkaNode, libs: Path) -> int:
    """Spawn one node (configs written, storage formatted beforehand); return its pid."""
    if process.port_open(layout.host, node.port) or process.port_open(
        layout.host, node.controller_port
    ):
        raise KafkaStartError(
            f"port {node.port} or {node.controller_port} on {layout.host} is taken by another "
            f"process; stop it or use another layout"
        )
    cmd = [*_jvm(libs, node, heap=layout.heap, tool=False), "kafka.Kafka", str(node.config)]
    return process.spawn(cmd, log_file=node.console_log, pid_file=node.pid_file, cwd=node.home)


def up(
    layout: KafkaLayout,
    *,
    paths: InfraPaths | None = None,
    timeout: float = START_TIMEOUT_S,
    on_status: StatusCallback = ignore_status,
) -> UpResult:
    """Start every node that is not running and wait until all brokers answer.

    If none of the nodes is ours but every port already answers as Kafka, that broker is
    used as it is (``external=True``): ``up`` must never fight a broker someone else runs.
    """
    with process.file_lock(layout.lock_file):
        return _up(layout, paths or default_paths(), timeout, on_status)


def _up(
    layout: KafkaLayout, paths: InfraPaths, timeout: float, on_status: StatusCallback
) -> UpResult:
    begin = time.monotonic()
    before = status(layout)
    running = [s.node_id for s in before if s.pid is not None]
    if not running and all(s.listening for s in before):
        on_status(f"Kafka {layout.name}: ports already answer, checking for a broker")
        if registered_brokers(layout, timeout=5.0) >= len(layout.nodes):
            return UpResult(layout.bootstrap_servers, [], [], True, time.monotonic() - begin)
    libs = _libs(paths, on_status)
    if layout.security is not None and ensure_certificates(layout.security, layout.host):
        on_status(f"Kafka {layout.name}: made a CA and the brokers' certificate")
    write_configs(layout)
    todo = [layout.node(s.node_id) for s in before if s.pid is None]
    if any(not node.formatted for node in todo):
        on_status(f"Kafka {layout.name}: formatting storage")
        format_storage(layout, libs)
    for node in todo:
        on_status(f"Kafka {layout.name}: starting node {node.node_id} on port {node.port}")
        start_node(layout, node, libs)
    wait_ready(layout, timeout=timeout, on_status=on_status)
    if layout.security is not None:
        from confluent_kafka.admin import AdminClient

        on_status(f"Kafka {layout.name}: creating the stage principals' SCRAM users")
        passwords = ensure_credentials(layout.security, layout.bootstrap_servers)
        upsert_scram_users(AdminClient({**layout.admin_config(), "log_level": 0}), passwords)
    started = [n.node_id for n in todo]
    return UpResult(layout.bootstrap_servers, started, running, False, time.monotonic() - begin)


def stop_nodes(
    layout: KafkaLayout, node_ids: list[int], *, timeout: float = STOP_TIMEOUT_S
) -> DownResult:
    """SIGTERM the given nodes together, wait, then SIGKILL what is left."""
    with process.file_lock(layout.lock_file):
        return _stop_nodes(layout, node_ids, timeout)


def _stop_nodes(layout: KafkaLayout, node_ids: list[int], timeout: float) -> DownResult:
    targets = {node.node_id: node for node in layout.nodes if node.node_id in node_ids}
    pids = {nid: pid for nid, node in targets.items() if (pid := node_pid(node)) is not None}
    marker_of = {pid: targets[nid].marker for nid, pid in pids.items()}
    for pid in pids.values():
        process.signal_pid(pid, signal.SIGTERM)
    left = process.wait_gone(list(pids.values()), marker_of.__getitem__, timeout)
    for pid in left:
        process.signal_pid(pid, signal.SIGKILL)
    still = process.wait_gone(left, marker_of.__getitem__, 10.0)
    if still:
        raise InfraError(f"Kafka processes {still} survived SIGKILL")
    for node in targets.values():
        node.pid_file.unlink(missing_ok=True)
    killed = [nid for nid, pid in pids.items() if pid in left]
    return DownResult(stopped=sorted(pids), killed=killed)


def down(
    layout: KafkaLayout, *, purge: bool = False, timeout: float = STOP_TIMEOUT_S
) -> DownResult:
    """Stop every node of the layout; with ``purge`` also delete its data and logs."""
    with process.file_lock(layout.lock_file):
        result = _stop_nodes(layout, layout.node_ids(), timeout)
        if purge and layout.home.exists():
            shutil.rmtree(layout.home)
    return result


def kill_node(layout: KafkaLayout, node_id: int, *, timeout: float = 10.0) -> int:
    """SIGKILL one node (a crash, not a shutdown: no controlled leader hand-over, log
    recovery on the next start) and wait until it is gone; return the pid it had."""
    node = layout.node(node_id)
    with process.file_lock(layout.lock_file):
        pid = node_pid(node)
        if pid is None:
            raise InfraError(f"Kafka node {node_id} of {layout.name} is not running")
        process.signal_pid(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        if process.wait_gone([pid], lambda _: node.marker, timeout):
            raise InfraError(f"Kafka node {node_id} of {layout.name} survived SIGKILL")
        # a dying JVM's /proc entry can vanish before the kernel closes its sockets
        while any(process.port_open(layout.host, p) for p in (node.port, node.controller_port)):
            if time.monotonic() > deadline:
                raise InfraError(f"Kafka node {node_id}'s ports still answer after SIGKILL")
            time.sleep(0.05)
        return pid


def restart_node(
    layout: KafkaLayout,
    node_id: int,
    *,
    paths: InfraPaths | None = None,
    timeout: float = START_TIMEOUT_S,
) -> float:
    """Start one stopped node of a running layout and wait until all brokers answer again."""
    node = layout.node(node_id)
    begin = time.monotonic()
    with process.file_lock(layout.lock_file):
        if node_pid(node) is None:
            start_node(layout, node, kafka_libs_ready(paths or default_paths()))
        # until a crashed node is fenced the metadata still lists it: wait for its port
        while not process.port_open(layout.host, node.port):
            if node_pid(node) is None or time.monotonic() - begin > timeout:
                raise KafkaStartError(
                    f"Kafka node {node_id} of {layout.name} did not come back; see "
                    f"{node.logs_dir}:\n{process.log_tail(node.console_log)}"
                )
            time.sleep(0.2)
        wait_ready(layout, timeout=max(1.0, timeout - (time.monotonic() - begin)))
        return time.monotonic() - begin
