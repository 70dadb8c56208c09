"""One tap process publishing as a fleet of gateways (``amlhp tap --gateways N``)."""

from __future__ import annotations

import threading

import pytest

from amlhp.settings import Settings
from amlhp.streams.exceptions import TapError
from amlhp.streams.tap import Packet, run_tap
from amlhp.streams.tap_fleet import FleetTap, fleet_gateway_ids, fleet_packet_counts
from amlhp.streams.topics import ensure_pipeline_topics
from amlhp.wire import RAW, from_ipc
from tests.support import synth
from tests.support.kafka import consume_exactly


def test_gateway_ids_and_packet_shares() -> None:
    assert fleet_gateway_ids("gw", 3) == ["gw-0", "gw-1", "gw-2"]
    assert fleet_gateway_ids("gw", 11)[:2] == ["gw-00", "gw-01"]
    assert fleet_packet_counts(10, 4) == [3, 3, 2, 2]
    assert sum(fleet_packet_counts(63_144, 10_000)) == 63_144
    with pytest.raises(TapError, match="--gateways"):
        fleet_gateway_ids("gw", 0)


@pytest.mark.kafka
def test_each_gateway_of_a_fleet_numbers_and_keys_its_own_packets(
    kafka_settings: Settings,
) -> None:
    ensure_pipeline_topics(kafka_settings)
    frame = synth.ethernet(synth.ipv4(synth.udp(b"x" * 8, 4000, 53), 17, "127.0.0.2", "127.0.0.3"))
    packets = [Packet(1_000 * i, 1, len(frame), frame) for i in range(25)]
    fleet = FleetTap(kafka_settings, "site", 4, batch_size=5)
    stats = run_tap(fleet, iter(packets), stop=threading.Event())
    assert stats.delivered_packets == 25
    # 7, 6, 6, 6 packets in batches of at most 5: two messages per gateway
    messages = consume_exactly(
        kafka_settings.kafka_config(), kafka_settings.topic_raw, "fleet-check", 8
    )
    seen: dict[str, list[int]] = {}
    stamps: dict[str, list[int]] = {}
    for message in messages:
        batch = from_ipc(message.value() or b"", RAW)
        [gateway] = set(batch.column("gateway").to_pylist())
        assert message.key() == gateway.encode()  # one gateway per message, its own key
        seen.setdefault(gateway, []).extend(batch.column("seq").to_pylist())
        stamps.setdefault(gateway, []).extend(batch.column("ts_ns").to_pylist())
    expected = dict(zip(fleet.gateways, fleet_packet_counts(25, 4), strict=True))
    assert {g: sorted(s) for g, s in seen.items()} == {
        g: list(range(n)) for g, n in expected.items()
    }
    # packet k went to gateway k mod 4
    assert sorted(stamps["site-1"]) == [1_000 * k for k in range(1, 25, 4)]
