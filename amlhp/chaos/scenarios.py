"""The fault scenarios: what is done to which stage, when, in a run of ``Load.seconds``.

Times are fractions of the tap's run, so that the short version in ``make test`` and the
full one of ``amlhp chaos`` do the same thing. Each function returns once its last fault
is applied; :func:`amlhp.chaos.run.run_scenario` then checks the ledger.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from amlhp.chaos.exceptions import ChaosError, ScenarioSkipped
from amlhp.chaos.fuzz import GARBAGE, write_fuzzed_capture
from amlhp.chaos.run import ChaosRun, Load
from amlhp.infra import kafka_broker
from amlhp.infra.kafka_config import KafkaLayout, layout_for
from amlhp.infra.paths import default_paths
from amlhp.pipeline.access import secured
from amlhp.settings import Settings


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    faults: Callable[[ChaosRun], None]
    workers: int = 1
    #: the scenario kills brokers: it needs a local layout (``amlhp infra kafka up``) of
    #: this many nodes (1: the single broker, 3: the cluster); 0: any broker will do
    brokers: int = 0
    #: called before the tap starts (e.g. to write the capture it replays)
    prepare: Callable[[ChaosRun], None] | None = None
    #: the alert stage and its sink run too, and the alert dataset is checked
    alerts: bool = False
    #: the flow worker and its sink run too, and the flow dataset is checked
    flows: bool = False
    #: a shorter run is lengthened to this (two broker kills, each waited out)
    min_seconds: float = 0.0
    #: the tap keeps the capture's own packet times (the flows' event clock then moves
    #: through the capture's minutes, and flows close by their lifetime mid-run)
    keep_timestamps: bool = False

    def load_for(self, load: Load) -> Load:
        """``load`` at its rate, for at least ``min_seconds``."""
        return Load(load.rate, max(load.seconds, self.min_seconds), self.keep_timestamps)


def _kill_workers(run: ChaosRun) -> None:
    """SIGKILL the worker three times, each replaced at once."""
    for share in (0.2, 0.43, 0.66):
        run.at(share * run.load.seconds)
        run.signal(run.workers[0], signal.SIGKILL)
        killed = time.monotonic()
        run.start_worker()
        run.measure_recovery(killed)


def _rebalance(run: ChaosRun) -> None:
    """A second worker joins at a quarter of the run, the first leaves (SIGTERM) at half,
    a third joins at three quarters: three rebalances with traffic flowing."""
    run.at(0.25 * run.load.seconds)
    run.start_worker()
    run.at(0.5 * run.load.seconds)
    run.signal(run.workers[0], signal.SIGTERM)
    run.at(0.75 * run.load.seconds)
    run.start_worker()


def _zombie(run: ChaosRun) -> None:
    """SIGSTOP one of two workers past the session timeout (the group gives its partitions
    to the other), then SIGCONT it: it wakes up, finds itself out of the group, rejoins."""
    run.at(0.25 * run.load.seconds)
    zombie = run.workers[0]
    run.signal(zombie, signal.SIGSTOP)
    stopped = time.monotonic()
    run.measure_recovery(stopped)
    time.sleep(max(0.0, run.settings.session_timeout_s + 3 - (time.monotonic() - stopped)))
    run.signal(zombie, signal.SIGCONT)


def _kill_sink(run: ChaosRun) -> None:
    """SIGKILL the sink twice (its flushes run every 0.5 s: a kill lands mid-flush or just
    before one), restarted at once; files no manifest lists are removed on restart."""
    for share in (0.3, 0.6):
        run.at(share * run.load.seconds)
        assert run.sink is not None
        run.signal(run.sink, signal.SIGKILL)
        killed = time.monotonic()
        run.start_sink()
        run.measure_recovery(killed)


def _kill_alerts(run: ChaosRun) -> None:
    """SIGKILL the alert stage twice while incidents are open, restarted at once."""
    for share in (0.35, 0.7):
        run.at(share * run.load.seconds)
        assert run.alert_stage is not None
        run.signal(run.alert_stage, signal.SIGKILL)
        run.start_alerts()


def _kill_flow_worker(run: ChaosRun) -> None:
    """SIGKILL the flow worker twice while flows are open and others close (the tap keeps
    the capture's times: its first 75 s hold more than a flow lifetime), restarted at
    once: it takes its open flows back from the changelog and publishes again what it
    had published since its last state write (the sink drops those by flow_seq)."""
    for share in (0.5, 0.8):
        run.at(share * run.load.seconds)
        assert run.flow_worker is not None
        run.signal(run.flow_worker, signal.SIGKILL)
        run.start_flows()


def _fuzzed_capture(run: ChaosRun) -> None:
    """The tap replays ``Load.packets`` fuzzed frames (:mod:`amlhp.chaos.fuzz`)."""
    run.capture = write_fuzzed_capture(run.capture, run.workdir / "fuzz.pcap", run.load.packets)


def _garbage(run: ChaosRun) -> None:
    """While the fuzzed frames flow, garbage messages go straight to the raw topic three
    times; each must be one message-level dead letter, and no stage may crash."""
    for share in (0.2, 0.5, 0.8):
        run.at(share * run.load.seconds)
        run.send_garbage(GARBAGE)


def _small_disk(run: ChaosRun) -> None:
    """The sink's dataset on a tmpfs of its own, a small part of what the run writes."""
    run.mount_small_disk("400k")


def _disk_full(run: ChaosRun) -> None:
    """The sink's filesystem fills up; at 60 % of the run it is grown (space returns).
    The sink must say so clearly, keep nothing half-written, and go on by itself."""
    run.at(0.6 * run.load.seconds)
    if not run.sink_saw_disk_full():
        raise ChaosError("the sink's filesystem never filled: the run is too small")
    grown = time.monotonic()
    run.grow_disk("256m")
    run.measure_recovery(grown)


def _restart_broker(run: ChaosRun) -> None:
    """SIGKILL the single broker (a crash: log recovery on start) at a third of the run and
    start it again at once; producers and consumers must ride it out."""
    run.at(0.33 * run.load.seconds)
    killed = run.kill_broker(run.broker_ids()[0])
    run.restart_broker(run.broker_ids()[0])
    run.measure_recovery(killed)


def _cluster_brokers(run: ChaosRun) -> None:
    """In the 3-broker cluster (RF 3, min ISR 2): SIGKILL the broker leading the most
    partitions, and restart it only once verdicts flow again (the followers took over);
    once every replica is in sync again, the same with the broker leading the fewest."""
    run.at(0.15 * run.load.seconds)
    counts = run.leaders()
    leader = max(counts, key=lambda b: (counts[b], -b))
    killed = run.kill_broker(leader)
    run.measure_recovery(killed)
    run.restart_broker(leader)
    run.wait_in_sync()
    run.at(0.6 * run.load.seconds)
    counts = run.leaders()
    follower = min(counts, key=lambda b: (counts[b], b))
    killed = run.kill_broker(follower)
    run.measure_recovery(killed)
    run.restart_broker(follower)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "worker-sigkill",
            "SIGKILL the worker 3 times, replaced at once",
            _kill_workers,
            min_seconds=25.0,  # three recoveries of a session timeout each
        ),
        Scenario("rebalance", "add, remove (SIGTERM) and add workers mid-run", _rebalance),
        Scenario(
            "zombie-worker",
            "SIGSTOP 1 of 2 workers past the session timeout, then SIGCONT",
            _zombie,
            workers=2,
        ),
        Scenario("sink-sigkill", "SIGKILL the sink twice mid-run, restarted at once", _kill_sink),
        Scenario(
            "alerts-sigkill",
            "SIGKILL the alert stage twice mid-run, restarted at once",
            _kill_alerts,
            alerts=True,
        ),
        Scenario(
            "flow-worker-sigkill",
            "SIGKILL the flow worker twice mid-run, restarted at once",
            _kill_flow_worker,
            flows=True,
            keep_timestamps=True,
        ),
        Scenario(
            "fuzz",
            "fuzzed frames at the full rate, and garbage messages on the raw topic",
            _garbage,
            prepare=_fuzzed_capture,
        ),
        Scenario(
            "disk-full",
            "the sink's filesystem fills up mid-run, then grows again",
            _disk_full,
            prepare=_small_disk,
        ),
        Scenario(
            "broker-restart",
            "SIGKILL the single broker mid-run, restarted at once",
            _restart_broker,
            brokers=1,
        ),
        Scenario(
            "cluster-brokers",
            "3 brokers: SIGKILL the leaders' broker, restart; then the one leading fewest",
            _cluster_brokers,
            brokers=3,
            min_seconds=40.0,
        ),
    )
}


def broker_target(scenario: Scenario, settings: Settings) -> tuple[Settings, KafkaLayout | None]:
    """The settings and local layout a scenario runs against.

    Scenarios that kill brokers run on the local layout that amlhp runs (``amlhp infra
    kafka up``, with ``--cluster`` for 3 nodes), whatever broker ``settings`` names: a
    remote cluster is never SIGKILLed. Settings with security (a principal's credentials
    file loaded, e.g. the admin's) pick the secured twin (``--secure``), so the faults
    hit TLS connections and SASL logins. Raises :class:`ScenarioSkipped` when it is not
    running.
    """
    if scenario.brokers == 0:
        return settings, None
    paths = default_paths(settings.home)
    secure = secured(settings)
    layout = layout_for(paths, cluster=scenario.brokers != 1, secure=secure)
    if len(layout.nodes) != scenario.brokers or any(
        kafka_broker.node_pid(node) is None for node in layout.nodes
    ):
        flag = ("" if scenario.brokers == 1 else " --cluster") + (" --secure" if secure else "")
        raise ScenarioSkipped(
            f"needs the local {layout.name} layout running: amlhp infra kafka up{flag}"
        )
    update = {
        "bootstrap_servers": layout.bootstrap_servers,
        "replication_factor": layout.replication_factor,
    }
    return settings.model_copy(update=update), layout
