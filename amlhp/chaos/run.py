"""One fault scenario on the real broker: a fixed-rate tap, stage processes, faults on a
schedule, then the exact ledger.

Each run gets topics and groups of its own (``chaos.<run id>.*``, removed at the end), so
that it can run beside a live pipeline on the same cluster without touching it. The
stages are the real ``amlhp`` commands in child processes, started with the run's
settings (:func:`amlhp.pipeline.children.child_env`); a fault is a signal to one of them.
At the end every (gateway, seq) the tap offered must be in the verdict dataset or the
dead letters exactly once (:mod:`amlhp.streams.accounting`), and the dataset must hold no
row twice. Recovery is measured after every fault that stops a stage's work: the seconds
from the fault until the dataset's highest seq moves again.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from amlhp.chaos.datasets import check_alerts, check_flows, flow_topic_duplicates
from amlhp.chaos.exceptions import ChaosError, ScenarioSkipped
from amlhp.chaos.observe import PeakLag, topic_duplicates
from amlhp.infra import kafka_broker
from amlhp.infra.kafka_config import KafkaLayout
from amlhp.infra.paths import default_paths
from amlhp.pipeline.children import StageProcess, amlhp_command, child_env, start_stage
from amlhp.pipeline.dataset import read_verdicts
from amlhp.settings import Settings, TopicNames
from amlhp.streams.accounting import Accounting
from amlhp.streams.demo import wait_accounted, wait_groups_ready
from amlhp.streams.topics import (
    TopicError,
    admin_client,
    delete_topics,
    ensure_pipeline_topics,
    list_topics,
)

log = logging.getLogger(__name__)
GATEWAY = "gw-chaos"
#: the flow worker closes a silent gateway's flows after this many seconds
FLOW_IDLE_CLOSE_S = 3.0


@dataclass(frozen=True)
class Load:
    """What the tap offers: ``rate`` packets/s for ``seconds`` (exactly rate x seconds),
    stamped with the wall clock, or with the capture's own times (``keep_timestamps``)."""

    rate: int = 1500
    seconds: float = 30.0
    keep_timestamps: bool = False

    @property
    def packets(self) -> int:
        return int(self.rate * self.seconds)


@dataclass
class ScenarioResult:
    """One scenario's row of the table."""

    name: str
    packets: int
    verdicts: int = 0
    dead: int = 0
    dead_messages: int = 0
    garbage: int = 0
    missing: int = 0
    duplicate_rows: int = 0
    topic_duplicates: int = 0
    peak_lag: int = 0
    recovery_s: list[float] = field(default_factory=list)
    #: flow verdicts in the flow dataset (scenarios that run the flow worker), and those
    #: the flow worker published twice (dropped by the flow sink)
    flows: int = 0
    flow_topic_duplicates: int = 0
    dead_by_reason: dict[str, int] = field(default_factory=dict)
    #: wall seconds of each phase (setup, tap, drain, checks, close): where a run's time goes
    phase_s: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    skipped: str | None = None

    @property
    def passed(self) -> bool:
        if self.skipped is not None:
            return True
        return self.error is None and self.missing == 0 and self.duplicate_rows == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.name,
            "packets": self.packets,
            "verdicts": self.verdicts,
            "dead_letters": self.dead,
            "dead_messages": self.dead_messages,
            "garbage_sent": self.garbage,
            "missing": self.missing,
            "duplicate_rows": self.duplicate_rows,
            "topic_duplicates": self.topic_duplicates,
            "peak_lag_records": self.peak_lag,
            "recovery_s": self.recovery_s,
            "flows": self.flows,
            "flow_topic_duplicates": self.flow_topic_duplicates,
            "dead_by_reason": self.dead_by_reason,
            "phase_s": self.phase_s,
            "passed": self.passed,
            "error": self.error,
            "skipped": self.skipped,
        }


def run_settings(base: Settings, run_id: str) -> Settings:
    """``base`` with topics and consumer group of this run only."""
    prefix = f"chaos.{run_id}"
    update: dict[str, Any] = {
        f"topic_{name}": f"{prefix}.{name}" for name in TopicNames.model_fields
    }
    update["consumer_group"] = f"{prefix}.group"
    return base.model_copy(update=update)


class ChaosRun:
    """The processes of one scenario, and the faults a scenario applies to them."""

    def __init__(
        self,
        base: Settings,
        workdir: Path,
        load: Load,
        capture: Path,
        broker: KafkaLayout | None = None,
    ) -> None:
        self.broker = broker
        self.run_id = uuid.uuid4().hex[:8]
        self.settings = run_settings(base, self.run_id)
        self.workdir = workdir / self.run_id
        self.out = self.workdir / "verdicts"
        self.load = load
        self.capture = capture
        self.env = child_env(self.settings, {**os.environ, "OMP_NUM_THREADS": "1"})
        self.workers: list[StageProcess] = []
        self.sink: StageProcess | None = None
        self.alert_stage: StageProcess | None = None
        self.alert_sink: StageProcess | None = None
        self.alerts_out = self.workdir / "alerts"
        self.flow_worker: StageProcess | None = None
        self.flow_sink: StageProcess | None = None
        self.flows_out = self.workdir / "flows"
        self.retired: list[StageProcess] = []
        self.recovery_s: list[float] = []
        self.garbage_sent = 0
        self.small_disk: Path | None = None
        self._tap: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._names = 0

    # -- processes ---------------------------------------------------------------------
    def _name(self, kind: str) -> str:
        self._names += 1
        return f"{kind}-{self._names}"

    def start_worker(self) -> StageProcess:
        stage = start_stage(self._name("worker"), ["worker"], self.workdir / "logs", self.env)
        self.workers.append(stage)
        return stage

    def start_sink(self) -> StageProcess:
        args = ["sink", "--out", str(self.out), "--roll-seconds", "0.5"]
        self.sink = start_stage(self._name("sink"), args, self.workdir / "logs", self.env)
        return self.sink

    def start_alerts(self) -> StageProcess:
        args = ["alerts-stage", "--metrics-port", "-1"]
        self.alert_stage = start_stage(self._name("alerts"), args, self.workdir / "logs", self.env)
        return self.alert_stage

    def start_alert_sink(self) -> StageProcess:
        args = ["alerts-sink", "--out", str(self.alerts_out), "--roll-seconds", "0.5"]
        log_dir = self.workdir / "logs"
        self.alert_sink = start_stage(self._name("alert-sink"), args, log_dir, self.env)
        return self.alert_sink

    def start_flows(self) -> StageProcess:
        args = ["flows", "worker", "--idle-close", str(FLOW_IDLE_CLOSE_S)]
        self.flow_worker = start_stage(self._name("flows"), args, self.workdir / "logs", self.env)
        return self.flow_worker

    def start_flow_sink(self) -> StageProcess:
        args = ["flows", "sink", "--out", str(self.flows_out), "--roll-seconds", "0.5"]
        log_dir = self.workdir / "logs"
        self.flow_sink = start_stage(self._name("flow-sink"), args, log_dir, self.env)
        return self.flow_sink

    def live(self) -> list[StageProcess]:
        optional = (self.sink, self.alert_stage, self.alert_sink, self.flow_worker, self.flow_sink)
        return [*self.workers, *(s for s in optional if s is not None)]

    def signal(self, stage: StageProcess, sig: signal.Signals) -> None:
        """Send ``sig``; a stage that a SIGKILL or SIGTERM ended is retired from the run."""
        stage.proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            stage.proc.wait(60)
            self.retired.append(stage)
            if stage in self.workers:
                self.workers.remove(stage)
            if stage is self.sink:
                self.sink = None
            if stage is self.alert_stage:
                self.alert_stage = None
            if stage is self.flow_worker:
                self.flow_worker = None

    def send_garbage(self, values: tuple[bytes, ...]) -> None:
        """Write ``values`` straight to the raw topic (no tap): each must become one
        message-level dead letter."""
        from confluent_kafka import Producer

        producer = Producer(self.settings.kafka_config(**{"client.id": "amlhp-chaos-garbage"}))
        for value in values:
            producer.produce(self.settings.topic_raw, key=b"gw-garbage", value=value)
        if producer.flush(30):
            raise ChaosError("garbage messages not delivered within 30 s")
        self.garbage_sent += len(values)

    # -- the sink's filesystem ----------------------------------------------------------
    def mount_small_disk(self, size: str) -> None:
        """A tmpfs of ``size`` (e.g. ``600k``) over the sink's dataset folder (needs root;
        unmounted at the end of the run)."""
        if os.geteuid() != 0 or shutil.which("mount") is None:
            raise ScenarioSkipped("needs root and mount(8) for a small filesystem of its own")
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            self._mount(["-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(self.out)])
        except ChaosError as exc:  # e.g. a container without CAP_SYS_ADMIN
            raise ScenarioSkipped(f"cannot make a small filesystem: {exc}") from exc
        self.small_disk = self.out

    def grow_disk(self, size: str) -> None:
        assert self.small_disk is not None
        self._mount(["-o", f"remount,size={size}", str(self.small_disk)])

    def sink_saw_disk_full(self) -> bool:
        logs = [*([self.sink] if self.sink is not None else []), *self.retired]
        return any("no space left under" in s.log_path.read_text(errors="replace") for s in logs)

    @staticmethod
    def _mount(args: list[str]) -> None:
        done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ChaosError(f"mount {' '.join(args)} failed: {done.stderr.strip()}")

    # -- the brokers (local layouts that amlhp runs) ----------------------------------------
    def _layout(self) -> KafkaLayout:
        if self.broker is None:
            raise ChaosError("this scenario needs a local broker that amlhp runs")
        return self.broker

    def kill_broker(self, node_id: int) -> float:
        """SIGKILL one broker node; return when (monotonic) it died."""
        kafka_broker.kill_node(self._layout(), node_id)
        log.info("chaos %s: SIGKILLed broker %d", self.run_id, node_id)
        return time.monotonic()

    def restart_broker(self, node_id: int) -> None:
        """Start the node again and wait until every broker of the layout answers."""
        waited = kafka_broker.restart_node(
            self._layout(), node_id, paths=default_paths(self.settings.home)
        )
        log.info("chaos %s: broker %d back after %.1f s", self.run_id, node_id, waited)

    def broker_ids(self) -> list[int]:
        return self._layout().node_ids()

    def wait_in_sync(self, timeout_s: float = 120.0) -> None:
        """Wait until every replica of the run's topics and of the group offsets is in
        sync again, so that the next kill is one failure, not two at once (with min ISR
        2 of 3, two brokers down rightly stop every write)."""
        admin = admin_client(self.settings.kafka_config())
        names = [*self.settings.topics.all(), "__consumer_offsets"]
        deadline = time.monotonic() + timeout_s
        while True:
            topics = admin.list_topics(timeout=10).topics
            behind = [
                (name, part.id)
                for name in names
                if name in topics
                for part in topics[name].partitions.values()
                if len(part.isrs) < len(part.replicas)
            ]
            if not behind:
                return
            if time.monotonic() > deadline:
                raise ChaosError(f"replicas not in sync after {timeout_s:.0f} s: {behind[:5]}")
            time.sleep(0.5)

    def leaders(self) -> dict[int, int]:
        """Broker id -> how many partitions of the raw topic it leads."""
        admin = admin_client(self.settings.kafka_config())
        counts = {node.node_id: 0 for node in self._layout().nodes}
        for name in (self.settings.topic_raw,):
            meta = admin.list_topics(name, timeout=10).topics[name]
            for part in meta.partitions.values():
                counts[part.leader] = counts.get(part.leader, 0) + 1
        return counts

    # -- time and measurement --------------------------------------------------------------
    def at(self, seconds: float) -> None:
        """Sleep until ``seconds`` after the tap started."""
        time.sleep(max(0.0, self._started + seconds - time.monotonic()))

    def highest_seq(self) -> int:
        try:
            table = read_verdicts(self.out)
        except (OSError, ValueError):  # a file being renamed in: try again next time
            return -1
        return int(pc.max(table.column("seq")).as_py()) if table.num_rows else -1

    def measure_recovery(self, since: float, settle_s: float = 1.5, limit_s: float = 90.0) -> None:
        """Seconds from ``since`` (a fault) until the dataset's highest seq moves again,
        after ``settle_s`` for what was already in flight to land. A fault after every
        packet reached the dataset would measure nothing: that is an error (the run is too
        short); after the tap ended, the backlog still shows the recovery."""
        tap_ended = self._tap is not None and self._tap.poll() is not None
        if tap_ended and self.highest_seq() >= self.load.packets - 1:
            raise ChaosError(
                f"every packet was stored before a fault's recovery could be measured: the run of "
                f"{self.load.seconds:.0f} s is too short for this scenario"
            )
        time.sleep(settle_s)
        before = self.highest_seq()
        while self.highest_seq() <= before and time.monotonic() - since < limit_s:
            time.sleep(0.25)
        self.recovery_s.append(round(time.monotonic() - since, 1))

    # -- the run -----------------------------------------------------------------------
    def setup(self, workers: int = 1, alerts: bool = False, flows: bool = False) -> None:
        ensure_pipeline_topics(self.settings)
        for _ in range(workers):
            self.start_worker()
        self.start_sink()
        group = self.settings.consumer_group
        groups = [group, f"{group}-sink"]
        if alerts:
            self.start_alerts()
            self.start_alert_sink()
            groups += [f"{group}-alerts", f"{group}-alerts-sink"]
        if flows:
            self.start_flows()
            self.start_flow_sink()
            groups += [f"{group}-flows", f"{group}-flows-sink"]
        wait_groups_ready(self.settings, groups, self.live(), 180.0, {group: workers})

    def start_tap(self) -> None:
        argv = [*amlhp_command(), "tap", str(self.capture), "--gateway", GATEWAY,
                "--rate", str(self.load.rate), "--duration", str(self.load.seconds),
                *(["--keep-timestamps"] if self.load.keep_timestamps else [])]  # fmt: skip
        log_path = self.workdir / "logs" / "tap.log"
        with log_path.open("wb") as fh:
            self._tap = subprocess.Popen(argv, env=self.env, stdout=fh, stderr=subprocess.STDOUT)
        self._started = time.monotonic()

    def finish(self, timeout_s: float = 120.0) -> Accounting:
        assert self._tap is not None
        code = self._tap.wait(timeout=self.load.seconds + 120)
        if code != 0:
            raise ChaosError(f"the tap exited with {code}: see {self.workdir / 'logs' / 'tap.log'}")
        expected = {GATEWAY: (0, self.load.packets)}
        return wait_accounted(self.settings, self.out, expected, self.live(), timeout_s)

    def close(self, keep: bool) -> None:
        for stage in self.live():
            stage.stop(timeout_s=20)
        for stage in self.retired:
            if stage.proc.poll() is None:  # a stopped (SIGSTOP) zombie
                stage.proc.send_signal(signal.SIGCONT)
                stage.stop(timeout_s=20)
        if self._tap is not None and self._tap.poll() is None:
            self._tap.kill()
            self._tap.wait(10)
        self._delete_topics()
        if self.small_disk is not None:
            if keep:  # the dataset outlives its filesystem: copy it out first
                shutil.copytree(self.small_disk, self.workdir / "verdicts-kept")
            subprocess.run(["umount", str(self.small_disk)], check=False)
            self.small_disk = None
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _delete_topics(self) -> None:
        """The run's topics and the changelog topics of its groups."""
        admin = admin_client(self.settings.kafka_config())
        groups = f"{self.settings.consumer_group}-"
        try:
            names = self.settings.topics.all()
            names += [t.name for t in list_topics(admin) if t.name.startswith(groups)]
            delete_topics(admin, names)
        except TopicError as exc:  # left for the retention to remove
            log.warning("could not delete the chaos topics: %s", exc)


Faults = Callable[[ChaosRun], None]


def run_scenario(
    name: str,
    faults: Faults,
    base: Settings,
    workdir: Path,
    load: Load,
    capture: Path,
    *,
    workers: int = 1,
    keep: bool = False,
    broker: KafkaLayout | None = None,
    prepare: Faults | None = None,
    alerts: bool = False,
    flows: bool = False,
) -> ScenarioResult:
    """Set up, start the tap, apply ``faults`` (which return once the last is applied),
    then check the ledger exactly. ``broker``: the local layout ``base`` points at, for
    the scenarios that kill brokers; ``prepare``: called before the tap starts (e.g. to
    write the capture it replays); ``alerts``: run the alert stage and its sink too, and
    check the alert dataset (idle incidents close after 5 s); ``flows``: run the flow
    worker and its sink too, and check the flow dataset against the raw topic's flows."""
    if alerts:
        base = base.model_copy(update={"alert_idle_close_s": 5.0})
    run = ChaosRun(base, workdir, load, capture, broker)
    result = ScenarioResult(name=name, packets=load.packets)
    lag: PeakLag | None = None
    clock = _PhaseClock(result.phase_s)
    try:
        run.setup(workers=workers, alerts=alerts, flows=flows)
        if prepare is not None:
            prepare(run)
        lag = PeakLag(run.settings).start()
        clock.lap("setup")
        run.start_tap()
        faults(run)
        clock.lap("faults")
        ledger = run.finish()
        clock.lap("drain")
        result.peak_lag = lag.stop()
        result.topic_duplicates = topic_duplicates(run.settings)
        result.verdicts, result.dead = ledger.verdicts, ledger.dead_packets
        result.missing = ledger.missing
        result.dead_messages, result.garbage = ledger.dead_messages, run.garbage_sent
        result.dead_by_reason = dict(ledger.dead_by_reason)
        if ledger.dead_messages != run.garbage_sent:
            result.error = (
                f"{run.garbage_sent} garbage messages sent, "
                f"{ledger.dead_messages} message dead letters"
            )
        # the dataset must hold each packet once; the dead-letter topic is at-least-once
        result.duplicate_rows = ledger.verdict_rows - ledger.verdicts + ledger.both
        if alerts and result.error is None:
            idle = run.settings.alert_idle_close_s
            result.error = check_alerts(run.alerts_out, run.live(), idle)
        if flows and result.error is None:
            result.flows, result.error = check_flows(
                run.flows_out, run.live(), run.settings, FLOW_IDLE_CLOSE_S
            )
            result.flow_topic_duplicates = flow_topic_duplicates(run.settings)
        clock.lap("checks")
    except ScenarioSkipped as exc:
        result.skipped = str(exc)
    except ChaosError as exc:
        result.error = str(exc)
    except Exception as exc:
        log.exception("scenario %s failed", name)
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if lag is not None:
            lag.stop()
        result.recovery_s = run.recovery_s
        clock.lap("checks")
        run.close(keep=keep or not result.passed)
        clock.lap("close")
    return result


class _PhaseClock:
    """Adds the seconds since the previous lap to ``phases[name]``."""

    def __init__(self, phases: dict[str, float]) -> None:
        self.phases = phases
        self.last = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.phases[name] = round(self.phases.get(name, 0.0) + now - self.last, 1)
        self.last = now
