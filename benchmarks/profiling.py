"""Where the time goes: sampling profiles of the pipeline's Python processes with py-spy.

py-spy (a dev dependency) samples a running process from outside, without restarting it
or changing its code, so the profile is of the real worker, sink and tap under the
benchmark's load. It records collapsed stacks (``--format raw``: one line per distinct
stack with its sample count); :func:`top_frames` turns them into the functions with the
most samples on top of the stack (self time) and anywhere in it (inclusive time).
Idle threads are not sampled (py-spy's default), so shares are of CPU-busy samples.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_LINE_NO = re.compile(r":\d+\)$")
#: ``(/.../site-packages/`` or ``(/usr/lib/python3.11/``: where a library frame's file lives
_LIB_PREFIX = re.compile(r"\(\S*/(?:site-packages|lib/python3\.\d+)/")


def py_spy_path() -> str | None:
    """The py-spy executable next to this interpreter, else on PATH (``None``: absent)."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def start_profile(
    pid: int, duration_s: float, out: Path, rate_hz: int = 50
) -> subprocess.Popen[bytes] | None:
    """Record ``pid`` for ``duration_s`` seconds into ``out`` (collapsed stacks)."""
    exe = py_spy_path()
    if exe is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    log = open(out.with_suffix(".log"), "wb")  # noqa: SIM115 - closed by the child's exit
    return subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(duration_s))),
            "--rate",
            str(rate_hz),
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(out),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _frame_name(frame: str) -> str:
    """``score (amlhp/streams/worker.py:180)`` -> ``score (amlhp/streams/worker.py)``."""
    name = _LINE_NO.sub(")", frame.strip())
    return _LIB_PREFIX.sub("(", name)


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    """Collapsed-stack lines -> (frames root first, samples); process/thread frames dropped."""
    stacks: list[tuple[list[str], int]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or " " not in line:
            continue
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [
            _frame_name(f)
            for f in stack.split(";")
            if f and not f.startswith(("process ", "thread "))
        ]
        if frames:
            stacks.append((frames, int(count)))
    return stacks


def top_frames(text: str, n: int = 12) -> dict[str, Any]:
    """The ``n`` functions with the most self and inclusive samples, as shares of all."""
    stacks = parse_collapsed(text)
    total = sum(count for _, count in stacks)
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for frames, count in stacks:
        own[frames[-1]] += count
        for frame in set(frames):
            incl[frame] += count
    if total == 0:
        return {"samples": 0, "self": [], "inclusive": []}
    return {
        "samples": total,
        "self": [[f, round(c / total, 4)] for f, c in own.most_common(n)],
        "inclusive": [[f, round(c / total, 4)] for f, c in incl.most_common(n)],
    }


def finish_profile(
    proc: subprocess.Popen[bytes] | None, out: Path, timeout_s: float = 60.0
) -> dict[str, Any] | None:
    """Wait for py-spy and summarise what it recorded (``None`` when nothing was)."""
    if proc is None:
        return None
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(10)
    if not out.exists():
        return None
    return top_frames(out.read_text(errors="replace"))
