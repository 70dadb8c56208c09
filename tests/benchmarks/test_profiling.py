"""Collapsed py-spy stacks -> the functions where the time goes."""

from __future__ import annotations

from amlhp.benchmarks.profiling import parse_collapsed, top_frames

_WORKER = 'process 1:"python -m amlhp.cli worker"'
_SCORE = "run (amlhp/cli.py:3);score_batches (amlhp/streams/processing.py:{line})"
RAW = "\n".join(
    [
        f"{_WORKER};thread (0x1);{_SCORE.format(line=120)};forward (amlhp/model/reparam.py:40) 60",
        f"{_WORKER};thread (0x1);{_SCORE.format(line=125)};"
        "build_verdicts (amlhp/streams/processing.py:150) 15",
        f"{_WORKER};thread (0x2);select (/usr/lib/python3.11/selectors.py:468) 25",
        "not a stack line",
    ]
)


def test_parse_drops_process_and_thread_frames() -> None:
    stacks = parse_collapsed(RAW)
    assert len(stacks) == 3
    frames, count = stacks[0]
    assert count == 60
    assert frames[0] == "run (amlhp/cli.py)"
    assert frames[-1] == "forward (amlhp/model/reparam.py)"
    assert stacks[2][0] == ["select (selectors.py)"]


def test_top_frames_self_and_inclusive_shares() -> None:
    top = top_frames(RAW)
    assert top["samples"] == 100
    assert top["self"][0] == ["forward (amlhp/model/reparam.py)", 0.6]
    inclusive = dict((name, share) for name, share in top["inclusive"])
    # two lines of score_batches (different line numbers) are one function
    assert inclusive["score_batches (amlhp/streams/processing.py)"] == 0.75
    assert inclusive["run (amlhp/cli.py)"] == 0.75
    assert top_frames("") == {"samples": 0, "self": [], "inclusive": []}
