"""Sub-commands of `amlhp` contributed by the `dashboards` stage."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the root app (heavy imports stay inside commands)."""
    del app
