"""Root of the project's exception hierarchy.

Every stage package has its own ``exceptions.py`` whose errors derive from
:class:`AmlhpError`, so that a CLI or a stream worker can catch "anything we raise on
purpose" in one place and still let programming errors surface.
"""


class AmlhpError(Exception):
    """Base class of every error this project raises deliberately."""


class ConfigError(AmlhpError):
    """The settings (environment variables or CLI flags) are invalid."""
