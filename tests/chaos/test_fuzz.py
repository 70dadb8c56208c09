"""The fuzzed capture of the fault suite: readable by the tap's reader, mutated, the same
frames for the same seed."""

from __future__ import annotations

from pathlib import Path

from amlhp.chaos.fuzz import fuzzed_frames, write_fuzzed_capture
from amlhp.data import DEMO_CAPTURE
from amlhp.encoders.readers import iter_packets


def test_fuzzed_capture_reads_back_whole(tmp_path: Path) -> None:
    path = write_fuzzed_capture(DEMO_CAPTURE, tmp_path / "fuzz.pcap", 3000)
    written = [f for _, f in fuzzed_frames(DEMO_CAPTURE, 3000)]
    read = [p.data for p in iter_packets(path)]
    assert read == written  # jumbo frames kept whole, empty frames kept
    assert any(len(f) == 0 for f in read)
    assert any(len(f) > 9000 for f in read)
    originals = {p.data for p in iter_packets(DEMO_CAPTURE)}
    assert sum(f in originals for f in read) < len(read) // 10


def test_same_seed_same_frames() -> None:
    first = list(fuzzed_frames(DEMO_CAPTURE, 500, seed=3))
    assert first == list(fuzzed_frames(DEMO_CAPTURE, 500, seed=3))
    assert first != list(fuzzed_frames(DEMO_CAPTURE, 500, seed=4))
