"""What the root ``amlhp`` command hands to its sub-commands, and the one way to read it.

The root callback (:mod:`amlhp.cli`) builds the settings once from the environment and the
global flags; every sub-command gets them with :func:`settings_of`, so no command reads the
environment or builds settings of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import typer

from amlhp.settings import Settings, load_settings


@dataclass(frozen=True)
class AppContext:
    """``ctx.obj`` of every sub-command."""

    settings: Settings


def settings_of(ctx: typer.Context) -> Settings:
    """The settings of this invocation (the root callback's; the environment's defaults when
    a sub-app runs on its own, as in some tests)."""
    found = ctx.find_object(AppContext)
    return found.settings if found is not None else load_settings()
