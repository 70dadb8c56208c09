"""A short real lab run (benign devices and the Modbus attack) read back with dpkt.

Checks that the second round's devices really speak their protocols from sensor
addresses (TLS on the MQTT-over-TLS and HTTPS ports, CoAP observe, mDNS/SSDP, Modbus
function codes) and that the Modbus attack's writes and floods go to its dedicated victim.
"""

from __future__ import annotations

import struct
from collections import Counter
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest

from amlhp.lab.topology import PORT_PRESETS, SENSOR_NET, Topology
from amlhp.lab.verify import verify_run
from tests.support.lab import Segment, require_lab, run_lab, segments

pytestmark = [pytest.mark.slow, pytest.mark.live]

SENSORS = IPv4Network(SENSOR_NET)
PORTS = "standard"
T = Topology(ports=PORT_PRESETS[PORTS])
SERVICES = T.services
VICTIM = T.modbus_victim
READ_CODES = {1, 2, 3, 4}
WRITE_CODES = {5, 6, 15, 16}


def from_sensor(p: Segment) -> bool:
    return p.src in SENSORS


def to_sensor(p: Segment) -> bool:
    return p.dst in SENSORS


def _extended(value: int, data: bytes, offset: int) -> tuple[int, int]:
    if value == 13:
        return data[offset] + 13, offset + 1
    if value == 14:
        return struct.unpack("!H", data[offset : offset + 2])[0] + 269, offset + 2
    return value, offset


def coap_options(payload: bytes) -> set[int]:
    """Option numbers of a CoAP message (RFC 7252 section 3.1)."""
    if len(payload) < 4 or payload[0] >> 6 != 1:
        return set()
    offset, number, found = 4 + (payload[0] & 0x0F), 0, set()
    while offset < len(payload) and payload[offset] != 0xFF:
        head = payload[offset]
        delta, offset = _extended(head >> 4, payload, offset + 1)
        length, offset = _extended(head & 0x0F, payload, offset)
        number += delta
        found.add(number)
        offset += length
    return found


def modbus_codes(p: Segment) -> list[int]:
    """Function codes of the Modbus/TCP messages in one segment (7-byte MBAP header each)."""
    codes, data = [], p.payload
    while len(data) >= 8:
        length = struct.unpack("!H", data[4:6])[0]
        codes.append(data[7])
        data = data[6 + length :]
    return codes


@pytest.fixture(scope="module")
def device_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Benign for its whole 20 s (a wanted count it cannot reach), then the Modbus attack."""
    require_lab()
    out = tmp_path_factory.mktemp("lab-benign-devices")
    manifest = run_lab(
        out,
        "benign-devices",
        scenarios=("benign", "modbus_attack"),
        packets=300,
        benign_packets=1_000_000,
        time_limit_s=20,
        seed=5,
        ports=PORTS,
        command="pytest benign devices",
    )
    return out, manifest


@pytest.fixture(scope="module")
def all_packets(device_run: tuple[Path, dict[str, Any]]) -> list[Segment]:
    out, manifest = device_run
    return [p for entry in manifest["files"] for p in segments(out / entry["file"])]


def test_tls_from_sensors_on_mqtts_and_https(all_packets: list[Segment]) -> None:
    def tls_records(port: int) -> list[Segment]:
        return [
            p
            for p in all_packets
            if p.proto == "tcp"
            and port in (p.sport, p.dport)
            and (from_sensor(p) or to_sensor(p))
            and len(p.payload) >= 5
            and p.payload[0] in (0x14, 0x15, 0x16, 0x17)
            and p.payload[1] == 0x03
        ]

    mqtts = tls_records(T.ports.mqtts)
    assert any(from_sensor(p) and p.dst == SERVICES for p in mqtts), "no MQTT-over-TLS records"
    https = tls_records(T.ports.https)
    hellos = [p for p in https if from_sensor(p) and p.payload[0] == 0x16 and p.payload[5] == 1]
    assert hellos, "no TLS ClientHello from a sensor to the HTTPS server"
    served = [
        p for p in all_packets if p.proto == "tcp" and p.sport == T.ports.https and to_sensor(p)
    ]
    assert sum(len(p.payload) for p in served) > 50_000  # more than manifests: part of a snapshot


def test_coap_observe_option_present(all_packets: list[Segment]) -> None:
    coap = [p for p in all_packets if p.proto == "udp" and T.ports.coap in (p.sport, p.dport)]
    observing = [p for p in coap if 6 in coap_options(p.payload)]  # option 6: Observe
    assert any(from_sensor(p) for p in observing), "no observe registration from a sensor"
    assert sum(p.src == SERVICES for p in observing) >= 3, "no stream of notifications"


def test_mdns_and_ssdp_chatter(all_packets: list[Segment]) -> None:
    mdns = [p for p in all_packets if p.proto == "udp" and p.dport == T.ports.mdns]
    assert any(from_sensor(p) and p.dst == SERVICES for p in mdns)
    answers = [p for p in all_packets if p.proto == "udp" and p.sport == T.ports.mdns]
    assert any(p.src == SERVICES and p.payload[2] & 0x80 for p in answers), "no mDNS answer"
    ssdp = [p for p in all_packets if p.proto == "udp" and p.dport == T.ports.ssdp]
    starts = {p.payload.split(b" ", 1)[0] for p in ssdp if from_sensor(p)}
    assert starts & {b"M-SEARCH", b"NOTIFY"}, starts


def test_modbus_poller_from_sensors(all_packets: list[Segment]) -> None:
    requests = [
        p
        for p in all_packets
        if p.proto == "tcp" and p.dport == T.ports.modbus and from_sensor(p) and p.payload
    ]
    assert {p.dst for p in requests} == {SERVICES}
    codes = Counter(c for p in requests for c in modbus_codes(p))
    assert {1, 3, 4} <= set(codes), codes
    replies = [p for p in all_packets if p.sport == T.ports.modbus and to_sensor(p) and p.payload]
    assert len(replies) >= len(requests) // 2


def test_modbus_attack_writes_and_floods_the_victim(device_run: tuple[Path, Any]) -> None:
    out, manifest = device_run
    entry = next(e for e in manifest["files"] if e["scenario"] == "modbus_attack")
    assert entry["marker"] == str(VICTIM)
    assert entry["classes"]["modbus_attack"] >= 300
    requests = [
        p
        for p in segments(out / entry["file"])
        if p.proto == "tcp" and p.dst == VICTIM and p.dport == T.ports.modbus and p.payload
    ]
    assert {p.src for p in requests} == {T.kernel_source}  # mbpoll binds no address
    codes = Counter(c for p in requests for c in modbus_codes(p))
    assert set(codes) & WRITE_CODES, codes
    assert sum(codes[c] for c in READ_CODES) >= 50, codes  # the flood
    assert entry["runs"] >= 2  # write burst and read flood


def test_the_run_verifies(device_run: tuple[Path, Any]) -> None:
    out, _ = device_run
    report = verify_run(out)
    assert report.ok, "\n".join(report.lines())
