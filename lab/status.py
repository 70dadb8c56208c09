"""Live status of a lab run on stderr: a table on a terminal, a line per change otherwise."""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType

from rich.live import Live
from rich.table import Table

from amlhp.lab.runner import ScenarioStatus
from amlhp.progress import console

log = logging.getLogger(__name__)

LOG_EVERY_S = 10.0


def render(statuses: list[ScenarioStatus]) -> Table:
    table = Table(title="amlhp lab", expand=False)
    for column in ("scenario", "class", "state", "own/wanted", "benign", "total", "runs", "s"):
        table.add_column(column, justify="right" if column not in ("scenario", "class") else "left")
    for s in statuses:
        table.add_row(
            s.name,
            s.label,
            s.state,
            f"{s.own}/{s.wanted}",
            str(s.benign),
            str(s.total),
            str(s.runs),
            f"{s.elapsed_s:.0f}",
        )
    return table


class StatusDisplay:
    """Shows the statuses it is given; use as a context manager around the run."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self._live: Live | None = None
        self._last_log = 0.0
        self._states: dict[str, str] = {}

    def __enter__(self) -> StatusDisplay:
        if self.tty:
            self._live = Live(render([]), console=console(), refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def update(self, statuses: list[ScenarioStatus]) -> None:
        if self._live is not None:
            self._live.update(render(statuses))
            return
        now = time.monotonic()
        changed = [s for s in statuses if self._states.get(s.name) != s.state]
        for s in statuses:
            self._states[s.name] = s.state
        if changed or now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            for s in statuses:
                if s.state == "running" or s in changed:
                    log.info(
                        "lab %s (%s): %s, %d/%d own, %d benign, %d total, %d runs, %.0f s",
                        s.name,
                        s.label,
                        s.state,
                        s.own,
                        s.wanted,
                        s.benign,
                        s.total,
                        s.runs,
                        s.elapsed_s,
                    )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None
