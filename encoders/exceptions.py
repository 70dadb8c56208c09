"""Errors of the `encoders` stage, rooted in :class:`amlhp.errors.AmlhpError`.

Packet content never raises: a packet the encoder cannot represent gets a reason code
(see :mod:`amlhp.encoders.reasons`). These errors are for the things around packets: a
file that is not a capture, bytes that are not a batch, a configuration that makes no sense.

:class:`BatchDecodeError` (bytes that are not a batch) belongs to the wire layer
(:mod:`amlhp.wire.exceptions`), whose decoder every stage shares; it is imported here so
that code handling the encoders' batches can keep naming it beside the encoders' own
errors.
"""

from amlhp.errors import AmlhpError
from amlhp.wire.exceptions import BatchDecodeError as BatchDecodeError


class EncodersError(AmlhpError):
    """Base class of the errors raised on purpose by `amlhp.encoders`."""


class EncoderConfigError(EncodersError, ValueError):
    """An encoder option is invalid (payload length out of range, unknown mask field)."""


class SchemaMismatchError(EncodersError):
    """A record batch handed to a function does not have the schema it needs."""


class CaptureError(EncodersError):
    """A capture file cannot be read at all (missing, unreadable, not pcap or pcapng).

    Damage inside a readable capture (a truncated last record, a corrupt block) is not an
    error: the reader keeps the packets it could read and counts a warning instead.
    """
