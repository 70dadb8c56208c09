"""`amlhp encode` and `amlhp bench encode`, run through the real CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from amlhp.cli import build_app
from amlhp.encoders import linktypes as lt
from amlhp.encoders.arrays import model_inputs
from amlhp.encoders.reference import encode_packet
from tests.support import synth

FRAMES = [
    synth.ethernet(synth.ipv4(synth.tcp(b"mqtt"), 6)),
    synth.ethernet(synth.arp(), synth.ETHERTYPE_ARP),
    synth.ethernet(synth.ipv4(synth.udp(b"dns"), 17)),
    synth.ethernet(synth.ipv4(synth.tcp(), 6))[:40],
]


def captures(tmp_path: Path) -> list[Path]:
    pcap = synth.write_pcap(
        tmp_path / "a.pcap", [synth.Record(f, 1_000 + i) for i, f in enumerate(FRAMES)]
    )
    pcapng = synth.write_pcapng(
        tmp_path / "b.pcapng",
        [synth.Interface(lt.LINUX_SLL), synth.Interface(147)],
        [
            synth.Record(synth.sll(synth.ipv4(synth.udp(b"x"), 17)), interface=0),
            synth.Record(b"\x00" * 30, interface=1),
        ],
    )
    return [pcap, pcapng]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(), list(args), catch_exceptions=False)
    return result.exit_code, result.stdout


def test_encode_writes_one_row_per_packet_in_order(tmp_path: Path) -> None:
    files = captures(tmp_path)
    out = tmp_path / "out" / "enc.parquet"
    code, stdout = run("encode", *map(str, files), "--out", str(out))
    assert code == 0
    assert f"wrote 6 packets to {out}" in stdout
    lines = dict(line.split() for line in stdout.splitlines()[1:])
    assert lines == {
        "ok": "3",
        "unknown_linktype": "1",
        "arp": "1",
        "truncated_transport": "1",
    }
    table = pq.read_table(out)
    assert table.column("status").to_pylist() == [
        "ok", "arp", "ok", "truncated_transport", "ok", "unknown_linktype",
    ]  # fmt: skip
    assert table.column("seq").to_pylist() == list(range(6))
    assert table.column("source_file").to_pylist() == [str(files[0])] * 4 + [str(files[1])] * 2
    assert table.column("linktype").to_pylist() == [1, 1, 1, 1, 113, 147]
    header, _, ok = model_inputs(table)
    assert header[0].tobytes() == encode_packet(lt.ETHERNET, FRAMES[0]).header
    assert ok.sum() == 3
    assert not out.with_name("enc.parquet.partial").exists()


def test_encode_options_and_json(tmp_path: Path) -> None:
    out = tmp_path / "enc.parquet"
    code, stdout = run(
        "encode", str(tmp_path if captures(tmp_path) else ""), "--out", str(out),
        "-P", "16", "--mask", "ports", "--mask", "ip.ttl", "--json",
    )  # fmt: skip
    assert code == 0
    summary = json.loads(stdout)
    assert summary["packets"] == 6
    assert summary["files"] == 2
    assert summary["payload_bytes"] == 16
    assert "ip.ttl" in summary["mask_fields"]
    assert "ip.src" not in summary["mask_fields"]
    assert {w["code"] for w in summary["warnings"]} == {"unknown_linktype"}
    schema = pq.read_schema(out)
    assert schema.field("payload").type.byte_width == 16
    assert schema.metadata[b"mask_fields"].decode().split(",") == summary["mask_fields"]


def test_no_mask(tmp_path: Path) -> None:
    out = tmp_path / "enc.parquet"
    code, _stdout = run("encode", str(captures(tmp_path)[0]), "--out", str(out), "--no-mask")
    assert code == 0
    header, _, _ = model_inputs(pq.read_table(out))
    assert header[0, 12:16].tolist() == [192, 168, 1, 10]


def test_not_a_capture_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.pcap"
    bogus.write_text("not a capture")
    proc = subprocess.run(
        [sys.executable, "-m", "amlhp.cli", "encode", str(bogus), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "not a pcap or pcapng file" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.public_data
@pytest.mark.slow
def test_encode_every_public_capture(public_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "public.parquet"
    code, stdout = run("encode", str(public_data), "--out", str(out), "--json")
    assert code == 0
    summary = json.loads(stdout)
    with open(public_data / "MANIFEST.csv", encoding="utf-8") as fh:
        manifest = list(csv.DictReader(fh))
    listed = {row["path"]: row for row in manifest if "*" not in row["path"]}
    table = pq.read_table(out, columns=["source_file", "status", "src_ip"])
    assert table.num_rows == summary["packets"] == sum(summary["statuses"].values())
    per_file: dict[str, int] = {}
    per_status: dict[tuple[str, str], int] = {}
    for source, status, src in zip(
        table.column("source_file").to_pylist(),
        table.column("status").to_pylist(),
        table.column("src_ip").to_pylist(),
        strict=True,
    ):
        per_file[source] = per_file.get(source, 0) + 1
        kind = "ipv6" if status == "ok" and ":" in src else status
        per_status[source, kind] = per_status.get((source, kind), 0) + 1
    for rel, row in listed.items():
        path = str(public_data / rel)
        assert per_file[path] == int(row["packets"]), rel
        # every packet that is not IPv4 (IPv6, ARP, ... in the smart-home captures) is
        # encoded as IPv6 or refused as ARP or non-IP, as many as the manifest counts
        non_ipv4 = int(row["packets"]) - int(row["ipv4_packets"])
        others = sum(per_status.get((path, kind), 0) for kind in ("ipv6", "arp", "non_ip"))
        assert others == non_ipv4, rel
    assert summary["statuses"]["ok"] > 0.95 * table.num_rows
    assert summary["warnings"] == []


def test_bench_encode_smoke(tmp_path: Path) -> None:
    frames = [synth.Record(f) for f in FRAMES * 10]
    synth.write_pcap(tmp_path / "c.pcap", frames)
    code, stdout = run(
        "bench", "encode", "--data", str(tmp_path), "--packets", "0", "--batch-size", "8",
        "--repeat", "2", "--reference-packets", "16", "--json",
    )  # fmt: skip
    assert code == 0
    result = json.loads(stdout)
    assert result["packets"] == 40
    assert result["batches"] == 5
    assert len(result["fast_runs_pps"]) == 2
    assert result["fast_pps"] > 0
    assert result["reference_packets"] == 16
    assert result["reference_pps"] > 0
    assert result["statuses"] == {"ok": 20, "arp": 10, "truncated_transport": 10}
