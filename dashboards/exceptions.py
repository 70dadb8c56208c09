"""Errors of the `dashboards` stage, rooted in :class:`amlhp.errors.AmlhpError`."""

from amlhp.errors import AmlhpError


class DashboardsError(AmlhpError):
    """Base class of the errors raised on purpose by `amlhp.dashboards`."""
