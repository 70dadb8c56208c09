"""The device inventory as its readers see it: the latest entry per gateway and host.

The flow worker writes ``amlhp.device`` rows to the compacted device topic (see
:mod:`amlhp.flows.inventory` for what an entry means); ``amlhp devices`` lists them and
the alert stage names each incident's device from them. Both read it here, so that
"the inventory" means one thing: per (gateway, host), the last row in topic order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from amlhp.pipeline.kafka_io import read_topic_batches
from amlhp.settings import Settings
from amlhp.wire import DEVICE, DEVICE_VERSION, device_schema, from_ipc

log = logging.getLogger(__name__)

#: what an incident carries of its host's entry: (device type, confidence)
Identity = tuple[str, float]


def latest_entries(batches: Iterable[pa.RecordBatch]) -> pa.Table:
    """The latest row per (gateway, host) of batches in topic order (what the compacted
    topic converges to), sorted by gateway and host."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for batch in batches:
        for row in batch.to_pylist():
            latest[(row["gateway"], row["host"])] = row
    return pa.Table.from_pylist([latest[k] for k in sorted(latest)], schema=device_schema())


def read_inventory(settings: Settings, timeout_s: float = 30.0) -> pa.Table:
    """The inventory on the device topic now (read to its end, no consumer group)."""
    batches, bad = read_topic_batches(
        settings, settings.topic_devices, lambda value: from_ipc(value, DEVICE), timeout_s
    )
    if bad:  # another writer's messages, or a newer schema: said, not silently skipped
        log.warning("%d messages on %s are not amlhp.device v%s rows: skipped",
                    bad, settings.topic_devices, DEVICE_VERSION)  # fmt: skip
    return latest_entries(batches)


def identities(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], Identity]:
    """(gateway, host) -> (device type, confidence) of inventory rows (later rows win)."""
    return {
        (str(r["gateway"]), str(r["host"])): (str(r["device_type"]), float(r["confidence"]))
        for r in rows
    }


def print_inventory(table: Any, title: str = "device inventory") -> None:
    """The inventory as a table on stderr (stdout keeps machine-readable output)."""
    from rich.table import Table

    from amlhp.progress import console

    view = Table("gateway", "host", "device type", "confidence", "flows", "accepted",
                 "first seen", "last seen", title=f"{title} ({table.num_rows} hosts)")  # fmt: skip
    for row in table.to_pylist():
        view.add_row(
            row["gateway"],
            row["host"],
            row["device_type"],
            f"{row['confidence']:.2f}",
            str(row["flows"]),
            str(row["accepted_flows"]),
            _iso(row["first_seen_ns"]),
            _iso(row["last_seen_ns"]),
        )
    console().print(view)


def _iso(ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


__all__ = ["Identity", "identities", "latest_entries", "print_inventory", "read_inventory"]
