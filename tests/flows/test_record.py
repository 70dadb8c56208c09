"""The flow record, slot by slot, on hand-built flows; keys, lifetime, mirroring, codec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from amlhp.flows.assembler import FlowAssembler, iter_closed, parse_raw
from amlhp.flows.dataset import link_context, matrices, rows_of
from amlhp.flows.exceptions import FlowConfigError, FlowStateError
from amlhp.flows.record import (
    HEAD_LEN,
    PAYLOAD_OFFSET,
    PAYLOAD_SLOTS,
    ROW_LEN,
    FlowConfig,
    FlowKey,
    FlowState,
    anonymise,
    empty_row,
    parse_key,
)

from .conftest import DEVICE, REMOTE, T0, raw, tcp_frame, udp_frame

CONFIG = FlowConfig(local_nets=("192.168.1.0/24",))


def closed_flows(batch: pa.RecordBatch, config: FlowConfig = CONFIG) -> list[FlowState]:
    return list(iter_closed(FlowAssembler(config), [batch]))


def test_row_layout_of_a_three_packet_tcp_flow() -> None:
    frames = [tcp_frame(b"abc"), tcp_frame(b"", out=False), tcp_frame(b"\x00\xff")]
    (flow,) = closed_flows(raw(frames, [0.0, 0.5, 1.25]))
    assert flow.key == FlowKey("gw-test", DEVICE, REMOTE, 6, 49152, 443)
    row = flow.row()
    assert row.shape == (ROW_LEN,) == (3041,)
    sizes = [20 + 20 + 3, 20 + 20, 20 + 20 + 2]  # IPv4 total lengths
    expected_head: list[float] = [1, 0, 52, 1, 2, 3, 443, 49152, 6, sum(sizes), 3]
    expected_head += [0.0, sizes[0], 1, 0.5, sizes[1], 0, 1.25, sizes[2], 1]
    expected_head += [-1] * (3 * 7)
    np.testing.assert_allclose(row[:HEAD_LEN], expected_head, rtol=0, atol=1e-6)
    payload = [-4, 97, 98, 99, -8, -4, -8, -4, 0, 255, -8]
    assert row[PAYLOAD_OFFSET : PAYLOAD_OFFSET + len(payload)].tolist() == payload
    assert (row[PAYLOAD_OFFSET + len(payload) :] == -1).all()
    assert PAYLOAD_OFFSET + PAYLOAD_SLOTS == ROW_LEN


def test_a_head_read_before_a_packet_is_not_kept_after_it() -> None:
    """The head slots are cached per flow (a context flow's head is read for every matrix
    it is a row of); a packet added after a read must show in the next one."""
    state = FlowState(FlowKey("gw", DEVICE, REMOTE, 6, 49152, 443), start_ns=0)
    state.add(0, 60, 1, b"a", seq=1)
    first = state.head_vector()
    state.add(500_000_000, 40, 0, b"", seq=2)
    second = state.head_vector()
    assert first[10] == 1  # packets
    assert second[10] == 2
    assert second[14:17].tolist() == [0.5, 40, 0]  # the second packet's slots
    assert state.row()[10] == 2


def test_payload_buffer_cut_so_the_end_marker_fits() -> None:
    frames = [tcp_frame(bytes([i]) * 400) for i in range(12)]
    (flow,) = closed_flows(raw(frames, [i * 0.01 for i in range(12)]))
    buf = flow.payload_vector()
    for i in range(7):  # 7 x 402 = 2,814 slots
        start = i * 402
        assert buf[start] == -4
        assert (buf[start + 1 : start + 401] == i).all()
        assert buf[start + 401] == -8
    assert buf[2814] == -4
    assert (buf[2815:2999] == 7).all()  # 184 bytes: what is left minus two markers
    assert buf[2999] == -8
    assert len(flow.payloads) == 8  # packets 9 and 10 had no room at all
    row = flow.row()
    assert row[10] == 12  # all packets counted
    assert row[11 + 3 * 9 + 1] == 440  # the 10th packet is still in the packet slots


def test_private_remote_anonymised_public_kept_and_udp_ports() -> None:
    (flow,) = closed_flows(raw([udp_frame(b"q", DEVICE, "10.0.0.5")], [0.0]))
    row = flow.row()
    assert row[2:6].tolist() == [0, 0, 0, 0]
    assert row[6] == 53
    assert row[7] == 5000
    assert row[8] == 17
    assert anonymise("8.8.8.8") == "8.8.8.8"
    assert anonymise("172.16.3.4") == "0.0.0.0"
    assert anonymise("127.66.0.1") == "0.0.0.0"


def test_device_to_device_gives_two_mirrored_records() -> None:
    other = "192.168.1.20"
    flows = closed_flows(raw([udp_frame(b"hi", DEVICE, other)], [0.0]))
    by_device = {f.key.device_ip: f for f in flows}
    assert set(by_device) == {DEVICE, other}
    a, b = by_device[DEVICE], by_device[other]
    assert (a.key.device_port, a.key.remote_port) == (5000, 53)
    assert (b.key.device_port, b.key.remote_port) == (53, 5000)
    assert a.row()[13] == 1
    assert b.row()[13] == 0


def test_no_local_endpoint_and_refused_packets_are_counted() -> None:
    assembler = FlowAssembler(CONFIG)
    batch = raw([udp_frame(b"x", "8.8.8.8", "1.1.1.1"), b"\x00" * 10], [0.0, 0.1])
    assert list(iter_closed(assembler, [batch])) == []
    assert assembler.stats.no_local_endpoint == 1
    assert sum(assembler.stats.refused.values()) == 1


def test_lifetime_splits_a_long_flow_into_consecutive_records() -> None:
    frames = [tcp_frame(b"a"), tcp_frame(b"b"), tcp_frame(b"c")]
    flows = closed_flows(raw(frames, [0.0, 30.0, 61.0]))
    assert [f.packets for f in flows] == [2, 1]
    assert flows[0].key == flows[1].key
    assert flows[1].start_ns - flows[0].start_ns == 61_000_000_000


def test_expire_closes_quiet_flows_on_the_gateway_clock() -> None:
    assembler = FlowAssembler(CONFIG)
    assembler.add_parsed(parse_raw(raw([tcp_frame(b"a")], [0.0])))
    assert assembler.expire() == []
    later = raw([udp_frame(b"z", DEVICE, REMOTE)], [70.0], start_seq=1)
    assembler.add_parsed(parse_raw(later))
    done = assembler.expire()  # the gateway's clock is now 70 s: the TCP flow is over
    assert [f.key.proto for f in done] == [6]
    assert [k.proto for k in assembler.open] == [17]


def test_redelivered_packets_are_skipped() -> None:
    assembler = FlowAssembler(CONFIG)
    batch = raw([tcp_frame(b"a"), tcp_frame(b"b")], [0.0, 0.1])
    assembler.add_parsed(parse_raw(batch))
    assembler.add_parsed(parse_raw(batch))  # at-least-once delivery: the same message again
    (flow,) = assembler.close_all()
    assert flow.packets == 2
    assert assembler.stats.duplicates == 2


def test_state_codec_round_trip_and_garbage() -> None:
    frames = [tcp_frame(b"abc"), tcp_frame(b"", out=False)]
    (flow,) = closed_flows(raw(frames, [0.0, 0.2]))
    flow.labels[2] += 5
    back = FlowState.from_bytes(flow.to_bytes())
    assert back == flow
    np.testing.assert_array_equal(back.row(), flow.row())
    with pytest.raises(FlowStateError):
        FlowState.from_bytes(b"\x01\x02")
    with pytest.raises(FlowStateError):
        FlowState.from_bytes(flow.to_bytes() + b"x")
    key = FlowKey("gw|with|bars", DEVICE, REMOTE, 6, 1, 2)
    assert parse_key(key.text()) == key


def test_matrix_rows_context_and_start_offsets() -> None:
    frames = [tcp_frame(b"a", rport=p) for p in (1001, 1002, 1003)]
    flows = closed_flows(raw(frames, [0.0, 2.0, 5.0]))
    assert [f.key.remote_port for f in flows] == [1001, 1002, 1003]
    mat = rows_of([flows[2], flows[1], flows[0]], rows=6)
    assert mat.shape == (6, ROW_LEN)
    assert mat[:, 0].tolist() == [1, 1, 1, 0, 0, 0]
    assert mat[:, 1].tolist()[:3] == [0.0, 3.0, 5.0]
    np.testing.assert_array_equal(mat[3], empty_row())
    device = np.zeros(3, np.int64)
    start = np.array([f.start_ns for f in flows])
    ctx = link_context(device, start, 5)
    assert ctx[2].tolist() == [1, 0, -1, -1, -1]
    assert ctx[0].tolist() == [-1] * 5


def test_dataset_matrices_match_the_online_rows(tmp_path: Path) -> None:
    from amlhp.flows.dataset import FlowDataset, build_dataset
    from tests.support.synth import Record, write_pcap

    frames = [tcp_frame(b"x" * i, rport=1000 + i) for i in range(4)]
    records = [Record(f, ts_ns=T0 + i * 1_000_000_000) for i, f in enumerate(frames)]
    (tmp_path / "dev").mkdir()
    path = write_pcap(tmp_path / "dev" / "c.pcap", records)
    ds = build_dataset([path], [0], ["dev"], CONFIG)
    ds.save(tmp_path / "ds.npz")
    ds = FlowDataset.load(tmp_path / "ds.npz")
    flows = closed_flows(raw(frames, [0, 1, 2, 3], gateway=str(path)))
    np.testing.assert_array_equal(
        matrices(ds, np.array([3]))[0], rows_of([flows[3], flows[2], flows[1], flows[0]], 6)
    )


def test_config_is_checked() -> None:
    with pytest.raises(FlowConfigError):
        FlowConfig(local_nets=("not-a-net",))
    with pytest.raises(FlowConfigError):
        FlowConfig(lifetime_s=0)
    assert FlowConfig(local_nets=("10.1.2.3/8",)).local_nets == ("10.0.0.0/8",)
    assert T0 > 0
