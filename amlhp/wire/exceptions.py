"""The one error of the wire layer, rooted in :class:`amlhp.errors.AmlhpError`.

Every stage that reads Kafka messages turns a bad message into data (a dead letter, a
counted reason), never into a crash; one typed error for every way a message can be bad
lets each of them do that with one ``except``. :mod:`amlhp.encoders.exceptions` imports it
so that the encoders, which raise it for their own batches, keep naming it there.
"""

from amlhp.errors import AmlhpError


class BatchDecodeError(AmlhpError):
    """Bytes that should hold one Arrow IPC stream of a known schema do not.

    Raised for anything wrong with a message: not Arrow at all, truncated, corrupt buffers,
    another schema, another schema version, wrong column types, nulls where a value is
    required.
    """
