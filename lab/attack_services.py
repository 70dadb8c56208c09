"""Placeholder being filled in this change (servers of the second round)."""

from __future__ import annotations

from pathlib import Path

from amlhp.lab.procs import ProcessGroup
from amlhp.lab.services import Endpoint
from amlhp.lab.topology import Topology


class AttackServices:
    def __init__(self, topology: Topology, workdir: Path) -> None:
        self.topology = topology
        self.workdir = workdir

    def endpoints(self) -> list[Endpoint]:
        return []

    def start(self, group: ProcessGroup, logs: Path) -> None:
        del group, logs

    def stop(self) -> None:
        return None
