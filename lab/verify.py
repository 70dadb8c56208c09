"""Checks that a lab run's captures and labels agree with each other and with the manifest.

The captures are re-read and labelled from the labels *file* (rule by rule, not with the
runner's labeler), so a wrong rule in the file is caught. Per capture it checks that the
scenario produced packets of its class, that no other attack's packets leaked in, that
each packet is explained by the lab's roles (sensor <-> service for benign packets; for an
attack's packets, its marker <-> another lab address: a service, a victim, the implant, the
attacker's own servers or the kernel's default source) and that the counts and sha256
match the manifest.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from amlhp.digest import file_sha256
from amlhp.lab.exceptions import LabError
from amlhp.lab.labels import label_by_rules, read_rules
from amlhp.lab.pcapscan import NON_IPV4, scan
from amlhp.lab.scenarios import BENIGN
from amlhp.lab.topology import ATTACKER_NET, KERNEL_SOURCE, SENSOR_NET, SERVICE_NET

#: the lab's networks, for manifests written before they were recorded
DEFAULT_NETWORKS = (SENSOR_NET, SERVICE_NET, ATTACKER_NET)


@dataclass
class FileReport:
    file: str
    scenario: str
    label: str
    counts: Counter[str]
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "counts": dict(sorted(self.counts.items()))}


@dataclass
class RunReport:
    files: list[FileReport]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(not f.problems for f in self.files)

    def totals(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for f in self.files:
            total.update(f.counts)
        return total

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": self.problems,
            "classes": dict(sorted(self.totals().items())),
            "files": [f.as_dict() for f in self.files],
        }

    def lines(self) -> list[str]:
        out = [f"{'file':<22}{'class':<18}{'own':>8}{'benign':>8}{'total':>8}  problems"]
        for f in self.files:
            out.append(
                f"{f.file:<22}{f.label:<18}{f.counts[f.label]:>8}{f.counts[BENIGN]:>8}"
                f"{sum(f.counts.values()):>8}  {'; '.join(f.problems) or 'ok'}"
            )
        out.extend(f"run: {p}" for p in self.problems)
        out.append("OK" if self.ok else "FAILED")
        return out


def _roles(manifest: dict[str, Any]) -> tuple[set[int], set[int], set[int], list[IPv4Network]]:
    """Sensors, benign services, every scenario's marker, and the lab's address space."""
    topo = manifest["topology"]
    sensors = {int(IPv4Address(a)) for a in topo["sensors"]}
    services = {int(IPv4Address(topo[k])) for k in ("services", "auth_broker")}
    markers = {int(IPv4Address(e["marker"])) for e in manifest["files"] if e.get("marker")}
    networks = [IPv4Network(n) for n in topo.get("networks", DEFAULT_NETWORKS)]
    networks.append(IPv4Network(f"{topo.get('kernel_source', KERNEL_SOURCE)}/32"))
    return sensors, services, markers, networks


def _in_lab(address: int, networks: list[IPv4Network]) -> bool:
    ip = IPv4Address(address)
    return any(ip in n for n in networks)


def verify_run(run_dir: Path) -> RunReport:
    """Re-label every capture of ``run_dir`` from its labels file and check it."""
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read {run_dir / 'manifest.json'}: {exc}") from exc
    classes, rules = read_rules(run_dir / manifest["labels"])
    sensors, services, markers, networks = _roles(manifest)
    attack_labels = {e["label"] for e in manifest["files"]} - {BENIGN}
    reports = []
    for entry in manifest["files"]:
        path = run_dir / entry["file"]
        report = FileReport(entry["file"], entry["scenario"], entry["label"], Counter())
        unexplained = 0
        for _, src, dst, _ in scan(path):
            if src == NON_IPV4:
                report.counts["<not-ipv4>"] += 1
                continue
            label = label_by_rules(rules, path.name, src, dst) or "<unlabelled>"
            report.counts[label] += 1
            pair = {src, dst}
            ends = pair & markers
            explained = (
                (src in sensors and dst in services)
                or (dst in sensors and src in services)
                or (
                    len(ends) == 1
                    and not pair & sensors
                    and all(_in_lab(a, networks) for a in pair - ends)
                )
            )
            unexplained += not explained
        own = report.counts[entry["label"]]
        if own == 0:
            report.problems.append(f"no {entry['label']} packets")
        foreign = {
            k: v for k, v in report.counts.items() if k in attack_labels and k != entry["label"]
        }
        if foreign:
            report.problems.append(f"packets of other attacks: {foreign}")
        odd = {k: v for k, v in report.counts.items() if k.startswith("<") or k not in classes}
        if odd:
            report.problems.append(f"packets without a proper label: {odd}")
        if unexplained:
            report.problems.append(f"{unexplained} packets between unexpected addresses")
        if dict(sorted(report.counts.items())) != entry["classes"]:
            report.problems.append(f"counts differ from the manifest ({entry['classes']})")
        if file_sha256(path) != entry["sha256"]:
            report.problems.append("sha256 differs from the manifest")
        reports.append(report)
    result = RunReport(reports)
    if dict(sorted(result.totals().items())) != manifest["classes"]:
        result.problems.append("class totals differ from the manifest")
    return result
