"""Errors of the attack lab; all derive from :class:`amlhp.errors.AmlhpError`."""

from __future__ import annotations

from amlhp.errors import AmlhpError


class LabError(AmlhpError):
    """Base class of every error the lab raises on purpose."""


class UnsafeTargetError(LabError):
    """An address, network or command line would reach outside 127.0.0.0/8."""


class MissingToolError(LabError):
    """A program the lab needs (mosquitto, hping3, nmap...) is not installed."""


class ServiceError(LabError):
    """A lab service (broker, web server, sshd...) did not start or answer."""


class LabInterrupted(LabError):
    """The run was stopped by Ctrl-C or SIGTERM; everything started has been cleaned up."""


class LabBusyError(LabError):
    """Another lab run is in progress on this machine."""
