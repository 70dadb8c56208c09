"""Progress bars and live status lines shared by every long-running command."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

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


def echo_result(
    doc: Mapping[str, Any],
    *,
    as_json: bool,
    headline: str,
    counts: Mapping[str, int],
    width: int = 20,
    err: bool = False,
) -> None:
    """A command's result on stdout: the whole ``doc`` as JSON, or a headline and a count
    table (class or reason -> packets), the shape every ``amlhp`` command prints."""
    import json

    import typer

    if as_json:
        typer.echo(json.dumps(doc, indent=2), err=err)
        return
    typer.echo(headline, err=err)
    for name, count in counts.items():
        typer.echo(f"{name or '(none)':<{width}}{count:>10}", err=err)
