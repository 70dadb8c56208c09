"""Labels by address: each attack scenario owns one address, everything else is benign.

An attack's packets are exactly those whose source or destination is its *marker*
address: the attacker's own address where the tool can bind one (hping3 ``-a``, nmap
``-S``, the HTTP flooder), else the dedicated victim address only that tool talks to
(hydra, ncrack). Replies from servers to an attacker are therefore labelled too.

The labels file (YAML) is written in the model's format: an ordered rule list, first
match wins; a rule matches a packet when the capture's file name matches ``file`` (a
glob) and each condition given (``src``, ``dst``: CIDR) holds. The lab's rules use the
glob ``*.pcap`` because marker addresses are unique across scenarios, so one file labels
every lab capture, per scenario or merged.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import yaml

from amlhp.lab.exceptions import LabError
from amlhp.lab.pcapscan import NON_IPV4, scan
from amlhp.lab.safety import loopback_address

LABELS_FORMAT = "amlhp-labels/1"
CONFLICT = "<conflict>"
NOT_IPV4 = "<not-ipv4>"


@dataclass(frozen=True)
class MarkerRule:
    """Packets to or from ``address`` belong to class ``label``."""

    label: str
    address: IPv4Address


class Labeler:
    """Labels packets by their addresses, the way the labels file says."""

    def __init__(self, rules: Sequence[MarkerRule], default: str) -> None:
        self.default = default
        self._by_address: dict[int, str] = {}
        for rule in rules:
            key = int(loopback_address(rule.address))
            if key in self._by_address and self._by_address[key] != rule.label:
                raise LabError(f"{rule.address} is the marker of two classes")
            self._by_address[key] = rule.label
        self.rules = tuple(rules)

    @property
    def classes(self) -> list[str]:
        names = [self.default]
        for rule in self.rules:
            if rule.label not in names:
                names.append(rule.label)
        return names

    def label(self, src: int, dst: int) -> str:
        """The class of a packet; :data:`CONFLICT` if it carries two markers."""
        if src == NON_IPV4:
            return NOT_IPV4
        a = self._by_address.get(src)
        b = self._by_address.get(dst)
        if a is not None and b is not None and a != b:
            return CONFLICT
        return a or b or self.default

    def count(self, packets: Iterable[tuple[int, int, int, int]]) -> Counter[str]:
        counts: Counter[str] = Counter()
        for _, src, dst, _ in packets:
            counts[self.label(src, dst)] += 1
        return counts

    def count_file(self, path: Path) -> Counter[str]:
        return self.count(scan(path))

    # -- the labels file ----------------------------------------------------------
    def to_yaml_dict(self, file_glob: str = "*.pcap") -> dict[str, Any]:
        rules: list[dict[str, str]] = []
        for rule in self.rules:
            cidr = f"{rule.address}/32"
            rules.append({"file": file_glob, "label": rule.label, "src": cidr})
            rules.append({"file": file_glob, "label": rule.label, "dst": cidr})
        rules.append({"file": file_glob, "label": self.default})
        return {"format": LABELS_FORMAT, "classes": self.classes, "rules": rules}

    def write_yaml(self, path: Path, *, comment: str = "", file_glob: str = "*.pcap") -> None:
        header = "".join(f"# {line}\n" for line in comment.splitlines())
        body = yaml.safe_dump(self.to_yaml_dict(file_glob), sort_keys=False, width=100)
        path.write_text(header + body)


@dataclass(frozen=True)
class FileRule:
    """One rule of a labels file, for reading files back (tests, ``amlhp lab verify``)."""

    file: str
    label: str
    src: IPv4Network | None = None
    dst: IPv4Network | None = None

    def matches(self, file_name: str, src: IPv4Address, dst: IPv4Address) -> bool:
        if not fnmatch.fnmatch(file_name, self.file):
            return False
        if self.src is not None and src not in self.src:
            return False
        return not (self.dst is not None and dst not in self.dst)


def read_rules(path: Path) -> tuple[list[str], list[FileRule]]:
    """Read a labels file the lab wrote: its classes and its ordered rules."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LabError(f"cannot read labels file {path}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise LabError(f"{path}: a labels file needs a 'rules' list")
    rules = []
    for raw in doc["rules"]:
        rules.append(
            FileRule(
                file=str(raw["file"]),
                label=str(raw["label"]),
                src=IPv4Network(raw["src"]) if raw.get("src") else None,
                dst=IPv4Network(raw["dst"]) if raw.get("dst") else None,
            )
        )
    return [str(c) for c in doc.get("classes", [])], rules


def label_by_rules(rules: Sequence[FileRule], file_name: str, src: int, dst: int) -> str | None:
    """First-match label of one packet under ``rules`` (None: no rule matches)."""
    s, d = IPv4Address(src), IPv4Address(dst)
    for rule in rules:
        if rule.matches(file_name, s, d):
            return rule.label
    return None
