"""One benchmark pipeline on the real broker: its own topics, workers, sink and taps.

A run gets topics and consumer groups of its own (``amlhp-bench-<run id>.*``), so it
never touches the demo's topics nor another run's, and deletes them at the end. Workers
and the sink are the real ``amlhp worker`` / ``amlhp sink`` processes, started and
waited for (groups stable with their members) the way ``amlhp demo`` does it; taps are
``amlhp tap`` processes, one gateway id each (a load may run several at once), so that
each load's packets are accounted for on their own: every (gateway, seq) a tap sent must
come out exactly once as a verdict or a dead letter.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from amlhp.benchmarks.exceptions import BenchmarksError
from amlhp.benchmarks.machine import broker_pid
from amlhp.benchmarks.sampler import GroupWatch, Sampler
from amlhp.pipeline.children import StageProcess, child_env, start_stage
from amlhp.settings import Settings
from amlhp.streams.accounting import Accounting, account, read_dead_letters
from amlhp.streams.demo import wait_groups_ready

StatusFn = Callable[[str], None]


def quiet(_: str) -> None:
    """The default ``on_status`` of every benchmark: say nothing."""
    return None


def _topic_fields() -> dict[str, str]:
    """Every ``topic_*`` setting and its default name (all pipeline topics, present and new)."""
    return {
        name: str(info.default)
        for name, info in Settings.model_fields.items()
        if name.startswith("topic_") and isinstance(info.default, str)
    }


def bench_settings(base: Settings, run_id: str, partitions: int) -> Settings:
    """``base`` (broker, security) with this run's own topics, group and partitions.

    Every topic setting is renamed (``amlhp.packets.raw`` -> ``amlhp-bench-<id>.packets.raw``)
    so that creating and deleting the run's topics never touches anyone else's.
    """
    prefix = f"amlhp-bench-{run_id}"
    update: dict[str, Any] = {
        name: f"{prefix}.{default.removeprefix('amlhp.')}"
        for name, default in _topic_fields().items()
    }
    update.update({"consumer_group": prefix, "partitions": partitions})
    return base.model_copy(update=update)


@dataclass
class TapRun:
    """What one tap process did (its own JSON summary plus its CPU time)."""

    gateway: str
    packets: int
    started_at: float  # unix seconds when it began offering packets
    ended_at: float  # unix seconds when its last delivery was acknowledged
    offered_pps: float
    bytes_sent: int
    cpu_s: float
    summary: dict[str, Any]


@dataclass
class PipelineRun:
    """A running benchmark pipeline; see the module docstring."""

    settings: Settings
    run_id: str
    work_dir: Path
    verdict_dir: Path
    workers: list[StageProcess]
    sink: StageProcess
    sampler: Sampler
    env: dict[str, str]
    sink_group: str
    on_status: StatusFn = quiet
    taps: list[TapRun] = field(default_factory=list)
    #: stages beside the packet pipeline (the flow worker)
    beside: list[StageProcess] = field(default_factory=list)

    @property
    def stages(self) -> list[StageProcess]:
        return [*self.workers, self.sink, *self.beside]

    def check_alive(self) -> None:
        for stage in self.stages:
            stage.check_alive()

    def lag_zero_at(self, watch: str, after: float, timeout_s: float) -> float:
        """When the sampler first saw the ``watch`` group's lag at 0 after ``after``
        (unix seconds; the samples' 1 s granularity)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            sample = self.sampler.last()
            fresh = sample is not None and sample["t"] > after
            if fresh and sample is not None and sample.get(f"lag_records_{watch}") == 0:
                return float(sample["t"])
            time.sleep(0.2)
        raise BenchmarksError(f"group {watch} did not reach the end in {timeout_s:.0f} s")

    def run_tap(
        self,
        capture: Path,
        gateway: str,
        *,
        rate: float | None = None,
        duration_s: float | None = None,
        loops: int = 1,
        timeout_s: float = 900.0,
        on_start: Callable[[int], None] | None = None,
    ) -> TapRun:
        """Run one ``amlhp tap`` process to its end (paced with ``rate``, else max speed)."""
        return self.run_taps(
            capture,
            [gateway],
            rate=rate,
            duration_s=duration_s,
            loops=loops,
            timeout_s=timeout_s,
            on_start=on_start,
        )[0]

    def run_taps(
        self,
        capture: Path,
        gateways: Sequence[str],
        *,
        rate: float | None = None,
        duration_s: float | None = None,
        loops: int = 1,
        timeout_s: float = 900.0,
        on_start: Callable[[int], None] | None = None,
        tap_args: Sequence[str] = (),
    ) -> list[TapRun]:
        """Run one ``amlhp tap`` per gateway, all at once, and wait for all of them.

        The tap keys every message by its gateway, so one tap fills one partition; several
        gateways at once are what spreads a load over partitions (and so over workers).
        ``rate``, ``duration_s`` and ``loops`` apply to each tap.
        """
        if not gateways or len(set(gateways)) != len(gateways):
            raise BenchmarksError(f"taps need distinct gateway ids, got {list(gateways)}")
        args = ["--metrics-port", "-1", *tap_args]
        if rate is not None:
            args += ["--rate", f"{rate:.3f}"]
        if duration_s is not None:
            args += ["--duration", f"{duration_s:.3f}"]
        if loops != 1:
            args += ["--loop", str(loops)]
        names = ["tap"] if len(gateways) == 1 else [f"tap{i + 1}" for i in range(len(gateways))]
        taps: list[StageProcess] = []
        usage: dict[int, Any] = {}
        try:
            for gateway, name in zip(gateways, names, strict=True):
                tap = start_stage(
                    f"tap-{gateway}",
                    ["tap", str(capture), "-g", gateway, *args],
                    self.work_dir,
                    self.env,
                )
                taps.append(tap)
                self.sampler.watch(name, tap.proc.pid)
                if on_start is not None:
                    on_start(tap.proc.pid)
            deadline = time.monotonic() + timeout_s
            while True:
                for i, tap in enumerate(taps):
                    if i in usage:
                        continue
                    pid, status, rusage = os.wait4(tap.proc.pid, os.WNOHANG)
                    if pid:
                        tap.proc.returncode = os.waitstatus_to_exitcode(status)
                        usage[i] = rusage
                        self.sampler.unwatch(names[i])
                if len(usage) == len(taps):
                    break
                self.check_alive()
                if time.monotonic() > deadline:
                    late = [g for i, g in enumerate(gateways) if i not in usage]
                    raise BenchmarksError(f"tap(s) {late} still running after {timeout_s:.0f}s")
                time.sleep(0.2)
        finally:
            for i, tap in enumerate(taps):
                if i not in usage:
                    tap.stop()
                    self.sampler.unwatch(names[i])
        runs = [
            _tap_run(tap, gateway, usage[i])
            for i, (tap, gateway) in enumerate(zip(taps, gateways, strict=True))
        ]
        self.taps.extend(runs)
        return runs

    def outputs(self, gateways: str | Sequence[str]) -> tuple[pa.Table, pa.Table]:
        """(verdicts, dead letters) of these gateways: what accounting and latency need."""
        from amlhp.pipeline.dataset import DATA_GLOB, open_dataset

        wanted = [gateways] if isinstance(gateways, str) else list(gateways)
        columns = ["gateway", "seq", "label", "ts_ns", "scored_at_ns"]
        if any(self.verdict_dir.glob(DATA_GLOB)):
            verdicts = open_dataset(self.verdict_dir).to_table(
                columns=columns, filter=pc.field("gateway").isin(wanted)
            )
        else:
            verdicts = pa.table({c: pa.array([], pa.int64()) for c in columns})
        dead = read_dead_letters(self.settings)
        if dead.num_rows:
            dead = dead.filter(pc.is_in(dead.column("gateway"), value_set=pa.array(wanted)))
        return verdicts, dead

    def wait_drained(self, taps: TapRun | Sequence[TapRun], timeout_s: float) -> Drain:
        """Wait until every packet of ``taps`` is a verdict or a dead letter.

        Lag is watched first (cheap); the dataset is read for the accounting once lag is
        zero, or every few seconds when lag cannot be read. Each gateway is accounted for
        on its own (its seqs from 0 to its packet count).
        """
        runs = [taps] if isinstance(taps, TapRun) else list(taps)
        deadline = time.monotonic() + timeout_s
        expected = {tap.gateway: (0, tap.packets) for tap in runs}
        gateways = list(expected)
        label = gateways[0] if len(gateways) == 1 else f"{len(gateways)} gateways"
        total = sum(tap.packets for tap in runs)
        ended_at = max(tap.ended_at for tap in runs)
        lag_zero_at: float | None = None
        last_check = 0.0
        ledger: Accounting | None = None
        while True:
            self.check_alive()
            sample = self.sampler.last()
            fresh = sample is not None and sample["t"] > ended_at
            if fresh and sample is not None and sample.get("lag_records", 1) == 0:
                lag_zero_at = lag_zero_at or sample["t"]
            if lag_zero_at is not None or time.monotonic() - last_check > 5.0:
                last_check = time.monotonic()
                verdicts, dead = self.outputs(gateways)
                ledger = account(verdicts, dead, expected)
                self.on_status(
                    f"{label}: {ledger.verdicts} verdicts + {ledger.dead_packets} dead "
                    f"letters of {total}"
                )
                if ledger.complete:
                    return Drain(ledger, verdicts, dead, time.time(), lag_zero_at)
                lag_zero_at = None
            if time.monotonic() > deadline:
                verdicts, dead = self.outputs(gateways)
                ledger = account(verdicts, dead, expected)
                return Drain(ledger, verdicts, dead, time.time(), lag_zero_at)
            time.sleep(0.5)


def _tap_run(tap: StageProcess, gateway: str, rusage: Any) -> TapRun:
    """The :class:`TapRun` of a finished tap process (its last JSON line is its summary)."""
    log_text = tap.log_path.read_text(errors="replace")
    summary = _last_json_line(log_text)
    if tap.proc.returncode != 0 or summary is None:
        raise BenchmarksError(
            f"tap {gateway} exited with {tap.proc.returncode}; log tail:\n{log_text[-2000:]}"
        )
    if summary.get("failed_packets"):
        raise BenchmarksError(f"tap {gateway} failed to deliver {summary['failed_packets']}")
    started = float(summary["started_at"])
    return TapRun(
        gateway=gateway,
        packets=int(summary["packets"]),
        started_at=started,
        ended_at=started + float(summary["elapsed_s"]),
        offered_pps=float(summary.get("packets_per_second") or 0.0),
        bytes_sent=int(summary.get("bytes_sent", 0)),
        cpu_s=round(rusage.ru_utime + rusage.ru_stime, 3),
        summary=summary,
    )


def combined_tap(taps: Sequence[TapRun]) -> TapRun:
    """Several concurrent taps as one load: from the first start to the last delivery.

    ``gateway`` joins the gateway ids with ``+``; it names the load, it is not a key.
    """
    if not taps:
        raise BenchmarksError("no taps to combine")
    if len(taps) == 1:
        return taps[0]
    started = min(t.started_at for t in taps)
    ended = max(t.ended_at for t in taps)
    packets = sum(t.packets for t in taps)
    return TapRun(
        gateway="+".join(t.gateway for t in taps),
        packets=packets,
        started_at=started,
        ended_at=ended,
        offered_pps=packets / (ended - started) if ended > started else 0.0,
        bytes_sent=sum(t.bytes_sent for t in taps),
        cpu_s=round(sum(t.cpu_s for t in taps), 3),
        summary={"taps": {t.gateway: t.summary for t in taps}},
    )


@dataclass
class Drain:
    """The end of one offered load: the ledger and the outputs it was built from."""

    ledger: Accounting
    verdicts: pa.Table
    dead: pa.Table
    accounted_at: float
    lag_zero_at: float | None


def _last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def new_run_id() -> str:
    return time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]


@contextmanager
def pipeline(
    base: Settings,
    work_dir: Path,
    *,
    workers: int = 1,
    partitions: int = 4,
    sink_roll_s: float = 2.0,
    sample_interval_s: float = 1.0,
    worker_args: tuple[str, ...] = (),
    keep_data: bool = False,
    flow_worker: bool = False,
    on_status: StatusFn = quiet,
) -> Iterator[PipelineRun]:
    """Topics, ``workers`` workers and a sink, ready and sampled; all removed at the end.
    With ``flow_worker``, the flow worker too (group ``<group>-flows`` on the raw topic,
    its lag sampled as ``lag_records_flows``: :meth:`PipelineRun.lag_zero_at`), in
    ``run.beside``."""
    from amlhp.streams.topics import admin_client, delete_topics, ensure_pipeline_topics

    if workers < 1 or partitions < 1:
        raise BenchmarksError("workers and partitions must be at least 1")
    run_id = new_run_id()
    settings = bench_settings(base, run_id, partitions)
    run_dir = work_dir / f"run-{run_id}"
    verdict_dir = run_dir / "verdicts"
    env = child_env(settings)
    ensure_pipeline_topics(settings)
    sink_group = f"{settings.consumer_group}-sink"
    started: list[StageProcess] = []  # the workers, then the sink
    beside: list[StageProcess] = []  # the flow worker
    sampler: Sampler | None = None
    try:
        on_status(f"starting {workers} worker(s) and a sink on {partitions} partitions")
        for i in range(workers):
            started.append(
                start_stage(
                    f"worker-{i + 1}",
                    ["worker", "--metrics-port", "-1", *worker_args],
                    run_dir,
                    env,
                )
            )
        started.append(
            start_stage(
                "sink",
                [
                    "sink",
                    "--out",
                    str(verdict_dir),
                    "--group",
                    sink_group,
                    "--roll-seconds",
                    str(sink_roll_s),
                    "--metrics-port",
                    "-1",
                ],
                run_dir,
                env,
            )
        )
        flows_group = f"{settings.consumer_group}-flows"
        if flow_worker:
            beside.append(
                start_stage(
                    "flows",
                    ["flows", "worker", "--app-id", flows_group, "--metrics-port", "-1"],
                    run_dir,
                    env,
                )
            )
        wait_groups_ready(
            settings,
            [settings.consumer_group, sink_group, *([flows_group] if flow_worker else [])],
            [*started, *beside],
            240.0,
            {settings.consumer_group: workers},
        )
        processes = {
            f"worker{i + 1}" if workers > 1 else "worker": s.proc.pid
            for i, s in enumerate(started[:-1])
        }
        processes["sink"] = started[-1].proc.pid
        watches = [
            GroupWatch("worker", settings.consumer_group, (settings.topic_raw,)),
            GroupWatch("sink", sink_group, (settings.topic_verdicts,)),
        ]
        if flow_worker:
            processes["flows"] = beside[0].proc.pid
            watches.append(GroupWatch("flows", flows_group, (settings.topic_raw,)))
        bpid = broker_pid()
        if bpid is not None:
            processes["broker"] = bpid
        processes["bench"] = os.getpid()
        sampler = Sampler(settings, watches, processes, interval_s=sample_interval_s).start()
        yield PipelineRun(
            settings=settings,
            run_id=run_id,
            work_dir=run_dir,
            verdict_dir=verdict_dir,
            workers=started[:-1],
            sink=started[-1],
            beside=beside,
            sampler=sampler,
            env=env,
            sink_group=sink_group,
            on_status=on_status,
        )
    finally:
        if sampler is not None:
            sampler.close()
        for stage in [*started, *beside]:
            stage.stop()
        try:
            delete_topics(admin_client(settings.kafka_config()), settings.topics.all())
        finally:
            if not keep_data and verdict_dir.exists():
                shutil.rmtree(verdict_dir)


def latency_summary(verdicts: pa.Table) -> dict[str, float]:
    """Capture-to-verdict latency (ms): p50, p90, p99, p99.9, max and mean."""
    if verdicts.num_rows == 0:
        return {}
    lat = latencies_ms(verdicts)
    return {
        "p50": round(float(np.percentile(lat, 50)), 2),
        "p90": round(float(np.percentile(lat, 90)), 2),
        "p99": round(float(np.percentile(lat, 99)), 2),
        "p999": round(float(np.percentile(lat, 99.9)), 2),
        "max": round(float(lat.max()), 2),
        "mean": round(float(lat.mean()), 2),
    }


def latencies_ms(verdicts: pa.Table) -> np.ndarray:
    scored = verdicts.column("scored_at_ns").to_numpy(zero_copy_only=False).astype(np.int64)
    captured = verdicts.column("ts_ns").to_numpy(zero_copy_only=False).astype(np.int64)
    return (scored - captured) / 1e6
