"""Progress bars and live status lines shared by every long-running command."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def console() -> Console:
    """The console progress output goes to: stderr, so stdout stays machine-readable."""
    return Console(stderr=True)


def progress_bar(*, transient: bool = False) -> Progress:
    """A progress bar with counts, rate-friendly columns and ETA; quiet when not a TTY."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console(),
        transient=transient,
        disable=not sys.stderr.isatty(),
    )
