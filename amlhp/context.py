"""What the root ``amlhp`` command hands to its sub-commands, and the one way to read it.

The root callback (:mod:`amlhp.cli`) says how to build the settings from the environment
and the global flags; the first sub-command that asks (:func:`settings_of`) builds them,
once, so no command reads the environment or builds settings of its own. Built on first
use, not in the callback: ``amlhp topics --help`` and commands that need no setting work
whatever the environment holds, and a bad variable is reported by the command that reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import typer

from amlhp.settings import Settings, load_settings


@dataclass
class AppContext:
    """``ctx.obj`` of every sub-command: the settings, built on first use."""

    load: Callable[[], Settings]
    _settings: Settings | None = field(default=None, init=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = self.load()
        return self._settings


def settings_of(ctx: typer.Context) -> Settings:
    """The settings of this invocation (the root callback's; the environment's defaults when
    a sub-app runs on its own, as in some tests)."""
    found = ctx.find_object(AppContext)
    return found.settings if found is not None else load_settings()
