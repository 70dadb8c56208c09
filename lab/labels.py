"""Labels by address: each attack scenario owns one address; benign traffic is the sensors'.

An attack's packets are exactly those whose source or destination is its *marker*
address: the attacker's own address where the tool can bind one (hping3 ``-a``, nmap
``-S``, the HTTP flooder), else the dedicated victim address only that tool talks to
(hydra, ncrack). Replies from servers to an attacker are therefore labelled too. Benign
packets are exactly those to or from a sensor address (127.10.0.0/16): no attack involves
a sensor, and no packet is left without a class (``amlhp lab verify`` checks both).

The labels file is written in the model's format (:mod:`amlhp.model.labels`): a
``classes:`` mapping, class ids in file order (benign first), each class a list of
``{path: GLOB, where: [{ip: CIDR}]}`` entries; a packet belongs to the first class whose
entry matches its file and one of whose rules it matches. The glob is ``*.pcap`` (relative
to the labels file's folder) because marker addresses are unique across scenarios, so one
file labels every lab capture, per scenario or merged.
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
from amlhp.lab.safety import loopback_address, loopback_network

CONFLICT = "<conflict>"
UNLABELLED = "<unlabelled>"
NOT_IPV4 = "<not-ipv4>"


@dataclass(frozen=True)
class MarkerRule:
    """Packets to or from ``address`` belong to class ``label``."""

    label: str
    address: IPv4Address


class Labeler:
    """Labels packets by their addresses, the way the labels file says."""

    def __init__(
        self,
        rules: Sequence[MarkerRule],
        default: str,
        default_networks: Sequence[IPv4Network] = (),
    ) -> None:
        self.default = default
        self.default_networks = tuple(loopback_network(n) for n in default_networks)
        self._by_address: dict[int, str] = {}
        for rule in rules:
            key = int(loopback_address(rule.address))
            if key in self._by_address and self._by_address[key] != rule.label:
                raise LabError(f"{rule.address} is the marker of two classes")
            if any(rule.address in n for n in self.default_networks):
                raise LabError(f"marker {rule.address} lies in a benign network")
            self._by_address[key] = rule.label
        self.rules = tuple(rules)
        self._default_cache: dict[int, bool] = {}

    @property
    def classes(self) -> list[str]:
        names = [self.default]
        for rule in self.rules:
            if rule.label not in names:
                names.append(rule.label)
        return names

    def _is_default(self, address: int) -> bool:
        if not self.default_networks:
            return True
        hit = self._default_cache.get(address)
        if hit is None:
            ip = IPv4Address(address)
            hit = any(ip in n for n in self.default_networks)
            self._default_cache[address] = hit
        return hit

    def label(self, src: int, dst: int) -> str:
        """The class of a packet; :data:`CONFLICT` (two markers) or :data:`UNLABELLED`."""
        if src == NON_IPV4:
            return NOT_IPV4
        a = self._by_address.get(src)
        b = self._by_address.get(dst)
        if a is not None and b is not None and a != b:
            return CONFLICT
        marked = a or b
        if self.default_networks and (self._is_default(src) or self._is_default(dst)):
            return self.default if marked is None else CONFLICT
        if marked is not None:
            return marked
        return self.default if not self.default_networks else UNLABELLED

    def count(self, packets: Iterable[tuple[int, int, int, int]]) -> Counter[str]:
        counts: Counter[str] = Counter()
        for _, src, dst, _ in packets:
            counts[self.label(src, dst)] += 1
        return counts

    def count_file(self, path: Path) -> Counter[str]:
        return self.count(scan(path))

    # -- the labels file ----------------------------------------------------------
    def to_yaml_dict(self, file_glob: str = "*.pcap") -> dict[str, Any]:
        """The model's labels format: benign (by network) first, then one class per marker."""
        classes: dict[str, list[Any]] = {}
        benign_rules = [{"ip": str(n)} for n in self.default_networks]
        classes[self.default] = (
            [{"path": file_glob, "where": benign_rules}] if benign_rules else [file_glob]
        )
        for rule in self.rules:
            classes.setdefault(rule.label, []).append(
                {"path": file_glob, "where": [{"ip": f"{rule.address}/32"}]}
            )
        return {"classes": classes}

    def write_yaml(self, path: Path, *, comment: str = "", file_glob: str = "*.pcap") -> None:
        header = "".join(f"# {line}\n" for line in comment.splitlines())
        body = yaml.safe_dump(
            self.to_yaml_dict(file_glob), sort_keys=False, width=100, default_flow_style=None
        )
        path.write_text(header + body)


@dataclass(frozen=True)
class FileRule:
    """One (file glob, class, address rule) of a labels file, for reading it back."""

    file: str
    label: str
    ip: IPv4Network | None = None
    src: IPv4Network | None = None
    dst: IPv4Network | None = None

    def matches(self, file_name: str, src: IPv4Address, dst: IPv4Address) -> bool:
        if not fnmatch.fnmatch(file_name, self.file):
            return False
        if self.ip is not None and src not in self.ip and dst not in self.ip:
            return False
        if self.src is not None and src not in self.src:
            return False
        return not (self.dst is not None and dst not in self.dst)


_ADDRESS_KEYS = {"ip", "src_ip", "dst_ip"}


def read_rules(path: Path) -> tuple[list[str], list[FileRule]]:
    """Read back a labels file in the model's format (the address rules the lab writes).

    An independent reader of the file, so that ``amlhp lab verify`` checks the file itself
    rather than the labeler that wrote it. Rules on ports, protocols or time are refused.
    """
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LabError(f"cannot read labels file {path}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("classes"), dict):
        raise LabError(f"{path}: a labels file needs a 'classes:' mapping")
    rules: list[FileRule] = []
    for label, entries in doc["classes"].items():
        for entry in entries if isinstance(entries, list) else [entries]:
            if isinstance(entry, str):
                rules.append(FileRule(file=entry, label=str(label)))
                continue
            where = entry.get("where")
            if where is None:
                rules.append(FileRule(file=str(entry["path"]), label=str(label)))
                continue
            for raw in where if isinstance(where, list) else [where]:
                if not set(raw) <= _ADDRESS_KEYS:
                    raise LabError(f"{path}: rule {raw} uses keys the lab does not write")
                rules.append(
                    FileRule(
                        file=str(entry["path"]),
                        label=str(label),
                        ip=IPv4Network(raw["ip"]) if "ip" in raw else None,
                        src=IPv4Network(raw["src_ip"]) if "src_ip" in raw else None,
                        dst=IPv4Network(raw["dst_ip"]) if "dst_ip" in raw else None,
                    )
                )
    return [str(c) for c in doc["classes"]], rules


def label_by_rules(rules: Sequence[FileRule], file_name: str, src: int, dst: int) -> str | None:
    """First-match label of one packet under ``rules`` (None: no rule matches)."""
    s, d = IPv4Address(src), IPv4Address(dst)
    for rule in rules:
        if rule.matches(file_name, s, d):
            return rule.label
    return None
