"""Capture readers: pcap and pcapng variants, damage, link types, and the public captures."""

from __future__ import annotations

import csv
import struct
from pathlib import Path

import dpkt
import pytest

from amlhp.encoders import linktypes as lt
from amlhp.encoders.exceptions import CaptureError
from amlhp.encoders.fast import encode_batch
from amlhp.encoders.readers import CaptureInfo, iter_packets, iter_raw_batches, read_capture_info
from tests.support import synth

TS = 1_700_000_000_123_456_789
FRAMES = [synth.ethernet(synth.ipv4(synth.tcp(b"a" * i), 6)) for i in range(7)]


def records(frames: list[bytes] = FRAMES) -> list[synth.Record]:
    return [synth.Record(frame, TS + i * 1_000_000_007) for i, frame in enumerate(frames)]


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
@pytest.mark.parametrize("nanosecond", [False, True], ids=["us", "ns"])
def test_pcap_variants(tmp_path: Path, big_endian: bool, nanosecond: bool) -> None:
    path = synth.write_pcap(
        tmp_path / "x.pcap", records(), nanosecond=nanosecond, big_endian=big_endian
    )
    info = CaptureInfo(str(path))
    packets = list(iter_packets(path, info))
    assert [p.data for p in packets] == FRAMES
    expected_ts = [r.ts_ns if nanosecond else r.ts_ns // 1000 * 1000 for r in records()]
    assert [p.ts_ns for p in packets] == expected_ts
    assert {p.linktype for p in packets} == {lt.ETHERNET}
    assert (info.format, info.packets, info.warnings) == ("pcap", 7, {})
    assert info.bytes_read == path.stat().st_size


def test_pcap_fcs_bits_in_linktype_are_ignored(tmp_path: Path) -> None:
    path = synth.write_pcap(tmp_path / "x.pcap", records(), linktype=lt.ETHERNET | 0x14000000)
    assert {p.linktype for p in iter_packets(path)} == {lt.ETHERNET}


def test_wire_length_and_snaplen(tmp_path: Path) -> None:
    frame = FRAMES[6]
    path = synth.write_pcap(tmp_path / "x.pcap", [synth.Record(frame[:40], TS, wire_len=1514)])
    (batch,) = iter_raw_batches(path)
    assert batch.column("wire_len").to_pylist() == [1514]
    assert batch.column("data").to_pylist() == [frame[:40]]
    (short,) = iter_raw_batches(path, snaplen=20)
    assert short.column("data").to_pylist() == [frame[:20]]
    assert short.column("wire_len").to_pylist() == [1514]


def test_batches_gateway_and_sequence(tmp_path: Path) -> None:
    path = synth.write_pcap(tmp_path / "x.pcap", records())
    batches = list(iter_raw_batches(path, gateway="gw-3", batch_size=3, start_seq=100))
    assert [b.num_rows for b in batches] == [3, 3, 1]
    assert [s for b in batches for s in b.column("seq").to_pylist()] == list(range(100, 107))
    assert {g for b in batches for g in b.column("gateway").to_pylist()} == {"gw-3"}
    with pytest.raises(ValueError, match="batch_size"):
        list(iter_raw_batches(path, batch_size=0))


def test_pcapng_with_several_interfaces_and_link_types(tmp_path: Path) -> None:
    ip = synth.ipv4(synth.udp(b"multi"), 17)
    interfaces = [
        synth.Interface(lt.ETHERNET),  # default microseconds
        synth.Interface(lt.LINUX_SLL, tsresol=9),  # nanoseconds
        synth.Interface(lt.RAW, tsresol=0x80 | 20, tsoffset=1000),  # 2**-20 s, offset
        synth.Interface(lt.LINUX_SLL2, tsresol=3),  # milliseconds
    ]
    frames = [synth.ethernet(ip), synth.sll(ip), ip, synth.sll2(ip)]
    recs = [synth.Record(frame, TS, interface=i) for i, frame in enumerate(frames)] + [
        synth.Record(frames[1], TS + 1, interface=1)
    ]
    path = synth.write_pcapng(tmp_path / "multi.pcapng", interfaces, recs)
    info = CaptureInfo(str(path))
    (batch,) = iter_raw_batches(path, info=info)
    assert batch.column("linktype").to_pylist() == [1, 113, 101, 276, 113]
    ts = batch.column("ts_ns").to_pylist()
    assert ts[0] == TS // 1000 * 1000
    assert ts[1] == TS
    assert ts[4] == TS + 1
    assert abs(ts[2] - TS) < 2**-20 * 1e9 + 1  # binary resolution, exact integer maths
    assert ts[3] == TS // 1_000_000 * 1_000_000
    assert info.linktypes == {1: 1, 113: 2, 101: 1, 276: 1}
    encoded = encode_batch(batch)
    assert encoded.column("status").to_pylist() == ["ok"] * 5
    assert len(set(encoded.column("header").to_pylist())) == 1  # same packet, any link


def test_pcapng_big_endian_and_two_sections(tmp_path: Path) -> None:
    first = synth.pcapng_section([synth.Interface(lt.ETHERNET)], records(FRAMES[:2]))
    second = synth.pcapng_section(
        [synth.Interface(lt.RAW, tsresol=9)],
        [synth.Record(synth.ipv4(b"", 1), TS)],
        big_endian=True,
    )
    path = tmp_path / "two.pcapng"
    path.write_bytes(first + second)
    packets = list(iter_packets(path))
    assert [p.linktype for p in packets] == [1, 1, 101]
    assert packets[2].ts_ns == TS


def test_pcapng_simple_and_obsolete_packet_blocks(tmp_path: Path) -> None:
    order = "<"
    shb = synth.pcapng_section([synth.Interface(lt.ETHERNET, snaplen=20)], [])
    frame = FRAMES[3]
    spb = synth.pcapng_block(order, 3, struct.pack(order + "I", len(frame)) + frame[:20])
    pb_body = struct.pack(order + "HHIIII", 0, 0, 0, 5_000_000, len(frame), len(frame)) + frame
    pb = synth.pcapng_block(order, 2, pb_body)
    path = tmp_path / "old.pcapng"
    path.write_bytes(shb + spb + pb)
    packets = list(iter_packets(path))
    assert [(p.data, p.wire_len, p.ts_ns) for p in packets] == [
        (frame[:20], len(frame), 0),
        (frame, len(frame), 5_000_000_000),
    ]


def test_unknown_link_type_is_reported_once_per_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = synth.write_pcap(tmp_path / "x.pcap", records(), linktype=147)
    info = CaptureInfo(str(path))
    with caplog.at_level("WARNING"):
        batches = list(iter_raw_batches(path, info=info))
    assert info.unknown_linktypes == {147: 7}
    (warning,) = info.warnings.values()
    assert (warning.code, warning.linktype, warning.count) == ("unknown_linktype", 147, 7)
    assert "147" in warning.message
    assert sum("147" in r.getMessage() for r in caplog.records) == 1
    statuses = encode_batch(batches[0]).column("status").to_pylist()
    assert statuses == ["unknown_linktype"] * 7  # kept and counted, not dropped


def test_pcapng_packet_on_undescribed_interface(tmp_path: Path) -> None:
    recs = [synth.Record(FRAMES[0], TS, interface=0), synth.Record(FRAMES[1], TS, interface=5)]
    path = synth.write_pcapng(tmp_path / "x.pcapng", [synth.Interface(lt.ETHERNET)], recs)
    info = read_capture_info(path)
    assert info.linktypes == {lt.ETHERNET: 1, lt.UNKNOWN: 1}
    assert {w.code for w in info.warnings.values()} == {"unknown_interface", "unknown_linktype"}


def test_truncated_last_record_keeps_its_bytes(tmp_path: Path) -> None:
    path = synth.write_pcap(tmp_path / "x.pcap", records())
    path.write_bytes(path.read_bytes()[:-5])
    info = CaptureInfo(str(path))
    packets = list(iter_packets(path, info))
    assert len(packets) == 7
    assert packets[-1].data == FRAMES[-1][:-5]
    assert [w.code for w in info.warnings.values()] == ["truncated_record"]


def test_file_ending_inside_a_record_header(tmp_path: Path) -> None:
    path = synth.write_pcap(tmp_path / "x.pcap", records())
    path.write_bytes(path.read_bytes() + b"\x00" * 7)
    info = read_capture_info(path)
    assert info.packets == 7
    assert [w.code for w in info.warnings.values()] == ["truncated_file"]


def test_absurd_record_length_stops_reading(tmp_path: Path) -> None:
    data = bytearray(synth.write_pcap(tmp_path / "x.pcap", records()).read_bytes())
    second = 24 + 16 + len(FRAMES[0])
    data[second + 8 : second + 12] = struct.pack("<I", 0x7FFFFFFF)
    path = tmp_path / "bad.pcap"
    path.write_bytes(bytes(data))
    info = read_capture_info(path)
    assert info.packets == 1
    assert [w.code for w in info.warnings.values()] == ["bad_record"]


def test_corrupt_pcapng_block_length(tmp_path: Path) -> None:
    interfaces = [synth.Interface(lt.ETHERNET)]
    last_block = len(synth.pcapng_section(interfaces, records()[:6]))
    data = bytearray(synth.pcapng_section(interfaces, records()))
    data[last_block + 4 : last_block + 8] = struct.pack("<I", 7)  # not a multiple of 4
    path = tmp_path / "bad.pcapng"
    path.write_bytes(bytes(data))
    info = read_capture_info(path)
    assert info.packets == 6
    assert [w.code for w in info.warnings.values()] == ["bad_block"]


@pytest.mark.parametrize(
    "content", [b"", b"abc", b"hello, this is not a capture file at all"], ids=["empty", "3", "txt"]
)
def test_not_a_capture(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(content)
    with pytest.raises(CaptureError, match="not a pcap or pcapng file"):
        list(iter_raw_batches(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="cannot read"):
        list(iter_packets(tmp_path / "nope.pcap"))


def _manifest(public_data: Path) -> dict[str, dict[str, str]]:
    with open(public_data / "MANIFEST.csv", encoding="utf-8") as fh:
        return {row["path"]: row for row in csv.DictReader(fh)}


@pytest.mark.public_data
def test_public_captures_match_the_manifest(public_data: Path, public_captures: list[Path]) -> None:
    """Packet counts and link types as MANIFEST.csv lists them (counted there with dpkt)."""
    manifest = _manifest(public_data)
    checked = 0
    sentinel_packets = 0
    for path in public_captures:
        info = read_capture_info(path)
        assert not info.warnings, (path, info.warnings)
        rel = path.relative_to(public_data).as_posix()
        if rel.startswith("iot_sentinel/"):
            sentinel_packets += info.packets
        if rel in manifest:
            assert info.packets == int(manifest[rel]["packets"]), rel
            assert set(info.linktypes) == {int(manifest[rel]["dlt"])}, rel
            checked += 1
    assert checked >= 10
    sentinel = next(row for key, row in manifest.items() if key.startswith("iot_sentinel/"))
    assert sentinel_packets == int(sentinel["packets"])


@pytest.mark.public_data
@pytest.mark.slow
def test_public_captures_read_like_dpkt(public_captures: list[Path]) -> None:
    """Same bytes and timestamps (to the microsecond) as dpkt's own readers."""
    for path in public_captures:
        ours = list(iter_packets(path))
        with open(path, "rb") as fh:
            theirs = list(dpkt.pcap.UniversalReader(fh))
        assert len(ours) == len(theirs), path
        for mine, (ts, buf) in zip(ours, theirs, strict=True):
            assert mine.data == buf
            assert abs(mine.ts_ns / 1e9 - ts) < 2e-6
