"""The web attacks, run for real for a few seconds each: labels and what the packets carry.

One lab run (sqlmap, dirb, curl and slowhttptest against lighttpd + PHP) is shared by the
module; the captures are then read with dpkt, so that each test checks the attack itself
(injection payloads, distinct paths with 404s, held connections, answers of the app) and
not only its packet counts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import dpkt
import pytest

from amlhp.lab.topology import Topology
from amlhp.lab.verify import verify_run
from tests.support.lab import Segment, attacks_alone, require_lab, segments

pytestmark = [pytest.mark.slow, pytest.mark.live]

WEB = ("web_sqli", "web_dirbrute", "web_exploit", "slow_dos")
T = Topology()
KERNEL = IPv4Address("127.0.0.1")

Run = tuple[Path, dict[str, Any]]


def tcp_segments(path: Path) -> Iterator[Segment]:
    """The TCP segments of a capture."""
    return (seg for seg in segments(path) if seg.proto == "tcp")


def requests_to(path: Path, address: IPv4Address, port: int) -> list[str]:
    """Request lines (``GET /x HTTP/1.1``) sent to ``address:port``, URL-decoded."""
    lines = []
    for seg in tcp_segments(path):
        if seg.dst == address and seg.dport == port and seg.payload[:5] in (b"GET /", b"POST "):
            first = seg.payload.split(b"\r\n", 1)[0].decode("latin-1")
            lines.append(unquote(unquote(first)))
    return lines


def answers_from(path: Path, address: IPv4Address, port: int) -> bytes:
    """Everything ``address:port`` sent back, concatenated."""
    return b"".join(
        seg.payload for seg in tcp_segments(path) if seg.src == address and seg.sport == port
    )


@pytest.fixture(scope="module")
def web_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A short lab run of the four web scenarios (no benign background)."""
    require_lab()
    out = tmp_path_factory.mktemp("lab-web")
    # three attempts: another lab run may hold the machine for a while
    return out, attacks_alone(out, "web-run", WEB, 300, "pytest web run", attempts=3)


def capture(run: Run, scenario: str) -> Path:
    out, manifest = run
    (entry,) = [e for e in manifest["files"] if e["scenario"] == scenario]
    return out / entry["file"]


def test_each_web_scenario_has_its_own_packets_only(web_run: Run) -> None:
    _, manifest = web_run
    assert [e["scenario"] for e in manifest["files"]] == list(WEB)
    for entry in manifest["files"]:
        assert entry["label"] == entry["scenario"]
        assert entry["classes"].get(entry["label"], 0) >= 100, entry
        assert set(entry["classes"]) == {entry["label"]}, entry  # no background traffic


def test_verify_accepts_the_run(web_run: Run) -> None:
    out, _ = web_run
    report = verify_run(out)
    assert report.ok, "\n".join(report.lines())


def test_every_packet_touches_the_marker(web_run: Run) -> None:
    markers = {
        "web_sqli": T.sqli_victim,
        "web_dirbrute": T.dirbrute_victim,
        "web_exploit": T.attacker(13),
        "slow_dos": T.slowdos_victim,
    }
    for scenario, marker in markers.items():
        pairs = Counter(frozenset((s.src, s.dst)) for s in tcp_segments(capture(web_run, scenario)))
        assert pairs, scenario
        assert all(marker in pair for pair in pairs), (scenario, pairs)


def test_sqlmap_sends_injection_payloads_and_gets_the_database(web_run: Run) -> None:
    path = capture(web_run, "web_sqli")
    lines = requests_to(path, T.sqli_victim, T.ports.http)
    assert len(lines) >= 20
    assert {seg.src for seg in tcp_segments(path) if seg.dst == T.sqli_victim} == {KERNEL}
    text = "\n".join(lines).upper()
    assert "UNION ALL SELECT" in text
    assert re.search(r"\bAND \d+=\d+", text)
    assert "/API/DEVICE.PHP?ID=" in text
    answers = answers_from(path, T.sqli_victim, T.ports.http)
    assert b"SQLite error" in answers  # the app shows its errors: sqlmap learns the DBMS
    assert b"thermo-livingroom" in answers


def test_dirb_asks_for_many_distinct_paths_mostly_missing(web_run: Run) -> None:
    path = capture(web_run, "web_dirbrute")
    lines = requests_to(path, T.dirbrute_victim, T.ports.http)
    paths = {line.split()[1] for line in lines}
    assert len(paths) >= 50
    assert len(paths) >= 0.9 * len(lines)  # each word once (plus dirb's own probes)
    answers = answers_from(path, T.dirbrute_victim, T.ports.http)
    statuses = Counter(re.findall(rb"HTTP/1\.1 (\d{3})", answers))
    assert statuses[b"404"] >= 0.8 * sum(statuses.values())
    assert statuses[b"404"] >= 40
    assert statuses[b"200"] + statuses[b"301"] >= 1  # the app's admin/, robots.txt ...


def test_curl_tries_traversal_and_injection_and_the_app_answers(web_run: Run) -> None:
    path = capture(web_run, "web_exploit")
    lines = requests_to(path, T.services, T.ports.webapp)
    assert len(lines) >= 30
    sources = {s.src for s in tcp_segments(path) if s.dst == T.services}
    assert sources == {T.attacker(13)}
    traversal = [line for line in lines if "../" in line or "..\\/" in line]
    injection = [line for line in lines if "/diag.php?host=" in line]
    assert traversal
    assert injection
    assert any(re.search(r"host=[^ ]*(;|\||\$\(|`|&&)", line) for line in injection)
    answers = answers_from(path, T.services, T.ports.webapp)
    assert b"HTTP/1.1 200" in answers
    # both holes work: /etc/passwd read through the traversal, a command run as www-data
    assert b"root:x:0:0:" in answers or b"Linux version" in answers or b"PRETTY_NAME" in answers
    assert re.search(rb"uid=33\(www-data\)|www-data|Linux \S+ \d", answers)


def test_slowhttptest_holds_many_connections_open(web_run: Run) -> None:
    path = capture(web_run, "slow_dos")
    opened: dict[int, float] = {}
    closed: dict[int, float] = {}
    for seg in tcp_segments(path):
        if seg.dst != T.slowdos_victim or seg.dport != T.ports.http:
            continue
        if seg.flags & dpkt.tcp.TH_SYN and not seg.flags & dpkt.tcp.TH_ACK:
            opened.setdefault(seg.sport, seg.ts)
        if seg.flags & (dpkt.tcp.TH_FIN | dpkt.tcp.TH_RST):
            closed.setdefault(seg.sport, seg.ts)
    assert len(opened) >= 25
    last = max(max(opened.values()), *closed.values())
    held = [p for p, t0 in opened.items() if closed.get(p, last) - t0 >= 3.0]
    assert len(held) >= 20, (len(opened), len(held))
    # slowloris: requests whose header block never ends (only the probes' are complete),
    # continued a random header line at a time
    sent = [s.payload for s in tcp_segments(path) if s.dst == T.slowdos_victim and s.payload]
    unfinished = [p for p in sent if p.startswith(b"GET /") and b"\r\n\r\n" not in p]
    assert len(unfinished) >= 20
    assert sum(p.startswith(b"X-") for p in sent) >= 20
