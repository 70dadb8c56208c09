"""``amlhp replay`` on the real broker: exact windows, live groups untouched, SIGKILL-safe,
and re-scoring with another model equal to ``amlhp score`` offline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from amlhp.encoders.capture import iter_encoded
from amlhp.encoders.layout import EncoderConfig
from amlhp.metrics.lag import ConsumerLagCollector
from amlhp.pipeline.dataset import DEADLETTER_DIR, MANIFEST_DIR, read_verdicts
from amlhp.settings import Settings
from amlhp.streams.demo import wait_accounted

from .conftest import StageStarter, settings_env

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


def amlhp(
    settings: Settings, *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "amlhp.cli", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def tap(settings: Settings, capture: Path, gateway: str, *extra: str) -> dict[str, Any]:
    done = amlhp(settings, "tap", str(capture), "--gateway", gateway, "--keep-timestamps", *extra)
    line = [x for x in done.stdout.splitlines() if x.startswith('{"gateway"')][-1]
    summary: dict[str, Any] = json.loads(line)
    assert summary["failed_packets"] == 0
    return summary


def capture_times(capture: Path) -> np.ndarray:
    """``ts_ns`` of every packet of the capture, index = the tap's seq (from 0)."""
    batches = list(iter_encoded([capture], EncoderConfig()))
    table = pa.Table.from_batches(batches)
    seq = table.column("seq").to_numpy()
    assert (seq == np.arange(len(seq))).all()
    return np.asarray(table.column("ts_ns").to_numpy(), dtype=np.int64)


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns // 1000 / 1e6, UTC).isoformat().replace("+00:00", "Z")


def replay_keys(out: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(gateway, seq) of the replay's verdicts and of its packet dead letters."""
    table = read_verdicts(out)
    verdicts = list(zip(table.column("gateway").to_pylist(), table.column("seq").to_pylist(),
                        strict=True))  # fmt: skip
    dead: list[tuple[str, int]] = []
    if (out / DEADLETTER_DIR).is_dir():
        for path in sorted((out / DEADLETTER_DIR).glob("*.parquet")):
            part = pq.read_table(path)
            dead += zip(part.column("gateway").to_pylist(), part.column("seq").to_pylist(),
                        strict=True)  # fmt: skip
    return verdicts, dead


def test_window_is_exact_and_the_live_pipeline_is_untouched(
    pipeline_settings: Settings, stages: StageStarter, demo_capture: Path, tmp_path: Path
) -> None:
    settings = pipeline_settings
    live_out = tmp_path / "live"
    worker = stages("worker", "worker")
    sink = stages("sink", "sink", "--out", str(live_out), "--roll-seconds", "1")
    first = tap(settings, demo_capture, "gw-a")
    ledger = wait_accounted(settings, live_out, {"gw-a": (0, first["packets"])}, [worker, sink],
                            timeout_s=240)  # fmt: skip
    assert ledger.complete, ledger.as_dict()

    ts = capture_times(demo_capture)
    lo, hi = int(ts.min()) + 30 * 10**9, int(ts.min()) + 90 * 10**9
    lo, hi = lo - lo % 1000, hi - hi % 1000  # ISO times carry microseconds
    expected = {("gw-a", int(s)) for s in np.flatnonzero((ts >= lo) & (ts < hi))}
    assert 1000 < len(expected) < len(ts)
    out = tmp_path / "replay"
    window = ["--from", iso(lo), "--to", iso(hi), "--gateway", "gw-a", "--out", str(out)]

    plan = json.loads(amlhp(settings, "replay", *window, "--dry-run", "--json").stdout)
    assert plan["dry_run"] is True
    assert plan["messages"] > 0
    assert plan["estimated_packets"] >= len(expected)
    assert not out.exists() or not any(out.iterdir()), "a dry run writes nothing"

    # live traffic of another gateway flows while the replay runs
    live = subprocess.Popen(
        [sys.executable, "-m", "amlhp.cli", "tap", str(demo_capture), "--gateway", "gw-b",
         "--keep-timestamps", "--pace", "20"],
        env=settings_env(settings), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    summary = json.loads(amlhp(settings, "replay", *window, "--json").stdout)
    assert live.wait(timeout=120) == 0

    verdicts, dead = replay_keys(out)
    assert len(verdicts) == len(set(verdicts)), "duplicate verdicts"
    assert set(verdicts).isdisjoint(dead)
    assert set(verdicts) | set(dead) == expected
    assert summary["status"] == "finished"
    assert summary["totals"]["packets"] == len(expected)
    assert summary["totals"]["verdicts"] == len(verdicts)
    assert summary["gateways_without_packets"] == []

    # the live pipeline accounted for both gateways exactly, and caught up
    both = {"gw-a": (0, first["packets"]), "gw-b": (0, first["packets"])}
    ledger = wait_accounted(settings, live_out, both, [worker, sink], timeout_s=240)
    assert ledger.complete, ledger.as_dict()
    assert ledger.duplicate_verdicts == 0
    for group, topics in (
        (settings.consumer_group, [settings.topic_raw]),
        (f"{settings.consumer_group}-sink", [settings.topic_verdicts]),
    ):
        deadline = time.monotonic() + 60
        while (lags := ConsumerLagCollector(settings, group, topics).poll_once()) and any(
            lag.records for lag in lags
        ):
            assert time.monotonic() < deadline, lags
            time.sleep(1)
    run_group = f"{settings.consumer_group}-replay-{summary['run_id']}"
    replay_lags = ConsumerLagCollector(settings, run_group, [settings.topic_raw]).poll_once()
    assert all(lag.committed is None for lag in replay_lags), "a replay never commits"

    import duckdb

    count = (
        duckdb.connect()
        .execute(
            f"select count(*) from read_parquet('{out}/date=*/*.parquet', "
            "hive_partitioning = true) where gateway = 'gw-a'"
        )
        .fetchone()
    )
    assert count is not None
    assert count[0] == len(verdicts)

    # re-export of the live verdicts of the window (no scoring): the same packets, and the
    # same labels as the re-scoring with the same model
    exported = tmp_path / "exported"
    export = ["--from", iso(lo), "--to", iso(hi), "--gateway", "gw-a", "--out", str(exported)]
    amlhp(settings, "replay", *export, "--source", "verdicts", "--json")
    exported_keys, _ = replay_keys(exported)
    assert sorted(exported_keys) == sorted(verdicts)
    diff = json.loads(amlhp(settings, "replay-diff", str(exported), str(out), "--json").stdout)
    assert diff["common"] == len(verdicts)
    assert diff["only_a"] == diff["only_b"] == 0
    assert diff["agreement"] == 1.0

    # the same command again: nothing new, the same dataset
    again = json.loads(amlhp(settings, "replay", *window, "--json").stdout)
    assert again["already_finished"] is True
    assert replay_keys(out) == (verdicts, dead)


def _other_model(path: Path) -> str:
    """A model unlike the live one: other weights and another encoder masking."""
    import torch

    from amlhp.model.artifact import read_metadata, save_artifact
    from amlhp.model.registry import create_model, model_kwargs
    from amlhp.model.scorer import default_model_path

    base = read_metadata(default_model_path())
    torch.manual_seed(7)
    kwargs = model_kwargs("amlhp", num_classes=len(base["classes"]))
    meta = save_artifact(
        path, create_model("amlhp", **kwargs).eval(), architecture="amlhp", config=kwargs,
        classes=base["classes"],
        encoding={"payload_bytes": 64, "layout_version": "1", "mask_fields": ["ip.dst", "ip.src"]},
        extra={"decision": base["decision"]},
    )  # fmt: skip
    return str(meta["version"])


def test_sigkill_then_resume_and_another_model_matches_offline_scoring(
    pipeline_settings: Settings, demo_capture: Path, tmp_path: Path
) -> None:
    settings = pipeline_settings
    packets = tap(settings, demo_capture, "gw-k")["packets"]
    version = _other_model(tmp_path / "other")
    out = tmp_path / "replay"
    args = ["replay", "--from", "2000-01-01T00:00Z", "--to", "2100-01-01T00:00Z",
            "--out", str(out), "--model", str(tmp_path / "other"), "--json",
            "--flush-packets", "4000"]  # fmt: skip

    slow = subprocess.Popen(
        [sys.executable, "-m", "amlhp.cli", *args, "--max-rate", "4000"],
        env=settings_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while len(list((out / MANIFEST_DIR).glob("*.json"))) < 2:
        assert slow.poll() is None, "the replay ended before it could be killed"
        assert time.monotonic() < deadline, "no durable flush within 120 s"
        time.sleep(0.2)
    os.kill(slow.pid, signal.SIGKILL)
    slow.wait(timeout=30)
    assert json.loads((out / "_replay.json").read_text())["status"] == "running"

    summary = json.loads(amlhp(settings, *args).stdout)
    assert summary["status"] == "finished"
    verdicts, dead = replay_keys(out)
    assert len(verdicts) == len(set(verdicts)), "duplicates after the restart"
    assert set(verdicts) | set(dead) == {("gw-k", s) for s in range(packets)}
    assert summary["totals"]["packets"] == packets

    offline = tmp_path / "offline.parquet"
    amlhp(settings, "score", str(demo_capture), "--model", str(tmp_path / "other"),
          "--out", str(offline))  # fmt: skip
    want = pq.read_table(offline)
    want = want.filter(pc.not_equal(want.column("label"), "")).sort_by("seq")
    got = read_verdicts(out).sort_by("seq")
    assert set(got.column("model_version").to_pylist()) == {version}
    assert got.column("seq").to_pylist() == want.column("seq").to_pylist()
    assert got.column("label").to_pylist() == want.column("label").to_pylist()
    assert got.column("decision").to_pylist() == want.column("decision").to_pylist()
    np.testing.assert_allclose(
        got.column("malicious_score").to_numpy(), want.column("malicious_score").to_numpy(),
        atol=1e-5,
    )  # fmt: skip


def test_clear_errors_for_a_missing_topic_a_bad_window_and_a_foreign_folder(
    pipeline_settings: Settings, tmp_path: Path
) -> None:
    settings = pipeline_settings
    window = ["--from", "2026-01-01T00:00Z", "--to", "2026-01-02T00:00Z"]
    missing = settings.model_copy(update={"topic_raw": settings.topic_raw + ".missing"})
    done = amlhp(missing, "replay", *window, "--out", str(tmp_path / "a"), check=False)
    assert done.returncode == 2
    assert "does not exist" in done.stderr
    assert settings.topic_raw + ".missing" in done.stderr
    backwards = ["--from", "2026-01-02T00:00Z", "--to", "2026-01-01T00:00Z"]
    done = amlhp(settings, "replay", *backwards, "--out", str(tmp_path / "b"), check=False)
    assert done.returncode == 2
    assert "must be after" in done.stderr
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not a replay")
    done = amlhp(settings, "replay", *window, "--out", str(foreign), "--restart", check=False)
    assert done.returncode == 2
    assert "holds no _replay.json" in done.stderr
    assert (foreign / "keep.txt").exists()


def test_a_window_older_than_retention_names_the_earliest_time_left(
    pipeline_settings: Settings, demo_capture: Path, tmp_path: Path
) -> None:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    settings = pipeline_settings
    tap(settings, demo_capture, "gw-r")
    plan = json.loads(
        amlhp(settings, "replay", "--from", "2000-01-01T00:00Z", "--to", "2100-01-01T00:00Z",
              "--out", str(tmp_path / "x"), "--dry-run", "--json").stdout
    )  # fmt: skip
    (used,) = [p for p in plan["partitions"] if p["end"] > 0]
    admin = AdminClient(settings.kafka_config())
    futures = admin.delete_records([TopicPartition(settings.topic_raw, used["partition"], 10)])
    for future in futures.values():
        future.result(30)  # what retention does to old segments, done at once
    done = amlhp(settings, "replay", "--from", "2000-01-01T00:00Z", "--to", "2100-01-01T00:00Z",
                 "--out", str(tmp_path / "y"), check=False)  # fmt: skip
    assert done.returncode == 2
    assert "earliest time still available is" in done.stderr
    assert "retention" in done.stderr


def test_processes_split_the_partitions_and_give_the_same_dataset(
    pipeline_settings: Settings, demo_capture: Path, tmp_path: Path
) -> None:
    settings = pipeline_settings
    # two gateways whose keys land on different partitions (librdkafka hashes keys, CRC32)
    packets = {g: tap(settings, demo_capture, g)["packets"] for g in ("gw-p0", "gw-p4")}
    window = ["--from", "2000-01-01T00:00Z", "--to", "2100-01-01T00:00Z"]
    plan = json.loads(
        amlhp(settings, "replay", *window, "--out", str(tmp_path / "p"), "--dry-run",
              "--json").stdout
    )  # fmt: skip
    assert len([p for p in plan["partitions"] if p["end"] > p["start"]]) == 2
    one, two = tmp_path / "one", tmp_path / "two"
    amlhp(settings, "replay", *window, "--out", str(one), "--json")
    summary = json.loads(
        amlhp(settings, "replay", *window, "--out", str(two), "--processes", "2", "--json").stdout
    )
    assert summary["totals"]["packets"] == sum(packets.values())
    verdicts, dead = replay_keys(two)
    assert len(verdicts) == len(set(verdicts))
    assert set(verdicts) | set(dead) == {(g, s) for g, n in packets.items() for s in range(n)}
    diff = json.loads(amlhp(settings, "replay-diff", str(one), str(two), "--json").stdout)
    assert diff["only_a"] == diff["only_b"] == 0
    assert diff["agreement"] == 1.0
