"""``amlhp lab run``: services up, benign devices on, each scenario captured into its own pcap.

For every scenario the runner starts tcpdump, repeats bounded runs of the scenario's tool
until the capture holds the wanted number of packets of its class (counted live, by the
same address rules as the labels file) or the scenario's time limit is reached, waits a
moment for the last replies, and stops tcpdump. Then it writes ``labels.yaml`` and
``manifest.json`` beside the captures. Whatever happens (an error, Ctrl-C, SIGTERM),
every process it started is stopped before it returns.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import random
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from amlhp.digest import file_sha256
from amlhp.lab.benign import BenignTraffic, lab_credentials
from amlhp.lab.capture import Capture, merge_files
from amlhp.lab.exceptions import LabError
from amlhp.lab.labels import Labeler, MarkerRule
from amlhp.lab.pcapscan import PcapTail
from amlhp.lab.procs import ProcessGroup, exclusive_lab, interrupts_as_errors
from amlhp.lab.scenario import BENIGN
from amlhp.lab.scenarios import PROGRAMS, AttackContext, Scenario, select, service_sets
from amlhp.lab.services import LabServices
from amlhp.lab.tools import DEBIAN_PACKAGES, SERVER_PROGRAMS, TOOLS, missing_tools
from amlhp.lab.topology import PORT_PRESETS, SENSOR_NET, Topology

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "amlhp-lab-manifest/1"
GRACE_S = 1.5  # wait for the last replies of a scenario before stopping its capture
POLL_S = 0.5


@dataclass(frozen=True)
class Profile:
    """Packets wanted per scenario and the time limit of each scenario."""

    attack_packets: int
    benign_packets: int
    time_limit_s: float
    per_scenario: dict[str, int] = field(default_factory=dict)
    benign_rate: float = 1.0

    def wanted(self, scenario: Scenario) -> int:
        if scenario.name in self.per_scenario:
            return self.per_scenario[scenario.name]
        return self.benign_packets if scenario.name == BENIGN else self.attack_packets


PROFILES: dict[str, Profile] = {
    # the test suite's short run: every scenario, a few hundred packets each
    "ci": Profile(
        attack_packets=300,
        benign_packets=400,
        time_limit_s=20,
        per_scenario={"os_scan": 200, "aggressive_scan": 300},
    ),
    # the committed demo capture: all classes, at least 1,000 packets each, a few MB
    "demo": Profile(
        attack_packets=1100,
        benign_packets=3000,
        time_limit_s=90,
        per_scenario={"os_scan": 1000},
        benign_rate=1.5,
    ),
    # the training data set (>= 300,000 packets over 22 classes). The slow attacks (sshd's
    # key exchange per connection, telnet's login delay, an operator typing into a reverse
    # shell, beacons and slow HTTP) have targets that a busy 2-core machine reaches within
    # the time limit, like the others.
    "full": Profile(
        attack_packets=20_000,
        benign_packets=30_000,
        time_limit_s=300,
        per_scenario={
            "os_scan": 8_000,
            "aggressive_scan": 12_000,
            "ssh_bruteforce": 5_000,
            "telnet_bruteforce": 10_000,
            "c2_reverse_shell": 6_000,
            "c2_beacon": 10_000,
            "slow_dos": 10_000,
        },
        benign_rate=3.0,
    ),
}


@dataclass(frozen=True)
class RunOptions:
    out: Path
    workdir: Path
    scenarios: tuple[str, ...] = ()
    profile: str = "ci"
    packets: int | None = None  # overrides the profile's attack packets
    benign_packets: int | None = None
    time_limit_s: float | None = None
    seed: int = 1
    background: bool = True
    benign_rate: float | None = None  # overrides the profile's
    ports: str = "standard"
    command: str = ""


@dataclass
class ScenarioStatus:
    """Live state of one scenario, for the status display."""

    name: str
    label: str
    wanted: int
    state: str = "waiting"
    own: int = 0  # packets of the scenario's own class
    benign: int = 0
    total: int = 0
    runs: int = 0
    elapsed_s: float = 0.0


StatusCallback = Callable[[list[ScenarioStatus]], None]


def build_labeler(topology: Topology) -> Labeler:
    """The address rules of every attack scenario; anything else is benign."""
    rules = []
    for scenario in select(None):
        marker = scenario.marker_address(topology)
        if marker is not None:
            rules.append(MarkerRule(scenario.label, marker))
    return Labeler(rules, default=BENIGN, default_networks=[IPv4Network(SENSOR_NET)])


def package_versions() -> dict[str, str]:
    """Debian versions of the lab's packages (for the manifest), where dpkg knows them."""
    if shutil.which("dpkg-query") is None:
        return {}
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${Version}\n", *DEBIAN_PACKAGES],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    versions = {}
    for line in out.stdout.splitlines():
        name, _, version = line.partition(" ")
        if version:
            versions[name] = version
    return versions


def preflight(options: RunOptions) -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (tcpdump, raw sockets for hping3 and nmap)")
    missing = missing_tools(SERVER_PROGRAMS)
    if missing:
        raise LabError(f"missing programs: {', '.join(missing)} (run `make lab-setup`)")
    if options.profile not in PROFILES:
        raise LabError(f"unknown profile {options.profile!r}; known: {', '.join(PROFILES)}")
    if options.ports not in PORT_PRESETS:
        raise LabError(f"unknown port preset {options.ports!r}; known: {', '.join(PORT_PRESETS)}")


def unavailable(scenarios: list[Scenario]) -> dict[str, str]:
    """Scenario -> why it cannot run here (its attack programs are not installed)."""
    reasons = {}
    for scenario in scenarios:
        missing = missing_tools(set(PROGRAMS.get(scenario.name, ())))
        if missing:
            packages = sorted({TOOLS[m] for m in missing})
            reasons[scenario.name] = (
                f"{', '.join(missing)} not installed (Debian {', '.join(packages)}; "
                "`make lab-setup`)"
            )
    return reasons


class LabRun:
    """One run of the lab; :meth:`run` returns the manifest it wrote."""

    def __init__(self, options: RunOptions, on_status: StatusCallback | None = None) -> None:
        # Absolute paths: the servers get them in their configs and run in other folders.
        self.o = replace(options, out=options.out.resolve(), workdir=options.workdir.resolve())
        self.on_status = on_status or (lambda statuses: None)
        self.topology = Topology(ports=PORT_PRESETS[options.ports])
        self.labeler = build_labeler(self.topology)
        base = PROFILES.get(options.profile, PROFILES["ci"])
        self.profile = Profile(
            attack_packets=options.packets or base.attack_packets,
            benign_packets=options.benign_packets or base.benign_packets,
            time_limit_s=options.time_limit_s or base.time_limit_s,
            per_scenario={} if options.packets else dict(base.per_scenario),
            benign_rate=options.benign_rate or base.benign_rate,
        )
        wanted = select(list(options.scenarios))
        self.skipped = unavailable(wanted)
        for name, reason in self.skipped.items():
            log.warning("skipping scenario %s: %s", name, reason)
        self.scenarios = [s for s in wanted if s.name not in self.skipped]
        if not self.scenarios:
            raise LabError(f"no scenario can run here: {self.skipped}")
        self.statuses = [
            ScenarioStatus(s.name, s.label, self.profile.wanted(s)) for s in self.scenarios
        ]

    # -- one scenario -------------------------------------------------------------
    def _network(self, scenario: Scenario) -> contextlib.AbstractContextManager[list[str]]:
        """The network ``scenario`` makes for itself while it runs (its interfaces; most
        scenarios make none)."""
        if scenario.network is None:
            return contextlib.nullcontext([])
        return scenario.network(self.topology)

    def _capture(
        self,
        scenario: Scenario,
        status: ScenarioStatus,
        group: ProcessGroup,
        benign: BenignTraffic,
        rng: random.Random,
        interfaces: list[str],
    ) -> dict[str, Any]:
        pcap = self.o.out / f"{scenario.name}.pcap"
        logs = self.o.workdir / "logs"
        bpf = self.topology.capture_filter()
        capture = Capture(group, pcap, bpf, logs / f"tcpdump-{scenario.name}.log")
        extras = [
            Capture(
                group,
                self.o.workdir / "captures" / f"{scenario.name}-{name}.pcap",
                bpf,
                logs / f"tcpdump-{scenario.name}-{name}.log",
                interface=name,
            )
            for name in interfaces
        ]
        capture.start()
        for extra in extras:
            extra.start()
        tails = [PcapTail(pcap), *(PcapTail(e.path) for e in extras)]
        counts: Counter[str] = Counter()
        started = time.monotonic()
        deadline = started + self.profile.time_limit_s
        status.state = "running"
        own_benign = scenario.name == BENIGN and not self.o.background
        if own_benign:
            benign.start()

        def refresh() -> None:
            for tail in tails:
                counts.update(self.labeler.count(tail.read()))
            status.own = counts[scenario.label]
            status.benign = counts[BENIGN]
            status.total = sum(counts.values())
            status.elapsed_s = time.monotonic() - started
            self.on_status(self.statuses)

        failures = 0
        try:
            while status.own < status.wanted and time.monotonic() < deadline - 1:
                if scenario.build is None:  # benign: just let the devices talk
                    time.sleep(POLL_S)
                    refresh()
                    continue
                ctx = AttackContext(
                    topology=self.topology,
                    workdir=self.o.workdir,
                    rng=rng,
                    iteration=status.runs,
                    time_left_s=deadline - time.monotonic(),
                    seed=self.o.seed,
                )
                run = scenario.next_run(ctx, status.wanted - status.own)
                status.runs += 1
                before = status.own
                child = group.start(
                    f"{scenario.name}-{status.runs}",
                    run.argv,
                    log_path=logs / f"{scenario.name}-{status.runs}.log",
                    cwd=run.cwd,
                )
                run_deadline = min(time.monotonic() + run.timeout_s, deadline)
                while child.running():
                    time.sleep(POLL_S)
                    refresh()
                    if time.monotonic() > run_deadline:
                        break
                    if scenario.stop_at_budget and status.own >= status.wanted:
                        break
                stopped_early = child.running()
                group.finish(child)
                refresh()
                rc = child.popen.returncode
                if (not stopped_early and rc != 0) or status.own == before:
                    failures += 1
                    log.warning(
                        "%s run %d: exit status %s, %d new packets (log: %s)",
                        scenario.name,
                        status.runs,
                        rc,
                        status.own - before,
                        child.log_path,
                    )
                    if failures >= 3 and status.own == 0:
                        raise LabError(
                            f"{scenario.name}: {scenario.tool} produced no packets in 3 runs "
                            f"(see {child.log_path})"
                        )
            status.state = "finishing"
            time.sleep(GRACE_S)
            refresh()
        finally:
            if own_benign:
                benign.stop()
            stats = capture.stop()
            extra_stats = [extra.stop() for extra in extras]
        if extras:
            merged = pcap.with_suffix(".merged")
            merge_files([pcap, *(e.path for e in extras)], merged)
            merged.replace(pcap)
        dropped = [stats.dropped, *(e.dropped for e in extra_stats)]
        return self._entry(scenario, status, pcap, dropped, started, interfaces)

    def _entry(
        self,
        scenario: Scenario,
        status: ScenarioStatus,
        pcap: Path,
        dropped: list[int | None],
        started: float,
        interfaces: list[str],
    ) -> dict[str, Any]:
        """The manifest's entry for ``scenario``'s finished capture (recounted from the file)."""
        final = self.labeler.count_file(pcap)
        status.own, status.benign, status.total = (
            final[scenario.label],
            final[BENIGN],
            sum(final.values()),
        )
        status.state = "done"
        self.on_status(self.statuses)
        marker = scenario.marker_address(self.topology)
        return {
            "file": pcap.name,
            "scenario": scenario.name,
            "label": scenario.label,
            "tool": scenario.tool,
            "description": scenario.description,
            "marker": None if marker is None else str(marker),
            "wanted": status.wanted,
            "runs": status.runs,
            "elapsed_s": round(time.monotonic() - started, 1),
            "packets": sum(final.values()),
            "classes": dict(sorted(final.items())),
            "kernel_dropped": None if None in dropped else sum(d or 0 for d in dropped),
            "interfaces": ["lo", *interfaces],
            "bytes": pcap.stat().st_size,
            "sha256": file_sha256(pcap),
        }

    # -- the whole run ------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        preflight(self.o)
        self.o.out.mkdir(parents=True, exist_ok=True)
        self.o.workdir.mkdir(parents=True, exist_ok=True)
        rng = random.Random(self.o.seed)
        credentials = lab_credentials(random.Random(f"{self.o.seed}:credentials"))
        files: list[dict[str, Any]] = []
        started = dt.datetime.now(dt.UTC)
        service_dir = self.o.workdir / "services"
        services = LabServices(
            self.topology,
            service_dir,
            credentials,
            service_sets(self.topology, service_dir, self.o.seed),
        )
        with (
            exclusive_lab(),
            interrupts_as_errors(),
            ProcessGroup(self.o.workdir / "processes.json") as group,
        ):
            benign = BenignTraffic(
                self.topology,
                group,
                credentials,
                self.o.workdir,
                seed=self.o.seed,
                rate=self.profile.benign_rate,
            )
            try:
                services.start(group)
                if self.o.background:
                    benign.start()
                    time.sleep(1.0)  # let the devices connect before the first capture
                files = self._record(group, benign, rng)
            finally:
                benign.stop()
                group.stop_all()
                services.stop()
        return self._write(files, started, dict(benign.stats))

    def _record(
        self, group: ProcessGroup, benign: BenignTraffic, rng: random.Random
    ) -> list[dict[str, Any]]:
        """Capture the scenarios one after the other, each into its own pcap."""
        files = []
        for scenario, status in zip(self.scenarios, self.statuses, strict=True):
            with self._network(scenario) as interfaces:
                files.append(self._capture(scenario, status, group, benign, rng, interfaces))
            dead = group.exited()
            if dead:
                names = ", ".join(c.name for c in dead)
                raise LabError(f"lab processes died during {scenario.name}: {names}")
        return files

    def _write(
        self, files: list[dict[str, Any]], started: dt.datetime, activity: dict[str, int]
    ) -> dict[str, Any]:
        totals: Counter[str] = Counter()
        for entry in files:
            totals.update(entry["classes"])
        labels_path = self.o.out / "labels.yaml"
        self.labeler.write_yaml(
            labels_path,
            comment=(
                "Labels of the amlhp attack lab's captures (written by `amlhp lab run`).\n"
                "First matching rule wins; src/dst are CIDRs; file is a glob.\n"
                f"Command: {self.o.command}"
            ),
        )
        manifest = {
            "format": MANIFEST_FORMAT,
            "created": started.isoformat(timespec="seconds"),
            "command": self.o.command,
            "seed": self.o.seed,
            "profile": self.o.profile,
            "budget": asdict(self.profile),
            "options": {
                "scenarios": [s.name for s in self.scenarios],
                "background": self.o.background,
                "ports": self.o.ports,
            },
            "topology": {
                "sensors": [str(a) for a in self.topology.sensors],
                "services": str(self.topology.services),
                "auth_broker": str(self.topology.auth_broker),
                "mqtt_bruteforce_victim": str(self.topology.mqtt_bruteforce_victim),
                "ssh_bruteforce_victim": str(self.topology.ssh_bruteforce_victim),
                "victims": [str(a) for a in self.topology.victims()],
                "implant": str(self.topology.implant),
                "tunnel_server": str(self.topology.tunnel_server),
                "kernel_source": str(self.topology.kernel_source),
                "networks": [str(n) for n in self.topology.capture_networks()],
                "ports": self.topology.ports.as_dict(),
                "capture_filter": self.topology.capture_filter(),
            },
            "packages": package_versions(),
            "labels": labels_path.name,
            "classes": dict(sorted(totals.items())),
            "total_packets": sum(totals.values()),
            "files": files,
            "skipped": self.skipped,
            "benign_activity": dict(sorted(activity.items())),
        }
        (self.o.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        return manifest
