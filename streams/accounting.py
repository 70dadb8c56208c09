"""Exact accounting: every packet that entered is a verdict or a dead letter, once.

Packets are identified by (gateway, seq). Verdicts are read from the Parquet dataset,
dead letters from the dead-letter topic (read to its high watermark without joining a
consumer group). Duplicates are counted, never silently merged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from amlhp.pipeline.dataset import read_verdicts
from amlhp.pipeline.kafka_io import read_topic_batches
from amlhp.settings import Settings
from amlhp.wire import DEAD_LETTER, dead_letter_schema, from_ipc


def read_dead_letters(settings: Settings, timeout_s: float = 30.0) -> pa.Table:
    batches, _ = read_topic_batches(
        settings, settings.topic_dead_letter, lambda value: from_ipc(value, DEAD_LETTER), timeout_s
    )
    if not batches:
        return dead_letter_schema().empty_table()
    return pa.Table.from_batches(batches, schema=dead_letter_schema())


def _keys(table: pa.Table) -> np.ndarray:
    if table.num_rows == 0:
        return np.array([], dtype=str)
    gw = table.column("gateway").to_numpy(zero_copy_only=False).astype(str)
    seq = table.column("seq").to_numpy(zero_copy_only=False).astype(str)
    return np.char.add(np.char.add(gw, "|"), seq)


#: fields of :class:`Accounting` that the JSON summaries name differently
_SUMMARY_NAMES = {
    "duplicate_verdicts": "duplicates",
    "dead_packets": "dead_letters",
    "both": "in_both",
    "dead_by_reason": "dead_letters_by_reason",
}


@dataclass
class Accounting:
    """The end-of-run ledger."""

    packets_in: int
    verdicts: int
    verdict_rows: int
    duplicate_verdicts: int
    dead_packets: int
    dead_messages: int
    missing: int
    both: int
    verdicts_by_class: dict[str, int] = field(default_factory=dict)
    dead_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.missing == 0

    def as_dict(self) -> dict[str, Any]:
        """The ledger with the names of the run summaries' JSON (``amlhp demo``)."""
        return {_SUMMARY_NAMES.get(k, k): v for k, v in asdict(self).items()}


def _counts(column: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    if len(column) == 0:
        return {}
    return {
        str(item["values"]): int(item["counts"]) for item in pc.value_counts(column).to_pylist()
    }


def account(verdicts: pa.Table, dead: pa.Table, expected: dict[str, tuple[int, int]]) -> Accounting:
    """Compare what came out with what went in: ``expected[gateway] = (first, count)``."""
    dead_pk = dead.filter(pc.is_valid(dead.column("seq"))) if dead.num_rows else dead
    dead_msgs = dead.num_rows - dead_pk.num_rows
    v_keys = _keys(verdicts) if verdicts.num_rows else np.array([], dtype=str)
    d_keys = _keys(dead_pk)
    v_unique = np.unique(v_keys) if len(v_keys) else v_keys
    d_unique = np.unique(d_keys) if len(d_keys) else d_keys
    expected_keys = (
        np.concatenate(
            [
                np.char.add(f"{gw}|", np.arange(first, first + n).astype(str))
                for gw, (first, n) in expected.items()
                if n > 0
            ]
        )
        if any(n > 0 for _, n in expected.values())
        else np.array([], dtype=str)
    )
    seen = np.union1d(v_unique, d_unique) if len(v_unique) + len(d_unique) else v_unique
    missing = len(np.setdiff1d(expected_keys, seen)) if len(expected_keys) else 0
    return Accounting(
        packets_in=sum(n for _, n in expected.values()),
        verdicts=len(v_unique),
        verdict_rows=verdicts.num_rows,
        duplicate_verdicts=verdicts.num_rows - len(v_unique) + (len(d_keys) - len(d_unique)),
        dead_packets=len(d_unique),
        dead_messages=dead_msgs,
        missing=missing,
        both=len(np.intersect1d(v_unique, d_unique)) if len(v_unique) and len(d_unique) else 0,
        verdicts_by_class=_counts(verdicts.column("label")) if verdicts.num_rows else {},
        dead_by_reason=_counts(dead_pk.column("reason")) if dead_pk.num_rows else {},
    )


def account_run(
    settings: Settings, verdict_root: Path, expected: dict[str, tuple[int, int]]
) -> Accounting:
    """Read both outputs and build the ledger."""
    return account(read_verdicts(verdict_root), read_dead_letters(settings), expected)
