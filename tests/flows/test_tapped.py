"""A flow record holds what the product's taps send: the first P payload bytes of each
packet, offline (dataset, ``amlhp flows score``) as in the stream."""

from __future__ import annotations

from amlhp.encoders.prefix import tapped
from amlhp.flows.assembler import FlowAssembler, iter_closed
from amlhp.flows.record import FlowConfig

from .conftest import raw, tcp_frame


def test_records_keep_p_bytes_of_each_packet_and_equal_the_tapped_stream() -> None:
    payloads = [bytes(range(200)), b"short", bytes(100)]
    frames = [tcp_frame(p, out=i % 2 == 0) for i, p in enumerate(payloads)]
    full = raw(frames, [0.0, 0.1, 0.2])
    config = FlowConfig(local_nets=("192.168.0.0/16",), payload_bytes=64)

    (offline,) = list(iter_closed(FlowAssembler(config), [full]))
    assert [len(p) for p in offline.payloads] == [64, 5, 64]
    assert offline.payloads[0] == bytes(range(64))
    assert offline.total_bytes == sum(len(f) - 14 for f in frames)  # sizes are whole

    # what a tap with P = 64 publishes, assembled as the flow worker does
    sent = tapped(full, 64)
    assert all(len(d) < len(f) for d, f in zip(sent.column("data").to_pylist(), frames, strict=True)
               if len(f) > 14 + 20 + 20 + 64)  # fmt: skip
    (stream,) = list(iter_closed(FlowAssembler(config), [sent]))
    assert stream.payloads == offline.payloads
    assert (stream.row() == offline.row()).all()

    whole = FlowConfig(local_nets=("192.168.0.0/16",))
    (everything,) = list(iter_closed(FlowAssembler(whole), [full]))
    assert [len(p) for p in everything.payloads] == [200, 5, 100]
