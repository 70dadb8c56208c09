"""A gateway's sequence numbers across tap restarts: a clean stop continues exactly, a
kill continues past the reserved block and names the unsure range, nothing is reused."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from amlhp.settings import Settings
from amlhp.streams.exceptions import TapError
from amlhp.streams.tap import Packet, Tap, run_tap
from amlhp.streams.tap_seq import SeqState
from amlhp.streams.topics import ensure_pipeline_topics
from amlhp.wire import RAW, from_ipc
from tests.support import synth
from tests.support.kafka import consume_exactly


def test_a_clean_stop_continues_at_the_next_number(tmp_path: Path) -> None:
    state = SeqState(tmp_path, "gw-1", block=1000)
    start = state.start()
    assert (start.first, start.unsure, start.clean) == (0, None, True)
    state.reserve(0, 300)
    state.close(300)
    again = SeqState(tmp_path, "gw-1", block=1000).start()
    assert (again.first, again.unsure, again.clean) == (300, None, True)


def test_after_a_kill_the_reserved_block_is_skipped_and_named(tmp_path: Path) -> None:
    state = SeqState(tmp_path, "gw-1", block=1000)
    state.start()
    state.reserve(0, 300)  # reserves up to 1300 on disk
    state.reserve(300, 900)  # inside the block: no write needed
    # killed here: no close()
    after = SeqState(tmp_path, "gw-1", block=1000).start()
    assert after.first == 1300
    assert not after.clean
    assert after.unsure == (0, 1300)
    with pytest.raises(TapError, match="reuse"):
        SeqState(tmp_path, "gw-1").start(requested=5)
    assert SeqState(tmp_path, "gw-1").start(requested=5000).first == 5000


def test_a_state_file_of_another_gateway_or_broken_is_refused(tmp_path: Path) -> None:
    (tmp_path / "gw-1.json").write_text(json.dumps({"gateway": "gw-2", "next": 3}))
    with pytest.raises(TapError, match="not the sequence state"):
        SeqState(tmp_path, "gw-1").start()
    (tmp_path / "gw-1.json").write_text("{not json")
    with pytest.raises(TapError, match="unreadable"):
        SeqState(tmp_path, "gw-1").start()
    with pytest.raises(TapError, match="block"):
        SeqState(tmp_path, "gw-1", block=0)


def _packets(n: int) -> list[Packet]:
    """``n`` small UDP frames, as a capture would give them."""
    frame = synth.ethernet(synth.ipv4(synth.udp(b"x" * 8, 4000, 53), 17, "127.0.0.2", "127.0.0.3"))
    return [
        Packet(ts_ns=1_000_000 * i, linktype=1, wire_len=len(frame), data=frame) for i in range(n)
    ]


@pytest.mark.kafka
def test_restarted_taps_never_reuse_a_sequence_number(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    ensure_pipeline_topics(kafka_settings)
    state_dir = tmp_path / "state"
    killed = Tap(
        kafka_settings, "gw-9", batch_size=50, seq_state=SeqState(state_dir, "gw-9", block=100)
    )
    for packet in _packets(120):
        killed.add(packet)
    assert killed.flush() == 0  # delivered, then "killed": no close()
    second = Tap(
        kafka_settings, "gw-9", batch_size=50, seq_state=SeqState(state_dir, "gw-9", block=100)
    )
    assert second.seq_start.first == 150
    assert second.seq_start.unsure == (0, 150)
    stop = threading.Event()
    stats = run_tap(second, iter(_packets(30)), stop=stop)  # a clean stop
    assert stats.delivered_packets == 30
    third = Tap(kafka_settings, "gw-9", seq_state=SeqState(state_dir, "gw-9", block=100))
    assert third.seq_start.first == 180
    assert third.seq_start.clean
    third.close()

    messages = consume_exactly(
        kafka_settings.kafka_config(), kafka_settings.topic_raw, "tap-seq-check", 4
    )
    seqs = (
        pa.concat_tables(
            [pa.Table.from_batches([from_ipc(m.value() or b"", RAW)]) for m in messages]
        )
        .column("seq")
        .to_pylist()
    )
    assert sorted(seqs) == [*range(120), *range(150, 180)]
