"""Property-based tests: random and mutated packets, captures and messages.

Whatever arrives, no exception escapes the readers (other than :class:`CaptureError` for a
file that is not a capture at all), the encoders or the deserialiser (other than
:class:`BatchDecodeError`); every input packet comes out once, encoded or with a reason,
and the fast encoder agrees with the reference on every packet.
"""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TypeVar

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amlhp.encoders import linktypes as lt
from amlhp.encoders.exceptions import BatchDecodeError, CaptureError
from amlhp.encoders.fast import encode_batch
from amlhp.encoders.layout import HEADER_LEN, EncoderConfig
from amlhp.encoders.prefix import max_needed_prefix, needed_prefix
from amlhp.encoders.readers import CaptureInfo, iter_raw_batches
from amlhp.encoders.reasons import ADDRESSED, REASON_NAMES
from amlhp.encoders.reference import encode_packet
from amlhp.wire import RAW, from_ipc, to_ipc
from tests.support import synth

T = TypeVar("T")
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LINKTYPES = [*sorted(lt.SUPPORTED), 147, lt.UNKNOWN]
CONFIGS = st.builds(
    EncoderConfig,
    payload_bytes=st.sampled_from([1, 7, 64, 100]),
    mask_fields=st.sampled_from(
        [(), ("ip.src", "ip.dst"), ("ports", "ip.options", "tcp.options", "udp.len")]
    ),
)


def _mostly(draw: st.DrawFn, usual: T, other: st.SearchStrategy[T]) -> T:
    """``usual`` 4 times in 5, else a draw from ``other``: keeps most packets plausible."""
    return usual if draw(st.integers(0, 4)) else draw(other)


@st.composite
def packets(draw: st.DrawFn) -> tuple[int, bytes]:
    """A plausible frame of any supported link type, then possibly broken on purpose."""
    proto = draw(st.sampled_from([6, 6, 6, 17, 17, 1, 2, 58, 47, draw(st.integers(0, 255))]))
    body = draw(st.binary(max_size=120))
    if proto == 6:
        options = draw(st.binary(max_size=40))
        offset = _mostly(draw, None, st.integers(0, 15))
        body = synth.tcp(body, options=options, data_offset=offset, flags=draw(st.integers(0, 255)))
    elif proto == 17:
        body = synth.udp(body, length=_mostly(draw, None, st.integers(0, 0xFFFF)))
    if draw(st.integers(0, 3)) == 0:  # IPv6 one time in four
        ip, ethertype, family = _ipv6(draw, proto, body), 0x86DD, 24
        family = draw(st.sampled_from(sorted(lt.AF_INET6)))
    else:
        ethertype, family = 0x0800, 2
        ip = synth.ipv4(
            body,
            proto,
            options=draw(st.binary(max_size=40)),
            flags=_mostly(draw, 2, st.integers(0, 7)),
            frag_offset=_mostly(draw, 0, st.sampled_from([1, 185, 0x1FFF])),
            version=_mostly(draw, 4, st.integers(0, 15)),
            ihl=_mostly(draw, None, st.integers(0, 15)),
            total_length=_mostly(draw, None, st.one_of(st.integers(0, 0xFFFF), st.integers(0, 80))),
        )
    kind = draw(st.sampled_from(["eth", "eth", "sll", "sll2", "null", "raw", "ipv4", "other"]))
    if kind == "eth":
        vlans = draw(
            st.lists(
                st.tuples(st.sampled_from(sorted(lt.VLAN_TPIDS)), st.integers(0, 0xFFFF)),
                max_size=_mostly(draw, 2, st.just(6)),
            )
        )
        ethertype = _mostly(
            draw, ethertype, st.sampled_from([0x0800, 0x86DD, 0x0806, 0x8100, 0x0050])
        )
        linktype, frame = lt.ETHERNET, synth.ethernet(ip, ethertype, vlans=vlans)
        frame += draw(st.binary(max_size=20))  # padding, FCS, trailers
    elif kind == "sll":
        linktype, frame = lt.LINUX_SLL, synth.sll(ip, _mostly(draw, ethertype, st.just(0x0806)))
    elif kind == "sll2":
        linktype, frame = lt.LINUX_SLL2, synth.sll2(ip, _mostly(draw, ethertype, st.just(0x8100)))
    elif kind == "null":
        family = _mostly(draw, family, st.sampled_from([2, 10, 30, 2 << 24, 0xFFFFFFFF, 7]))
        order = draw(st.sampled_from(["little", "big"]))
        linktype = draw(st.sampled_from([lt.NULL, lt.LOOP]))
        frame = synth.loopback(ip, family, byteorder=order)
    elif kind == "raw":
        linktype, frame = draw(st.sampled_from(sorted(lt.RAW_LINKS))), ip
    elif kind == "ipv4":
        linktype, frame = draw(st.sampled_from([lt.IPV4, lt.IPV6])), ip
    else:
        linktype, frame = draw(st.sampled_from([147, lt.UNKNOWN, 105])), ip
    return linktype, draw(mutated(frame))


def _ipv6(draw: st.DrawFn, upper: int, body: bytes) -> bytes:
    """An IPv6 packet around ``body`` with a drawn chain of extension headers (mostly none,
    sometimes more than the encoder walks)."""
    kinds = draw(
        st.lists(st.sampled_from([0, 43, 44, 60, 51]), max_size=_mostly(draw, 2, st.just(10)))
    )
    chain = b""
    for i, kind in enumerate(kinds):
        nxt = kinds[i + 1] if i + 1 < len(kinds) else upper
        chain += synth.ipv6_extension(
            kind,
            nxt,
            draw(st.binary(max_size=_mostly(draw, 14, st.just(300)))),
            offset=_mostly(draw, 0, st.sampled_from([1, 185, 0x1FFF])),
            more=draw(st.booleans()),
            ident=draw(st.integers(0, 0xFFFFFFFF)),
        )
    return synth.ipv6(
        body,
        kinds[0] if kinds else upper,
        extensions=chain,
        traffic_class=draw(st.integers(0, 255)),
        flow=draw(st.integers(0, 0xFFFFF)),
        hop_limit=draw(st.integers(0, 255)),
        version=_mostly(draw, 6, st.integers(0, 15)),
        payload_length=_mostly(draw, None, st.one_of(st.integers(0, 0xFFFF), st.integers(0, 80))),
    )


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` cut short and/or with some bytes overwritten (or untouched)."""
    out = bytearray(data)
    if draw(st.booleans()):
        return data
    for _ in range(draw(st.integers(0, 3))):
        if out:
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        out = out[: draw(st.integers(0, len(out)))]
    return bytes(out)


ANY_FRAMES = st.lists(
    st.one_of(packets(), st.tuples(st.sampled_from(LINKTYPES), st.binary(max_size=100))),
    min_size=0,
    max_size=25,
)


def _row_of_reference(linktype: int, frame: bytes, config: EncoderConfig) -> dict[str, object]:
    ref = encode_packet(linktype, frame, config)
    return {
        "status": ref.status,
        "header": ref.header,
        "payload": ref.payload,
        "src_ip": ref.src_ip,
        "dst_ip": ref.dst_ip,
        "src_port": ref.src_port,
        "dst_port": ref.dst_port,
        "proto": ref.proto,
        "arp_op": ref.arp_op,
        "arp_mac": ref.arp_mac,
    }


def _check_encoded(raw: pa.RecordBatch, encoded: pa.RecordBatch, config: EncoderConfig) -> None:
    assert encoded.num_rows == raw.num_rows
    rows = encoded.to_pylist()
    statuses = Counter(row["status"] for row in rows)
    assert sum(statuses.values()) == raw.num_rows
    assert set(statuses) <= set(REASON_NAMES)
    assert encoded.column("seq").to_pylist() == raw.column("seq").to_pylist()
    for row, linktype, frame in zip(
        rows, raw.column("linktype").to_pylist(), raw.column("data").to_pylist(), strict=True
    ):
        ok = row["status"] == "ok"
        assert (row["header"] is not None) == ok
        assert (row["payload"] is not None) == ok
        if ok:
            assert len(row["header"]) == HEADER_LEN
            assert len(row["payload"]) == config.payload_bytes
        assert (row["src_ip"] is not None) == (row["status"] in ADDRESSED)
        expected = _row_of_reference(linktype, frame, config)
        assert {k: row[k] for k in expected} == expected


@PROPERTY
@given(frames=ANY_FRAMES, config=CONFIGS)
def test_fast_equals_reference_on_random_and_mutated_packets(
    frames: list[tuple[int, bytes]], config: EncoderConfig
) -> None:
    raw = synth.raw_batch(frames)
    _check_encoded(raw, encode_batch(raw, config), config)


@PROPERTY
@given(frames=st.lists(packets(), min_size=1, max_size=20), cut=st.integers(0, 19))
def test_sliced_batches_encode_like_their_rows(frames: list[tuple[int, bytes]], cut: int) -> None:
    """A batch that is a slice of another (non-zero Arrow offset) reads the right bytes."""
    raw = synth.raw_batch(frames)
    cut = min(cut, raw.num_rows)
    part = raw.slice(cut)
    assert encode_batch(part).to_pylist() == encode_batch(raw).slice(cut).to_pylist()


@PROPERTY
@given(frame=packets(), payload_bytes=st.sampled_from([1, 16, 64, 200]))
def test_needed_prefix_loses_nothing(frame: tuple[int, bytes], payload_bytes: int) -> None:
    linktype, data = frame
    config = EncoderConfig(payload_bytes=payload_bytes)
    prefix = needed_prefix(linktype, data, payload_bytes)
    assert 0 <= prefix <= len(data)
    assert prefix <= max(max_needed_prefix(linktype, payload_bytes), 0) or prefix == len(data)
    assert encode_packet(linktype, data[:prefix], config) == encode_packet(linktype, data, config)


def _capture_bytes(frames: list[tuple[int, bytes]], pcapng: bool, big_endian: bool) -> bytes:
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "c"
        records = [
            synth.Record(data, 1_700_000_000_000_000_000 + i) for i, (_, data) in enumerate(frames)
        ]
        if pcapng:
            synth.write_pcapng(
                path, [synth.Interface(lt.ETHERNET, 9)], records, big_endian=big_endian
            )
        else:
            synth.write_pcap(path, records, nanosecond=True, big_endian=big_endian)
        return path.read_bytes()


@st.composite
def capture_files(draw: st.DrawFn) -> bytes:
    """Valid pcap/pcapng files, damaged ones, and random bytes."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=300))
    frames = draw(st.lists(packets(), max_size=8))
    data = _capture_bytes(frames, draw(st.booleans()), draw(st.booleans()))
    return draw(mutated(data))


@PROPERTY
@given(content=capture_files())
def test_readers_never_crash_and_count_every_packet(content: bytes) -> None:
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "capture.pcap"
        path.write_bytes(content)
        info = CaptureInfo(str(path))
        try:
            batches = list(iter_raw_batches(path, batch_size=3, info=info))
        except CaptureError:
            assert info.packets == 0
            return
    rows = sum(b.num_rows for b in batches)
    assert rows == info.packets == sum(info.linktypes.values())
    assert [s for b in batches for s in b.column("seq").to_pylist()] == list(range(rows))
    statuses: Counter[str] = Counter()
    for raw in batches:
        encoded = encode_batch(raw)
        statuses.update(encoded.column("status").to_pylist())
    assert sum(statuses.values()) == rows


def _valid_message(frames: list[tuple[int, bytes]], compression: str | None) -> bytes:
    return to_ipc(synth.raw_batch(frames), compression=compression)


@PROPERTY
@given(
    frames=st.lists(packets(), max_size=6),
    compression=st.sampled_from([None, "zstd", "lz4"]),
    data=st.data(),
)
def test_deserialiser_raises_only_batch_decode_error(
    frames: list[tuple[int, bytes]], compression: str | None, data: st.DataObject
) -> None:
    message = data.draw(
        st.one_of(
            mutated(_valid_message(frames, compression)),
            st.binary(max_size=400),
        )
    )
    try:
        batch = from_ipc(message, RAW)
    except BatchDecodeError:
        return
    batch.validate(full=True)
    encoded = encode_batch(batch)  # what survives decoding can be encoded
    assert encoded.num_rows == batch.num_rows


def test_unmutated_message_survives() -> None:
    """Guard for the property above: a valid message must decode, not just not crash."""
    frames = [(lt.ETHERNET, synth.ethernet(synth.ipv4(synth.tcp(b"x"), 6)))]
    batch = from_ipc(_valid_message(frames, "zstd"), RAW)
    assert batch.column("data").to_pylist() == [frames[0][1]]


@pytest.mark.parametrize("family", [struct.unpack("<I", b"\x00\x00\x00\x02")[0], 2])
def test_loopback_family_in_either_byte_order(family: int) -> None:
    """Companion of the NULL/LOOP property: 2 and 0x02000000 both mean AF_INET."""
    frame = family.to_bytes(4, "little") + synth.ipv4(synth.udp(b"z"), 17)
    assert encode_packet(lt.NULL, frame).status == "ok"
