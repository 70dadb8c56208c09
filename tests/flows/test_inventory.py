"""The device inventory: a fold that no order of flows can change, and its rule."""

from __future__ import annotations

import itertools

import pyarrow as pa
import pytest

from amlhp.flows.exceptions import FlowStateError
from amlhp.flows.inventory import MIN_SHARE, UNKNOWN, DeviceTally, fold, inventory_batch
from amlhp.pipeline.devices import identities, latest_entries
from amlhp.wire import DEVICE, from_ipc, to_ipc


def verdicts(rows: list[tuple[str, str, str, bool, int]]) -> pa.RecordBatch:
    """(gateway, host, label, uncertain, start second) -> the columns fold reads."""
    return pa.RecordBatch.from_pydict(
        {
            "gateway": [r[0] for r in rows],
            "device_ip": [r[1] for r in rows],
            "label": [r[2] for r in rows],
            "uncertain": [r[3] for r in rows],
            "ts_ns": [r[4] * 10**9 for r in rows],
            "end_ns": [r[4] * 10**9 + 5 for r in rows],
        }
    )


ROWS = [
    ("gw", "10.0.0.2", "cam", False, 3),
    ("gw", "10.0.0.2", "cam", False, 1),
    ("gw", "10.0.0.2", "plug", False, 7),
    ("gw", "10.0.0.2", "cam", True, 9),
    ("gw", "10.0.0.9", "plug", True, 2),
    ("gw", "10.0.0.9", "cam", False, 4),
    ("gw", "10.0.0.9", "hub", False, 5),
]


def inventory(rows: list[tuple[str, str, str, bool, int]], chunk: int) -> list[dict[str, object]]:
    tallies: dict[tuple[str, str], DeviceTally] = {}
    for lo in range(0, len(rows), chunk):
        fold(tallies, verdicts(rows[lo : lo + chunk]))
    return [tallies[k].record("v", now_ns=0) for k in sorted(tallies)]


def test_the_inventory_does_not_depend_on_the_order_or_batching_of_flows() -> None:
    first = inventory(ROWS, len(ROWS))
    for perm in itertools.islice(itertools.permutations(ROWS), 0, 5040, 97):
        for chunk in (1, 3):
            assert inventory(list(perm), chunk) == first


def test_a_host_is_its_class_only_when_most_of_its_flows_say_so() -> None:
    cam, other = inventory(ROWS, 2)
    # 2 of 4 flows accepted as cam: exactly MIN_SHARE
    assert MIN_SHARE == 0.5
    assert (cam["device_type"], cam["confidence"]) == ("cam", 0.5)
    assert (cam["flows"], cam["accepted_flows"]) == (4, 3)
    assert cam["votes"] == ["cam=2", "plug=1"]
    assert (cam["first_seen_ns"], cam["last_seen_ns"]) == (1 * 10**9, 9 * 10**9 + 5)
    # one vote each for two classes among 3 flows: not sure enough to name it
    assert other["device_type"] == UNKNOWN
    assert other["confidence"] == pytest.approx(1 / 3, abs=1e-4)


def test_an_entry_survives_its_table_bytes_and_the_wire() -> None:
    tally = DeviceTally("gw", "10.0.0.2")
    tally.add("cam", True, 5, 9)
    assert DeviceTally.from_bytes(tally.to_bytes()) == tally
    with pytest.raises(FlowStateError):
        DeviceTally.from_bytes(b"[1, 2]")
    older = inventory_batch([tally.record("v", now_ns=1)])
    tally.add("cam", True, 11, 12)
    newer = inventory_batch([tally.record("v", now_ns=2)])
    decoded = [from_ipc(to_ipc(b), DEVICE) for b in (older, newer)]
    (latest,) = latest_entries(decoded).to_pylist()
    assert (latest["flows"], latest["updated_at_ns"]) == (2, 2)
    assert identities([latest]) == {("gw", "10.0.0.2"): ("cam", 1.0)}
