"""The labels file: which capture files (or which packets of them) belong to which class.

YAML, for example::

    base: ../shared/data/public        # optional; relative to this file (default: its folder)
    classes:                           # class ids follow this order
      mqtt_benign: [mqttset_reduced/benign-5mb/*.pcap]
      dos_synflood:
        - stopddos/pkt.TCP.*
        - stopddos/amp.TCP.syn.*
      ddos_udp_amplification:
        - stopddos/amp.UDP.*
        - path: stopddos/amp.dns.RRSIG.fragmented.pcap   # a mixed capture:
          where:                                         # keep packets matching any rule
            - {proto: udp, src_port: 53}
    exclude: [iot_sentinel/**/README*]  # optional globs never used

A class entry is a glob (relative to ``base``; ``**`` crosses folders) or a mapping with
``path`` and optional ``where`` rules. A rule's keys are ANDed, a list of rules ORed:
``src_ip``/``dst_ip``/``ip`` (address or CIDR; ``ip`` matches either side),
``src_port``/``dst_port``/``port`` (number, list, or ``"lo-hi"``), ``proto`` (``tcp``,
``udp``, ``icmp`` or a number), ``after``/``before`` (ISO 8601 time or Unix seconds).
A packet belongs to the first class (in file order) with an entry for its file whose rules
it matches; packets of a file whose entries all have rules and match none are not used.
Two rule-less entries for the same file in different classes are an error.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import yaml

from amlhp.model.exceptions import LabelsError

_RULE_KEYS = {"src_ip", "dst_ip", "ip", "src_port", "dst_port", "port", "proto", "after", "before"}
_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1}
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Rule:
    """One ``where`` rule; every set condition must hold."""

    src_ip: tuple[IpNetwork, ...] = ()
    dst_ip: tuple[IpNetwork, ...] = ()
    ip: tuple[IpNetwork, ...] = ()
    src_port: tuple[tuple[int, int], ...] = ()
    dst_port: tuple[tuple[int, int], ...] = ()
    port: tuple[tuple[int, int], ...] = ()
    proto: int | None = None
    after_ns: int | None = None
    before_ns: int | None = None


@dataclass(frozen=True)
class FileEntry:
    """A class claim on one capture file, optionally restricted by rules."""

    class_id: int
    rules: tuple[Rule, ...] | None  # None: the whole file


@dataclass
class LabelSpec:
    """The resolved labels file: class names and, per capture file, its claims."""

    classes: list[str]
    files: dict[Path, list[FileEntry]] = field(default_factory=dict)
    source: str = ""  # the YAML text, for the data fingerprint

    def as_dict(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "files": {str(p): [e.class_id for e in es] for p, es in sorted(self.files.items())},
        }


def _networks(value: Any, key: str) -> tuple[IpNetwork, ...]:
    items = value if isinstance(value, list) else [value]
    try:
        return tuple(ipaddress.ip_network(str(v), strict=False) for v in items)
    except ValueError as exc:
        raise LabelsError(f"rule {key}: {exc}") from exc


def _ports(value: Any, key: str) -> tuple[tuple[int, int], ...]:
    items = value if isinstance(value, list) else [value]
    out: list[tuple[int, int]] = []
    for item in items:
        text = str(item)
        lo_s, sep, hi_s = text.partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if sep else lo
        except ValueError as exc:
            raise LabelsError(f"rule {key}: {text!r} is not a port or lo-hi range") from exc
        if not (0 <= lo <= hi <= 65535):
            raise LabelsError(f"rule {key}: {text!r} is outside 0-65535")
        out.append((lo, hi))
    return tuple(out)


def _time_ns(value: Any, key: str) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1e9)
    if isinstance(value, int | float):
        return int(value * 1e9)
    try:
        return int(datetime.fromisoformat(str(value)).timestamp() * 1e9)
    except ValueError as exc:
        raise LabelsError(f"rule {key}: {value!r} is not ISO 8601 or Unix seconds") from exc


def _proto(value: Any) -> int:
    if isinstance(value, int) and 0 <= value <= 255:
        return value
    name = str(value).lower()
    if name in _PROTOS:
        return _PROTOS[name]
    raise LabelsError(f"rule proto: {value!r} is not tcp, udp, icmp or 0-255")


def parse_rule(raw: Any) -> Rule:
    if not isinstance(raw, dict) or not raw:
        raise LabelsError(f"a rule must be a non-empty mapping, got {raw!r}")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise LabelsError(f"unknown rule keys {sorted(unknown)}; valid: {sorted(_RULE_KEYS)}")
    return Rule(
        src_ip=_networks(raw["src_ip"], "src_ip") if "src_ip" in raw else (),
        dst_ip=_networks(raw["dst_ip"], "dst_ip") if "dst_ip" in raw else (),
        ip=_networks(raw["ip"], "ip") if "ip" in raw else (),
        src_port=_ports(raw["src_port"], "src_port") if "src_port" in raw else (),
        dst_port=_ports(raw["dst_port"], "dst_port") if "dst_port" in raw else (),
        port=_ports(raw["port"], "port") if "port" in raw else (),
        proto=_proto(raw["proto"]) if "proto" in raw else None,
        after_ns=_time_ns(raw["after"], "after") if "after" in raw else None,
        before_ns=_time_ns(raw["before"], "before") if "before" in raw else None,
    )


def _glob(base: Path, pattern: str) -> list[Path]:
    path = Path(pattern)
    if path.is_absolute():
        anchor = Path(path.anchor)
        matches = sorted(anchor.glob(str(path.relative_to(anchor))))
    else:
        matches = sorted(base.glob(pattern))
    return [m.resolve() for m in matches if m.is_file()]


def parse_labels(text: str, base: Path) -> LabelSpec:
    """Parse a labels document; relative globs resolve against ``base`` (or its ``base:``)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LabelsError(f"labels file is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("classes"), dict) or not doc["classes"]:
        raise LabelsError("labels file needs a non-empty 'classes:' mapping of name -> files")
    if "base" in doc:
        base = (base / str(doc["base"])).resolve()
    excluded: set[Path] = set()
    for pattern in doc.get("exclude") or []:
        excluded.update(_glob(base, str(pattern)))
    spec = LabelSpec(classes=[str(name) for name in doc["classes"]], source=text)
    for class_id, (name, entries) in enumerate(doc["classes"].items()):
        items = entries if isinstance(entries, list) else [entries]
        if not items:
            raise LabelsError(f"class {name!r} lists no captures")
        for item in items:
            if isinstance(item, str):
                pattern, rules = item, None
            elif isinstance(item, dict) and "path" in item:
                pattern = str(item["path"])
                where = item.get("where")
                if where is None:
                    rules = None
                else:
                    raw_rules = where if isinstance(where, list) else [where]
                    rules = tuple(parse_rule(r) for r in raw_rules)
            else:
                raise LabelsError(
                    f"class {name!r}: entry {item!r} is not a glob or {{path, where}}"
                )
            matches = [m for m in _glob(base, pattern) if m not in excluded]
            if not matches:
                raise LabelsError(f"class {name!r}: {pattern!r} matches no file under {base}")
            for path in matches:
                claims = spec.files.setdefault(path, [])
                if rules is None and any(
                    c.rules is None and c.class_id != class_id for c in claims
                ):
                    other = spec.classes[next(c.class_id for c in claims if c.rules is None)]
                    raise LabelsError(
                        f"{path} is labelled both {other!r} and {name!r} without rules"
                    )
                if not any(c.class_id == class_id and c.rules == rules for c in claims):
                    claims.append(FileEntry(class_id, rules))
    return spec


def load_labels(path: str | Path) -> LabelSpec:
    """Read and resolve a labels YAML file."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise LabelsError(f"cannot read labels file {file}: {exc}") from exc
    return parse_labels(text, file.resolve().parent)


def _ip_values(column: pa.ChunkedArray | pa.Array) -> list[str | None]:
    values: list[str | None] = column.to_pylist()
    return values


def _in_networks(ips: list[str | None], nets: tuple[IpNetwork, ...]) -> npt.NDArray[np.bool_]:
    cache: dict[str, bool] = {}
    out = np.zeros(len(ips), np.bool_)
    for i, ip in enumerate(ips):
        if ip is None:
            continue
        hit = cache.get(ip)
        if hit is None:
            addr = ipaddress.ip_address(ip)
            hit = any(addr in net for net in nets)
            cache[ip] = hit
        out[i] = hit
    return out


def _ints(table: pa.Table, name: str) -> npt.NDArray[np.int64]:
    """An unsigned column as int64 with -1 for null (never equal to a real port/proto)."""
    column = table.column(name).cast(pa.int64())
    return np.asarray(column.fill_null(-1).to_numpy(), dtype=np.int64)


def _in_ports(
    ports: npt.NDArray[np.int64], ranges: tuple[tuple[int, int], ...]
) -> npt.NDArray[np.bool_]:
    out = np.zeros(len(ports), np.bool_)
    for lo, hi in ranges:
        out |= (ports >= lo) & (ports <= hi)
    return out


def _sides(
    src: Any,
    dst: Any,
    on_src: Any,
    on_dst: Any,
    on_either: Any,
    test: Callable[[Any, Any], npt.NDArray[np.bool_]],
) -> npt.NDArray[np.bool_] | bool:
    """A rule's source, destination and either-side conditions on one kind of field
    (addresses or ports); an empty condition is no condition."""
    keep: npt.NDArray[np.bool_] | bool = True
    if on_src:
        keep = keep & test(src, on_src)
    if on_dst:
        keep = keep & test(dst, on_dst)
    if on_either:
        keep = keep & (test(src, on_either) | test(dst, on_either))
    return keep


def rule_mask(table: pa.Table, rule: Rule) -> npt.NDArray[np.bool_]:
    """Rows of an encoded table that match ``rule`` (packets without a field never match it)."""
    n = table.num_rows
    keep = np.ones(n, np.bool_)
    if rule.src_ip or rule.dst_ip or rule.ip:
        src, dst = _ip_values(table.column("src_ip")), _ip_values(table.column("dst_ip"))
        keep &= _sides(src, dst, rule.src_ip, rule.dst_ip, rule.ip, _in_networks)
    if rule.src_port or rule.dst_port or rule.port:
        sport, dport = _ints(table, "src_port"), _ints(table, "dst_port")
        keep &= _sides(sport, dport, rule.src_port, rule.dst_port, rule.port, _in_ports)
    if rule.proto is not None:
        proto = _ints(table, "proto")
        keep &= proto == rule.proto
    if rule.after_ns is not None or rule.before_ns is not None:
        ts = table.column("ts_ns").to_numpy()
        if rule.after_ns is not None:
            keep &= ts >= rule.after_ns
        if rule.before_ns is not None:
            keep &= ts < rule.before_ns
    return keep


def assign_labels(table: pa.Table, entries: list[FileEntry]) -> npt.NDArray[np.int64]:
    """Class id per row of one file's encoded table; -1 where no entry claims the packet."""
    labels = np.full(table.num_rows, -1, np.int64)
    for entry in entries:
        free = labels < 0
        if not free.any():
            break
        if entry.rules is None:
            labels[free] = entry.class_id
            continue
        hit = np.zeros(table.num_rows, np.bool_)
        for rule in entry.rules:
            hit |= rule_mask(table, rule)
        labels[free & hit] = entry.class_id
    return labels


def restrict_to(spec: LabelSpec, captures: list[Path]) -> LabelSpec:
    """Only the labelled files that are among ``captures`` (files, or files under folders)."""
    roots = [Path(c).resolve() for c in captures]
    for root in roots:
        if not root.exists():
            raise LabelsError(f"{root}: no such capture file or folder")
    kept = {
        path: entries
        for path, entries in spec.files.items()
        if any(path == root or root in path.parents for root in roots)
    }
    if not kept:
        raise LabelsError("none of the given captures is named by the labels file")
    return LabelSpec(classes=spec.classes, files=kept, source=spec.source)


def merge_labels(spec: LabelSpec, more: LabelSpec) -> LabelSpec:
    """``spec`` with the files of ``more`` added, classes united by name (new names at the
    end, so ``spec``'s class ids stay): how ``amlhp train --feedback`` adds the labelled
    packets of analysts' verdicts to a labels file."""
    classes = list(spec.classes)
    for name in more.classes:
        if name not in classes:
            classes.append(name)
    files = {path: list(entries) for path, entries in spec.files.items()}
    for path, entries in more.files.items():
        if path in files:
            raise LabelsError(f"{path} is in both labels files")
        files[path] = [FileEntry(classes.index(more.classes[e.class_id]), e.rules) for e in entries]
    return LabelSpec(classes=classes, files=files, source=spec.source + "\n---\n" + more.source)
