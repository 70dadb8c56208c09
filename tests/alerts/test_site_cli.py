"""``amlhp model adapt`` on capture files, as an operator runs it: a window in which the
alert engine raises an incident is refused with the incident named (exit 2) unless
forced; a forced profile records what it overrode; ``amlhp score --sites`` serves it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from tests.support import synth

from .test_arp import ATTACKER, ATTACKER_MAC, START, frame

AMLHP = str(Path(sys.executable).with_name("amlhp"))


def amlhp(*args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AMLHP_")}
    return subprocess.run(
        [AMLHP, *args], capture_output=True, text=True, env=environ, timeout=300, check=False
    )


def window(path: Path, sweep: bool) -> Path:
    """A hub's MQTT publishes, and (``sweep``) an ARP sweep of the LAN beside them."""
    records = []
    for i in range(120):
        seg = synth.tcp(b"\x30\x14\x00\x05t/abc" + b"v" * 13, sport=40000 + i % 4, dport=1883)
        packet = synth.ethernet(synth.ipv4(seg, 6, src="10.9.0.2", dst="10.9.0.1"))
        records.append(synth.Record(packet, START + i * 50_000_000))
    if sweep:
        records += [
            synth.Record(frame(1, ATTACKER_MAC, ATTACKER, f"192.168.7.{i}"), START + i * 5 * 10**6)
            for i in range(1, 255)
        ]
    return synth.write_pcap(path, sorted(records, key=lambda r: r.ts_ns))


def test_a_window_with_an_incident_is_refused_then_forced(tmp_path: Path) -> None:
    sites = tmp_path / "sites"
    capture = window(tmp_path / "w.pcap", sweep=True)
    refused = amlhp("model", "adapt", "--gateway", "hub", str(capture), "--sites", str(sites))
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"refused: 1 incident(s) in the window: scan on {ATTACKER}" in refused.stderr
    assert "use --force" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not sites.exists() or not any(sites.iterdir()), "nothing written when refused"

    forced = amlhp(
        "model", "adapt", "--gateway", "hub", str(capture), "--sites", str(sites), "--force",
        "--json",
    )  # fmt: skip
    assert forced.returncode == 0, forced.stderr[-2000:]
    summary = json.loads(forced.stdout.strip().splitlines()[-1])
    assert summary["forced"] is True
    assert summary["refusals_overridden"][0].startswith("1 incident(s) in the window: scan")
    record = json.loads((sites / "hub.json").read_text())
    assert record["adapted_on"]["kind"] == "captures"
    assert record["adapted_on"]["files"][0]["sha256"]
    assert record["window"]["packets"] == 120 + 254

    # the quiet half of the same traffic, scored as the hub with its site and as another
    quiet = window(tmp_path / "q.pcap", sweep=False)
    for gateway in ("hub", "elsewhere"):
        out = tmp_path / f"{gateway}.parquet"
        done = amlhp("score", str(quiet), "-o", str(out), "-g", gateway, "--sites", str(sites))
        assert done.returncode == 0, done.stderr[-2000:]
    hub, elsewhere = (
        pq.read_table(tmp_path / "hub.parquet"),
        pq.read_table(tmp_path / "elsewhere.parquet"),
    )
    assert set(hub.column("model_version").to_pylist()) == {summary["version"]}
    assert "+site" not in elsewhere.column("model_version")[0].as_py()
    assert set(hub.column("decision").to_pylist()) == {"benign"}
    assert set(elsewhere.column("decision").to_pylist()) != {"benign"}


def test_a_window_needs_captures_or_a_time_range() -> None:
    done = amlhp("model", "adapt", "--gateway", "hub")
    assert done.returncode == 2
    assert "give capture files or --from and --to" in done.stderr
