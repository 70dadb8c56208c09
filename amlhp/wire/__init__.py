"""The wire layer: every Arrow schema of the pipeline and the one validating IPC codec.

Base layer: it imports nothing of the stages, and every stage that writes or reads a
Kafka topic (or a dataset of its records) takes its schema from here, so that a schema's
name, version and columns are written down once.

* :mod:`~amlhp.wire.packets`: raw packets, encoded packets, packet verdicts.
* :mod:`~amlhp.wire.records`: dead letters, flow verdicts, packet explanations, alerts,
  device inventory.
* :mod:`~amlhp.wire.registry`: name -> (version, expected schema): the schemas as data.
* :mod:`~amlhp.wire.ipc`: :func:`to_ipc` and the validating :func:`from_ipc`.
* :mod:`~amlhp.wire.exceptions`: :class:`BatchDecodeError`, the one error of a bad message.

Only pyarrow is imported, so importing the package stays cheap.
"""

from amlhp.wire.exceptions import BatchDecodeError
from amlhp.wire.ipc import from_ipc, to_ipc
from amlhp.wire.packets import (
    DEFAULT_MASK_FIELDS,
    ENCODED,
    ENCODED_VERSION,
    HEADER_LEN,
    LAYOUT_VERSION,
    RAW,
    RAW_VERSION,
    VERDICT,
    VERDICT_VERSION,
    encoded_schema,
    payload_bytes_of,
    raw_schema,
    verdict_schema,
)
from amlhp.wire.records import (
    ALERT,
    ALERT_VERSION,
    DEAD_LETTER,
    DEAD_LETTER_VERSION,
    DEVICE,
    DEVICE_VERSION,
    EXPLANATION,
    EXPLANATION_VERSION,
    FEEDBACK,
    FEEDBACK_VERDICTS,
    FEEDBACK_VERSION,
    FLOW_CLOCK_HEADER,
    FLOW_DEVICES_HEADER,
    FLOW_VERDICT,
    FLOW_VERDICT_VERSION,
    alert_schema,
    attribution_fields,
    attribution_groups,
    dead_letter_schema,
    device_schema,
    explanation_schema,
    feedback_schema,
    flow_verdict_schema,
)
from amlhp.wire.registry import REGISTRY, WireSchema, canonical_schema, check_schema, schema_name

__all__ = [
    "ALERT",
    "ALERT_VERSION",
    "DEAD_LETTER",
    "DEAD_LETTER_VERSION",
    "DEFAULT_MASK_FIELDS",
    "DEVICE",
    "DEVICE_VERSION",
    "ENCODED",
    "ENCODED_VERSION",
    "EXPLANATION",
    "EXPLANATION_VERSION",
    "FEEDBACK",
    "FEEDBACK_VERDICTS",
    "FEEDBACK_VERSION",
    "FLOW_CLOCK_HEADER",
    "FLOW_DEVICES_HEADER",
    "FLOW_VERDICT",
    "FLOW_VERDICT_VERSION",
    "HEADER_LEN",
    "LAYOUT_VERSION",
    "RAW",
    "RAW_VERSION",
    "REGISTRY",
    "VERDICT",
    "VERDICT_VERSION",
    "BatchDecodeError",
    "WireSchema",
    "alert_schema",
    "attribution_fields",
    "attribution_groups",
    "canonical_schema",
    "check_schema",
    "dead_letter_schema",
    "device_schema",
    "encoded_schema",
    "explanation_schema",
    "feedback_schema",
    "flow_verdict_schema",
    "from_ipc",
    "payload_bytes_of",
    "raw_schema",
    "schema_name",
    "to_ipc",
    "verdict_schema",
]
