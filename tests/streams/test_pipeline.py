"""The whole pipeline on the real broker: tap -> worker (Faust) -> sink, exact accounting."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer

from amlhp.encoders.capture import iter_encoded
from amlhp.model.offline import score_captures
from amlhp.model.scorer import default_model_path, load_scorer
from amlhp.pipeline.children import StageProcess
from amlhp.pipeline.dataset import read_verdicts
from amlhp.settings import Settings
from amlhp.streams.accounting import Accounting
from amlhp.streams.demo import wait_accounted, wait_groups_ready
from amlhp.streams.tap import Tap, TapStats, live_packets, pcap_packets, run_tap
from tests.support import synth

from .conftest import StageStarter

pytestmark = pytest.mark.slow


def tap_file(settings: Settings, capture: Path, gateway: str, **kw: float) -> TapStats:
    stop = threading.Event()
    tap = Tap(settings, gateway, batch_size=int(kw.get("batch_size", 300)))
    stats = run_tap(tap, pcap_packets([capture], stop=stop), stop=stop)
    assert stats.failed_packets == 0
    assert stats.delivered_packets == stats.packets
    return stats


def offline_verdicts(capture: Path, tmp_path: Path) -> dict[int, tuple[str, str, float]]:
    """What ``amlhp score`` says of each scored packet: seq -> (label, decision, score)."""
    out = tmp_path / "offline.parquet"
    summary = score_captures([capture], out, load_scorer(default_model_path()))
    table = pq.read_table(out).filter(pc.equal(pc.field("status"), "ok"))
    assert summary["packets"] >= table.num_rows
    rows = zip(
        table.column("seq").to_pylist(),
        table.column("label").to_pylist(),
        table.column("decision").to_pylist(),
        table.column("malicious_score").to_pylist(),
        strict=True,
    )
    return {int(seq): (label, decision, score) for seq, label, decision, score in rows}


def ready(settings: Settings, procs: list[StageProcess], workers: int = 1) -> None:
    """Tap only once the worker(s) and the sink own their partitions (no mid-run rebalance)."""
    worker_group, sink_group = settings.consumer_group, f"{settings.consumer_group}-sink"
    wait_groups_ready(settings, [worker_group, sink_group], procs, 180.0, {worker_group: workers})


def start_pipeline(
    settings: Settings, stages: StageStarter, out: Path, workers: int = 1
) -> list[StageProcess]:
    """Worker(s) and a sink writing to ``out``, started and owning their partitions."""
    names = ["worker"] if workers == 1 else [f"worker-{i + 1}" for i in range(workers)]
    procs = [stages(name, "worker") for name in names]
    procs.append(stages("sink", "sink", "--out", str(out), "--roll-seconds", "1"))
    ready(settings, procs, workers=workers)
    return procs


def finish(
    settings: Settings, out: Path, expected: dict[str, tuple[int, int]], procs: list[StageProcess]
) -> Accounting:
    ledger = wait_accounted(settings, out, expected, procs, timeout_s=240)
    assert ledger.complete, ledger.as_dict()
    assert ledger.duplicate_verdicts == 0
    assert ledger.both == 0
    assert ledger.verdicts + ledger.dead_packets == ledger.packets_in
    return ledger


def link_layer_mix(path: Path) -> Path:
    """IPv6 packets (TCP, UDP behind extension headers, ICMPv6, a later fragment) between
    ARP and LLDP frames: what a home network's tap sends beside IPv4."""
    v6 = synth.ETHERTYPE_IPV6
    hop_by_hop = synth.ipv6_extension(0, 17, bytes.fromhex("050200000100"))
    later = synth.ipv6_extension(44, 6, offset=185, ident=9)
    frames = []
    for i in range(20):
        frames += [
            synth.ethernet(synth.ipv6(synth.tcp(b"m" * i, dport=1883), 6), v6),
            synth.ethernet(synth.ipv6(synth.udp(b"coap"), 0, extensions=hop_by_hop), v6),
            synth.ethernet(synth.ipv6(synth.icmpv6(135), 58, dst="ff02::1:ff00:1"), v6),
            synth.ethernet(synth.ipv6(b"rest", 44, extensions=later), v6),
            synth.ethernet(synth.arp(1 + i % 2, sender_ip=f"10.0.0.{i}"), synth.ETHERTYPE_ARP),
            synth.ethernet(bytes(46), 0x88CC),
        ]
    start = 1_700_000_000_000_000_000
    records = [synth.Record(f, start + i * 1_000_000) for i, f in enumerate(frames)]
    return synth.write_pcap(path, records)


def test_one_tap_exact_accounting_and_offline_parity(
    pipeline_settings: Settings, stages: StageStarter, demo_capture: Path, tmp_path: Path
) -> None:
    out = tmp_path / "verdicts"
    procs = start_pipeline(pipeline_settings, stages, out)
    stats = tap_file(pipeline_settings, demo_capture, "gw-1")
    mix = link_layer_mix(tmp_path / "mix.pcap")
    mixed = tap_file(pipeline_settings, mix, "gw-6")
    expected_counts = {"gw-1": (0, stats.packets), "gw-6": (0, mixed.packets)}
    ledger = finish(pipeline_settings, out, expected_counts, procs)
    assert ledger.verdicts > 0.9 * stats.packets

    table = read_verdicts(out)
    verdicts = table.filter(pc.equal(table.column("gateway"), "gw-1")).sort_by("seq")
    expected = offline_verdicts(demo_capture, tmp_path)
    got = {
        int(seq): (label, decision, score)
        for seq, label, decision, score in zip(
            verdicts.column("seq").to_pylist(),
            verdicts.column("label").to_pylist(),
            verdicts.column("decision").to_pylist(),
            verdicts.column("malicious_score").to_pylist(),
            strict=True,
        )
    }
    assert set(got) == set(expected)  # the same packets scored (the rest: dead letters)
    labels = [s for s in got if got[s][0] != expected[s][0]]
    assert not labels, f"{len(labels)} streamed classes differ from `amlhp score`"
    decisions = [s for s in got if got[s][1] != expected[s][1]]
    assert not decisions, f"{len(decisions)} streamed decisions differ from `amlhp score`"
    assert {d for _, d, _ in got.values()} <= {"malicious", "benign", "uncertain"}
    scores = np.array([got[s][2] for s in sorted(got)])
    assert np.allclose(scores, [expected[s][2] for s in sorted(got)], atol=1e-5)
    assert sorted(set(range(stats.packets)) - set(got)) == sorted(
        set(range(stats.packets)) - set(expected)
    )
    # the IPv6 packets are scored as `amlhp score` scores them; ARP frames are verdicts
    # for the detectors (not scored); LLDP frames are dead letters counted by reason
    six = table.filter(pc.equal(table.column("gateway"), "gw-6")).sort_by("seq")
    offline6 = offline_verdicts(mix, tmp_path)
    scored6 = six.filter(pc.equal(six.column("status"), "ok"))
    assert scored6.column("seq").to_pylist() == sorted(offline6)
    assert len(offline6) == 80
    assert scored6.column("label").to_pylist() == [offline6[s][0] for s in sorted(offline6)]
    assert all(":" in ip for ip in scored6.column("src_ip").to_pylist())
    assert set(scored6.column("proto").to_pylist()) == {6, 17, 58}
    arp = six.filter(pc.equal(six.column("status"), "arp"))
    assert arp.num_rows == 20
    assert set(arp.column("label").to_pylist()) == {"arp"}
    assert set(arp.column("decision").to_pylist()) == {"not_scored"}
    assert arp.column("score").null_count == 20
    assert arp.column("src_ip").to_pylist() == [f"10.0.0.{i}" for i in range(20)]
    assert arp.column("arp_op").to_pylist() == [1 + i % 2 for i in range(20)]
    assert set(arp.column("arp_mac").to_pylist()) == {"02:00:00:00:00:0a"}
    assert six.num_rows == 100
    statuses: Counter[str] = Counter()
    for batch in iter_encoded([demo_capture]):
        statuses.update(batch.column("status").to_pylist())
    statuses.update({"non_ip": 20})
    dead = {k: v for k, v in statuses.items() if k not in ("ok", "arp")}
    assert ledger.dead_by_reason == dead


def test_two_workers_three_gateways(
    pipeline_settings: Settings, stages: StageStarter, demo_capture: Path, tmp_path: Path
) -> None:
    out = tmp_path / "verdicts"
    procs = start_pipeline(pipeline_settings, stages, out, workers=2)
    results: dict[str, TapStats] = {}

    def run(gw: str) -> None:
        results[gw] = tap_file(pipeline_settings, demo_capture, gw)

    threads = [threading.Thread(target=run, args=(f"gw-{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = {gw: (0, s.packets) for gw, s in results.items()}
    ledger = finish(pipeline_settings, out, expected, procs)
    table = read_verdicts(out)
    per_gw = pc.value_counts(table.column("gateway")).to_pylist()
    assert {d["values"] for d in per_gw} == set(expected)
    assert ledger.packets_in == 3 * results["gw-0"].packets


def test_garbage_goes_to_dead_letters_and_worker_keeps_going(
    pipeline_settings: Settings, stages: StageStarter, demo_capture: Path, tmp_path: Path
) -> None:
    out = tmp_path / "verdicts"
    procs = start_pipeline(pipeline_settings, stages, out)
    producer = Producer({"bootstrap.servers": pipeline_settings.bootstrap_servers})
    garbage = [b"", b"\xff" * 100, b"ARROW1\x00\x00 not really", b'{"json": true}']
    for value in garbage:
        producer.produce(pipeline_settings.topic_raw, key=b"gw-bad", value=value)
    producer.flush(30)
    stats = tap_file(pipeline_settings, demo_capture, "gw-1")
    ledger = finish(pipeline_settings, out, {"gw-1": (0, stats.packets)}, procs)
    assert ledger.dead_messages == len(garbage)
    procs[0].check_alive()


def test_sink_killed_mid_run_loses_nothing_and_duplicates_nothing(
    pipeline_settings: Settings, stages: StageStarter, demo_capture: Path, tmp_path: Path
) -> None:
    out = tmp_path / "verdicts"
    worker = stages("worker", "worker")
    sink = stages("sink", "sink", "--out", str(out), "--roll-seconds", "0.5", "--roll-rows", "500")
    ready(pipeline_settings, [worker, sink])
    stats = tap_file(pipeline_settings, demo_capture, "gw-1")
    deadline = time.monotonic() + 120
    while read_verdicts(out).num_rows < stats.packets // 3:
        assert time.monotonic() < deadline, "no verdicts arrived"
        time.sleep(0.2)
    sink.proc.send_signal(signal.SIGKILL)
    sink.proc.wait(10)
    files_before = {p.name for p in out.rglob("*.parquet")}
    restarted = stages("sink-2", "sink", "--out", str(out), "--roll-seconds", "0.5")
    ledger = finish(pipeline_settings, out, {"gw-1": (0, stats.packets)}, [restarted])
    names = [p.name for p in out.rglob("part-*.parquet")]
    assert len(names) == len(set(names))
    assert files_before - {p.name for p in out.rglob("*.parquet")} <= {
        n for n in files_before if n.startswith(".")
    }
    assert ledger.verdict_rows == ledger.verdicts


@pytest.mark.live
def test_live_capture_on_loopback(
    pipeline_settings: Settings, stages: StageStarter, tmp_path: Path
) -> None:
    out = tmp_path / "verdicts"
    procs = start_pipeline(pipeline_settings, stages, out)
    stop = threading.Event()
    tap = Tap(pipeline_settings, "gw-live", batch_size=50, max_delay_ms=20)
    result: dict[str, TapStats] = {}
    ports = list(range(47001, 47021))

    def capture() -> None:
        try:
            source = live_packets("lo", stop=stop)
        except OSError as exc:  # pragma: no cover - reported by the assertion below
            pytest.fail(f"cannot open AF_PACKET on lo: {exc}")
        result["stats"] = run_tap(tap, source, stop=stop)

    thread = threading.Thread(target=capture)
    thread.start()
    time.sleep(1.0)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 47000))
    for port in ports:
        sender.sendto(f"amlhp-live-{port}".encode(), ("127.0.0.1", port))
        time.sleep(0.01)
    sender.close()
    time.sleep(1.0)
    stop.set()
    thread.join(30)
    stats = result["stats"]
    assert stats.packets >= len(ports)
    finish(pipeline_settings, out, {"gw-live": (0, stats.packets)}, procs)
    table = read_verdicts(out)
    udp = table.filter(
        pc.and_(pc.equal(table.column("src_port"), 47000), pc.equal(table.column("proto"), 17))
    )
    assert sorted(udp.column("dst_port").to_pylist()) == ports
    assert set(udp.column("dst_ip").to_pylist()) == {"127.0.0.1"}
