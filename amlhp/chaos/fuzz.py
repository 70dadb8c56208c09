"""Fuzzed traffic for the fault suite: mutated frames in a capture, garbage on the raw topic.

Real gateways see broken frames (truncated captures, bit errors, hostile packets), and a
raw topic can receive anything a misconfigured producer writes. Both must end as a
verdict or a dead letter with a reason, never as a crash of a stage. The frames are
written to a pcap that the scenario's tap replays at the fixed rate like any capture, so
they travel the same path as real traffic: tap -> raw batch -> encoder -> scorer.

Each frame is one of the demo capture's frames after one mutation, chosen at random with
a fixed seed: bit flips, truncation anywhere (to zero bytes), random bytes after the
headers, a random IPv4/IPv6 header length or version, random bytes of random length, or a
frame longer than any MTU.
"""

from __future__ import annotations

import itertools
import random
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from amlhp.encoders.readers import iter_packets

#: the garbage messages a scenario writes straight to the raw topic (no tap): empty, not
#: Arrow, Arrow's magic then nonsense, JSON, a truncated real batch is added by the run
GARBAGE: tuple[bytes, ...] = (
    b"",
    b"\xff" * 100,
    b"ARROW1\x00\x00 not really",
    b'{"json": true}',
    bytes(range(256)) * 4,
)

Mutation = Callable[[random.Random, bytes], bytes]


def _flip_bits(rng: random.Random, frame: bytes) -> bytes:
    if not frame:
        return frame
    out = bytearray(frame)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _truncate(rng: random.Random, frame: bytes) -> bytes:
    return frame[: rng.randint(0, len(frame))]


def _random_tail(rng: random.Random, frame: bytes) -> bytes:
    keep = min(len(frame), rng.choice((14, 34, 54)))
    return frame[:keep] + rng.randbytes(rng.randint(0, 200))


def _ip_header_lies(rng: random.Random, frame: bytes) -> bytes:
    """Ethernet then IP: the version/IHL byte and the total length set at random."""
    if len(frame) < 18:
        return frame
    out = bytearray(frame)
    out[14] = rng.randrange(256)
    out[16:18] = rng.randrange(65536).to_bytes(2, "big")
    return bytes(out)


def _noise(rng: random.Random, frame: bytes) -> bytes:
    del frame
    return rng.randbytes(rng.randint(0, 1600))


def _jumbo(rng: random.Random, frame: bytes) -> bytes:
    return frame + rng.randbytes(rng.randint(9000, 20000))


MUTATIONS: tuple[Mutation, ...] = (
    _flip_bits,
    _truncate,
    _random_tail,
    _ip_header_lies,
    _noise,
    _jumbo,
)


def fuzzed_frames(base: Path, count: int, seed: int = 17) -> Iterator[tuple[int, bytes]]:
    """``count`` (linktype, frame) pairs: ``base``'s frames, cycled, each mutated once."""
    rng = random.Random(seed)
    frames = [(p.linktype, p.data) for p in iter_packets(base)]
    if not frames:
        raise ValueError(f"{base} holds no frames to fuzz")
    for i in range(count):
        linktype, frame = frames[i % len(frames)]
        yield linktype, rng.choice(MUTATIONS)(rng, frame)


def write_fuzzed_capture(base: Path, out: Path, count: int, seed: int = 17) -> Path:
    """A classic pcap (microsecond stamps, snaplen 65535) of ``count`` fuzzed frames.

    Written by hand rather than with ``dpkt.pcap.Writer`` because a frame longer than the
    snaplen must be kept whole: the tap truncates, the file must not. Frames of another
    link type than the first (a mixed base capture) are left out."""
    frames = fuzzed_frames(base, count, seed)
    first = next(frames, None)
    if first is None:
        raise ValueError("nothing to write")
    linktype = first[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
        ts = 1_700_000_000_000_000
        same = (frame for lt, frame in itertools.chain([first], frames) if lt == linktype)
        for n, frame in enumerate(same):
            sec, usec = divmod(ts + n * 100, 1_000_000)
            fh.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)))
            fh.write(frame)
    return out
