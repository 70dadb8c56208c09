"""Errors of the alert stage."""

from __future__ import annotations

from amlhp.errors import AmlhpError


class AlertsError(AmlhpError):
    """The alert stage cannot go on (bad settings, unreadable state)."""
