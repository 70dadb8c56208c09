"""The end-of-run ledger: missing packets and duplicates are counted, never merged."""

from __future__ import annotations

import pyarrow as pa

from amlhp.streams.accounting import account
from amlhp.streams.deadletter import INVALID_BATCH
from amlhp.wire import dead_letter_schema


def test_account_flags_missing_and_duplicates() -> None:
    schema = pa.schema([("gateway", pa.string()), ("seq", pa.uint64()), ("label", pa.string())])
    verdicts = pa.table(
        {"gateway": ["a", "a", "a"], "seq": [0, 1, 1], "label": ["x", "y", "y"]}, schema=schema
    )
    dead = pa.Table.from_pylist(
        [
            {
                "gateway": "a",
                "seq": 2,
                "reason": "non_ip",
                "stage": "encode",
                "origin_topic": "t",
                "origin_partition": 0,
                "origin_offset": 1,
            },
            {
                "gateway": None,
                "seq": None,
                "reason": INVALID_BATCH,
                "stage": "encode",
                "origin_topic": "t",
                "origin_partition": 0,
                "origin_offset": 2,
            },
        ],
        schema=dead_letter_schema(),
    )
    ledger = account(verdicts, dead, {"a": (0, 4)})
    assert ledger.verdicts == 2
    assert ledger.duplicate_verdicts == 1
    assert ledger.dead_packets == 1
    assert ledger.dead_messages == 1
    assert ledger.missing == 1
    assert not ledger.complete
    assert ledger.verdicts_by_class == {"x": 1, "y": 2}
    assert ledger.dead_by_reason == {"non_ip": 1}
