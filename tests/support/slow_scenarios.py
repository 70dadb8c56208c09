"""Short versions of the slow scenarios as a capture file, for the tests: their pace is
their capture clock (a tap that keeps capture timestamps replays 20 minutes at once).

Addresses are on 127.0.0.0/8, as the lab's; the packets are hand-built
(:mod:`tests.support.synth`), so nothing is sent anywhere.
"""

from __future__ import annotations

import random
import string
import struct
from pathlib import Path

from tests.support.synth import ETHERTYPE_ARP, Record, arp, ethernet, ipv4, tcp, udp, write_pcap

S = 1_000_000_000
T0 = 1_765_000_000 * S
GUESSER, SWEEPER, TUNNEL = "127.70.0.1", "127.70.0.2", "127.70.0.3"
SERVER, RESOLVER = "127.71.0.1", "127.71.0.53"
SYN, SYNACK, ACK, PSHACK, RST = 0x02, 0x12, 0x10, 0x18, 0x14


def _tcp(
    ts: int, src: str, dst: str, sport: int, dport: int, flags: int, data: bytes = b""
) -> Record:
    return Record(ethernet(ipv4(tcp(data, sport, dport, flags=flags), 6, src, dst)), ts)


def _guessing(minutes: int, every_s: float) -> list[Record]:
    """SSH password guessing: one short connection every ``every_s``."""
    out = []
    for k in range(int(minutes * 60 / every_s)):
        ts, sport = T0 + int(k * every_s * S), 40000 + k
        out += [
            _tcp(ts, GUESSER, SERVER, sport, 22, SYN),
            _tcp(ts + 1_000_000, SERVER, GUESSER, 22, sport, SYNACK),
            _tcp(ts + 2_000_000, GUESSER, SERVER, sport, 22, ACK),
            _tcp(ts + 40_000_000, GUESSER, SERVER, sport, 22, PSHACK, b"SSH-2.0-libssh\r\n"),
            _tcp(ts + 900_000_000, SERVER, GUESSER, 22, sport, RST),
        ]
    return out


def _sweep(hosts: int, every_s: float) -> list[Record]:
    """A slow sweep of telnet across hosts that do not answer."""
    return [
        _tcp(T0 + int(k * every_s * S) + 3, SWEEPER, f"127.72.0.{k + 1}", 33000, 23, SYN)
        for k in range(hosts)
    ]


def _dns_query(name: str, qid: int) -> bytes:
    labels = b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\x00"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\x00\x01\x00\x10"


def _tunnel(queries: int, every_s: float) -> list[Record]:
    """DNS exfiltration: TXT queries with long random labels under one domain."""
    rng = random.Random(11)
    alphabet = string.ascii_lowercase + string.digits
    out = []
    for k in range(queries):
        label = "".join(rng.choice(alphabet) for _ in range(32))
        payload = udp(_dns_query(f"{label}.x.example.net", k), 50000 + k % 1000, 53)
        out.append(
            Record(ethernet(ipv4(payload, 17, TUNNEL, RESOLVER)), T0 + int(k * every_s * S) + 7)
        )
    return out


ROUTER, ROUTER_MAC = "127.73.0.1", "00:11:22:33:44:01"
CAMERA, CAMERA_MAC = "127.73.0.20", "00:11:22:33:44:20"
SPOOFER, SPOOFER_MAC = "127.73.0.66", "de:ad:be:ef:00:66"


def _arp(ts: int, op: int, mac: str, sender: str, target: str) -> Record:
    return Record(ethernet(arp(op, mac, sender, target_ip=target), ETHERTYPE_ARP), ts)


def _poisoning(minutes: int) -> list[Record]:
    """ARP cache poisoning: a camera and its router ask for each other every 5 s; from
    the second minute a spoofer (which announced itself) tells the camera every 2 s that
    the router's address is at its MAC, for a minute."""
    out = [_arp(T0 + 11, 1, SPOOFER_MAC, SPOOFER, ROUTER)]
    for k in range(minutes * 12):
        ts = T0 + k * 5 * S + 13
        out += [
            _arp(ts, 1, CAMERA_MAC, CAMERA, ROUTER),
            _arp(ts + S, 2, ROUTER_MAC, ROUTER, CAMERA),
        ]
    out += [_arp(T0 + (60 + 2 * k) * S + 17, 2, SPOOFER_MAC, ROUTER, CAMERA) for k in range(30)]
    return out


def write_slow_scenarios(path: Path, minutes: int = 20, *, poisoning: bool = False) -> Path:
    """Guessing every 7 s, a sweep every 4 s, DNS queries every 3 s, over ``minutes``
    (and ARP cache poisoning in the second minute)."""
    records = _guessing(minutes, 7.0) + _sweep(min(60, minutes * 15), 4.0)
    records += _tunnel(minutes * 20, 3.0)
    if poisoning:
        records += _poisoning(minutes)
    records.sort(key=lambda r: r.ts_ns)
    return write_pcap(path, records)
