"""What a lab scenario is: a class label, a marker address and bounded runs of a real tool.

A scenario knows its class label, its *marker* address (see :mod:`amlhp.lab.labels`) and
how to build one bounded run of its tool for a number of packets still wanted. Every run
is bounded twice: by a packet or attempt count given to the tool and by a time limit after
which the lab stops it. The attack modules (:mod:`amlhp.lab.attacks_classic` and the
others) build the runs; :mod:`amlhp.lab.scenarios` lists every scenario once.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from amlhp.lab.exceptions import LabError
from amlhp.lab.safety import loopback_address
from amlhp.lab.topology import Topology

BENIGN = "benign"

#: user names and passwords of the brute-force runs: Mirai's default-credential list style
USERS = ("admin", "root", "user", "support", "iot", "pi", "ubnt", "guest", "sensor01", "hub")
PASSWORDS = (
    "admin", "root", "12345", "123456", "password", "1234", "default", "support", "user",
    "xc3511", "vizxv", "888888", "xmhdipc", "juantech", "54321", "7ujMko0admin", "system",
    "ikwb", "dreambox", "realtek", "00000000", "1111111", "smcadmin", "klv123", "klv1234",
    "Zte521", "hi3518", "jvbzd", "anko", "zlxx.", "7ujMko0vizxv", "1111", "666666", "meinsm",
    "raspberry", "ubnt", "changeme", "letmein", "qwerty", "iot2020", "sensor", "mqtt",
)  # fmt: skip


@dataclass(frozen=True)
class ToolRun:
    """One bounded invocation of an attack tool."""

    argv: list[str]
    timeout_s: float
    cwd: Path | None = None


@dataclass
class AttackContext:
    """What a scenario needs to build its next run."""

    topology: Topology
    workdir: Path
    rng: random.Random
    iteration: int
    time_left_s: float
    seed: int


@dataclass(frozen=True)
class Scenario:
    """A named traffic scenario; ``build`` is None for the benign one."""

    name: str
    label: str
    tool: str
    description: str
    marker: Callable[[Topology], IPv4Address] | None
    target: Callable[[Topology], IPv4Address] | None
    build: Callable[[Scenario, AttackContext, int], ToolRun] | None
    #: rough packets one run produces per unit of its count (to size runs)
    packets_per_unit: float = 2.0
    #: stop a run once the class has its packets (False: a run always completes, so that
    #: every phase of a multi-phase scan is in the capture)
    stop_at_budget: bool = True
    #: a network the scenario makes for itself (namespaces, veth pairs) while it runs; the
    #: context yields host interfaces whose traffic is captured besides ``lo``
    network: Callable[[Topology], AbstractContextManager[list[str]]] | None = None

    def marker_address(self, topology: Topology) -> IPv4Address | None:
        return None if self.marker is None else loopback_address(self.marker(topology))

    def target_address(self, topology: Topology) -> IPv4Address | None:
        return None if self.target is None else loopback_address(self.target(topology))

    def next_run(self, ctx: AttackContext, packets_wanted: int) -> ToolRun:
        if self.build is None:
            raise LabError(f"scenario {self.name} runs no tool")
        # Validate again right before the command is built: the rule is absolute.
        self.target_address(ctx.topology)
        self.marker_address(ctx.topology)
        return self.build(self, ctx, packets_wanted)


def units(scenario: Scenario, packets: int, lo: int, hi: int) -> int:
    """The tool's count (packets, ports, attempts) for about ``packets`` packets."""
    return max(lo, min(hi, math.ceil(packets / scenario.packets_per_unit)))


def attacker(index: int) -> Callable[[Topology], IPv4Address]:
    """The marker of a scenario whose tool binds the ``index``-th attacker address."""
    return lambda t: t.attacker(index)


def services(t: Topology) -> IPv4Address:
    return t.services


def time_limit(ctx: AttackContext, cap: float) -> float:
    """A run's time limit: at most ``cap`` seconds and what the scenario has left."""
    return max(1.0, min(cap, ctx.time_left_s))


def run_seed(ctx: AttackContext) -> str:
    """A driver's ``--seed``: another one for each run of each lab seed."""
    return str(ctx.seed * 100 + ctx.iteration)


def driver_run(module: str, seconds: float, *args: str) -> ToolRun:
    """A run of one of the lab's own driver modules (``python -m amlhp.lab.<module>``).

    The driver stops itself after ``--seconds``; the lab's time limit is 5 s later, so a
    driver that overruns is stopped but one that cleans up in time is not.
    """
    argv = [sys.executable, "-m", f"amlhp.lab.{module}", *args, "--seconds", f"{seconds:.0f}"]
    return ToolRun(argv, timeout_s=seconds + 5)


def wordlists(ctx: AttackContext, attempts: int, name: str) -> tuple[Path, Path]:
    """Small user and password lists for about ``attempts`` login attempts."""
    users = list(USERS)
    ctx.rng.shuffle(users)
    n_users = max(1, min(len(users), math.ceil(attempts / len(PASSWORDS))))
    n_pass = max(1, min(len(PASSWORDS), math.ceil(attempts / n_users)))
    passwords = ctx.rng.sample(PASSWORDS, n_pass)
    folder = ctx.workdir / "wordlists"
    folder.mkdir(parents=True, exist_ok=True)
    user_file = folder / f"{name}-users-{ctx.iteration}.txt"
    pass_file = folder / f"{name}-passwords-{ctx.iteration}.txt"
    user_file.write_text("\n".join(users[:n_users]) + "\n")
    pass_file.write_text("\n".join(passwords) + "\n")
    return user_file, pass_file
