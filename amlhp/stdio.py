"""``-`` for standard input and output in the offline commands, as tshark, kcat and duckdb
take it: ``tcpdump -w - | amlhp score - --out - | duckdb ...``.

A capture read from stdin is spooled to a temporary file first (the readers detect the
format and report progress from the file's size), so ``-`` costs disk the size of the
capture for the command's duration. A Parquet file written to stdout is streamed: the
writer never seeks, the footer comes last.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

STDIO = "-"


def is_stdio(path: Path | str) -> bool:
    return str(path) == STDIO


@contextlib.contextmanager
def captures_with_stdin(paths: list[Path]) -> Iterator[list[Path]]:
    """``paths`` with ``-`` replaced by a temporary copy of standard input (removed after)."""
    if not any(is_stdio(p) for p in paths):
        yield paths
        return
    if sum(1 for p in paths if is_stdio(p)) > 1:
        from amlhp.errors import ConfigError

        raise ConfigError("standard input (-) can be given once")
    with tempfile.TemporaryDirectory(prefix="amlhp-stdin-") as tmp:
        spooled = Path(tmp) / "stdin.pcap"
        with spooled.open("wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
        yield [spooled if is_stdio(p) else p for p in paths]


def output_sink(path: Path) -> Any:
    """Where a writer should write ``path``: the path itself, or stdout's binary stream."""
    return sys.stdout.buffer if is_stdio(path) else str(path)


def summary_stream(out: Path) -> IO[str]:
    """Where a command's summary goes: stdout, or stderr when stdout carries the data."""
    return sys.stderr if is_stdio(out) else sys.stdout
