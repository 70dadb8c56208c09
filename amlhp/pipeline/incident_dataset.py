"""Reading the stream's incidents back: the alert dataset, and waiting for it to settle.

The demo and the tests ask "which incidents did the stream raise?" once every packet is
accounted for. Open incidents close when their gateway has been idle for
``alert_idle_close_s`` (wall clock), so the answer is final once every incident in the
dataset has its ``closed`` row and nothing new arrived for a while.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from amlhp.pipeline.dataset import read_verdicts
from amlhp.pipeline.incidents import latest


class _Stage(Protocol):
    def check_alive(self) -> None: ...


def alert_rows(root: Path) -> list[dict[str, Any]]:
    """Every durable alert row under ``root`` (``[]`` when there is none yet)."""
    table = read_verdicts(root)
    return table.to_pylist() if table.num_rows else []


def wait_settled(
    root: Path,
    stages: Sequence[_Stage],
    *,
    settle_s: float,
    timeout_s: float,
    ready: Callable[[pa.Table], bool] | None = None,
) -> pa.Table:
    """Poll the dataset under ``root`` until its rows stopped changing for ``settle_s`` (and
    ``ready`` holds of them), or ``timeout_s`` passed; returns it. A stage that died
    raises."""
    deadline = time.monotonic() + timeout_s
    seen, since = -1, time.monotonic()
    while True:
        for stage in stages:
            stage.check_alive()
        table = read_verdicts(root)
        if table.num_rows != seen:
            seen, since = table.num_rows, time.monotonic()
        settled = time.monotonic() - since >= settle_s
        if (settled and (ready is None or ready(table))) or time.monotonic() > deadline:
            return table
        time.sleep(0.5)


def wait_incidents(
    root: Path,
    stages: Sequence[_Stage],
    *,
    settle_s: float,
    timeout_s: float,
) -> list[dict[str, Any]]:
    """Poll ``root`` until every incident is closed and the rows stopped changing for
    ``settle_s``; returns the incidents (latest row each). A stage that died raises."""

    def all_closed(table: pa.Table) -> bool:
        return all(i["status"] == "closed" for i in latest(table.to_pylist()))

    table = wait_settled(root, stages, settle_s=settle_s, timeout_s=timeout_s, ready=all_closed)
    return latest(table.to_pylist() if table.num_rows else [])
