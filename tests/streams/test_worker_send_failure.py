"""A verdict the worker cannot deliver is never lost: the worker stops before it commits.

The verdict topic refuses every record (``max.message.bytes`` below one Arrow batch), so
each verdict send fails after it left the worker. Faust alone would log the failure and
commit the offsets anyway; the worker must instead exit with the failure named, leave the
offsets uncommitted, and a worker started once the topic accepts records again must bring
every packet to the dataset exactly once.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from amlhp.settings import Settings
from amlhp.streams.demo import wait_accounted
from amlhp.streams.tap import Tap, pcap_packets, run_tap
from amlhp.streams.topics import admin_client
from tests.streams.conftest import StageStarter

PACKETS = 1_500


def _max_message_bytes(settings: Settings, value: int) -> None:
    admin = admin_client(settings.kafka_config())
    entry = ConfigEntry(
        "max.message.bytes", str(value), incremental_operation=AlterConfigOpType.SET
    )
    resource = ConfigResource(
        ConfigResource.Type.TOPIC, settings.topic_verdicts, incremental_configs=[entry]
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def _tap(settings: Settings, capture: Path) -> int:
    stop = threading.Event()
    packets = pcap_packets([capture], stop=stop)
    limited = (p for i, p in enumerate(packets) if i < PACKETS)
    stats = run_tap(Tap(settings, "gw-send", batch_size=100), limited, stop=stop)
    assert stats.failed_packets == 0
    return stats.packets


def test_undeliverable_verdicts_stop_the_worker_and_are_redone(
    pipeline_settings: Settings, stages: StageStarter, demo_capture: Path, tmp_path: Path
) -> None:
    settings = pipeline_settings
    _max_message_bytes(settings, 256)
    worker = stages("worker-refused", "worker")
    sent = _tap(settings, demo_capture)
    assert sent == PACKETS

    deadline = time.monotonic() + 120
    while worker.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    code = worker.proc.poll()
    log = worker.log_path.read_text(errors="replace")
    assert code is not None, "the worker kept running (and committing) after failed sends"
    assert code != 0, log[-2000:]
    assert "could not be delivered" in log, log[-3000:]

    _max_message_bytes(settings, 8_000_000)
    out = tmp_path / "verdicts"
    procs = [stages("worker", "worker"), stages("sink", "sink", "--out", str(out))]
    ledger = wait_accounted(settings, out, {"gw-send": (0, sent)}, procs, timeout_s=180)
    assert ledger.missing == 0, ledger.as_dict()
    assert ledger.verdict_rows == ledger.verdicts, ledger.as_dict()  # no row twice
    assert ledger.verdicts + ledger.dead_packets == sent, ledger.as_dict()
