"""Reading the stream's incidents back: the alert dataset, and waiting for it to settle.

The demo and the tests ask "which incidents did the stream raise?" once every packet is
accounted for. Open incidents close when their gateway has been idle for
``alert_idle_close_s`` (wall clock), so the answer is final once every incident in the
dataset has its ``closed`` row and nothing new arrived for a while.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from amlhp.pipeline.dataset import read_verdicts
from amlhp.pipeline.incidents import latest


class _Stage(Protocol):
    def check_alive(self) -> None: ...


def alert_rows(root: Path) -> list[dict[str, Any]]:
    """Every durable alert row under ``root`` (``[]`` when there is none yet)."""
    table = read_verdicts(root)
    return table.to_pylist() if table.num_rows else []


def wait_incidents(
    root: Path,
    stages: Sequence[_Stage],
    *,
    settle_s: float,
    timeout_s: float,
) -> list[dict[str, Any]]:
    """Poll ``root`` until every incident is closed and the rows stopped changing for
    ``settle_s``; returns the incidents (latest row each). A stage that died raises."""
    deadline = time.monotonic() + timeout_s
    seen, since = -1, time.monotonic()
    while True:
        for stage in stages:
            stage.check_alive()
        rows = alert_rows(root)
        if len(rows) != seen:
            seen, since = len(rows), time.monotonic()
        incidents = latest(rows)
        settled = time.monotonic() - since >= settle_s
        if settled and all(i["status"] == "closed" for i in incidents):
            return incidents
        if time.monotonic() > deadline:
            return incidents
        time.sleep(0.5)
