"""Suppression: an operator's allow-list, applied to incidents without hiding them.

A YAML file (``AMLHP_ALERT_SUPPRESSIONS``, or ``amlhp alerts --suppress``) lists rules::

    rules:
      - id: printer-discovery            # unique; it names the rule on every incident
        reason: the print server's discovery sweeps (ticket OPS-1234)
        host: 192.168.1.20               # an address or a CIDR (the incident's host)
        gateway: site-a-*                # a glob of gateway ids
        kind: scan                       # incident kinds (one or a list)
        class: tcp_portscan              # model classes among the incident's classes
        port: [515, 631]                 # ports among the incident's top ports
        expires: 2027-03-31T00:00:00Z    # no longer applies to later incidents

Every field but ``id`` and ``reason`` is optional, and a rule matches an incident when
all the fields it has match (a rule with none would silence everything: refused). The
first matching rule, in file order, names the incident: its rows carry
``suppressed_by`` (the rule's id) and stay in the alert topic and dataset, counted in
``amlhp_suppressed_total{rule}``; exports skip them unless asked. Expiry is judged on the
incident's own clock (its last packet), so a replay of last month applies last month's
rules, and the stream and ``amlhp alerts`` mark the same rows.

The alert stage checks the file's modification time on its clock ticks and reloads it
when it changed, without a restart; a file that no longer parses is refused with the
error logged and the rules before it kept. A rule that matched nothing since it was
loaded is reported (logged at each reload and at the end of ``amlhp alerts``; its
counter stays 0).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from amlhp.alerts.exceptions import AlertsError

log = logging.getLogger(__name__)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _listed(value: Any) -> Any:
    return value if value is None or isinstance(value, list) else [value]


class Rule(BaseModel):
    """One allow-list rule (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    id: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    host: str | None = None
    gateway: str | None = None
    kind: list[str] | None = None
    model_class: list[str] | None = Field(None, alias="class")
    port: list[int] | None = None
    expires: datetime | None = None

    _list = field_validator("kind", "model_class", "port", mode="before")(_listed)

    @field_validator("host")
    @classmethod
    def _network(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError as exc:
                raise ValueError(f"host {value!r} is neither an address nor a CIDR") from exc
        return value

    @field_validator("expires")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    def network(self) -> Network | None:
        return None if self.host is None else ipaddress.ip_network(self.host, strict=False)

    def matches(self, row: dict[str, Any], net: Network | None) -> bool:
        """Whether this rule covers an alert row (``net``: :meth:`network`, parsed once)."""
        if self.expires is not None and row["last_seen_ns"] > self.expires.timestamp() * 1e9:
            return False
        if net is not None:
            try:
                if ipaddress.ip_address(row["host"]) not in net:
                    return False
            except ValueError:
                return False
        if self.gateway is not None and not fnmatch.fnmatchcase(row["gateway"], self.gateway):
            return False
        if self.kind is not None and row["kind"] not in self.kind:
            return False
        if self.model_class is not None and not set(self.model_class) & set(row["classes"]):
            return False
        return self.port is None or bool(set(self.port) & set(row["top_ports"]))


class RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = Field(default_factory=list)


def parse_rules(text: str, source: str) -> list[Rule]:
    """The rules of a suppression file's text; :class:`AlertsError` says what is wrong."""
    try:
        data = yaml.safe_load(text) or {}
        rules = RuleFile.model_validate(data).rules
    except (yaml.YAMLError, ValidationError) as exc:
        raise AlertsError(f"suppression file {source}: {exc}") from exc
    ids = Counter(r.id for r in rules)
    if twice := sorted(i for i, n in ids.items() if n > 1):
        raise AlertsError(f"suppression file {source}: rule ids used twice: {twice}")
    scopes = ("host", "gateway", "kind", "model_class", "port")
    if broad := [r.id for r in rules if all(getattr(r, s) is None for s in scopes)]:
        raise AlertsError(
            f"suppression file {source}: rules {broad} name no host, gateway, kind, class "
            "or port: they would silence every incident"
        )
    return rules


class Suppressions:
    """The rules of one file, reloaded when it changes; marks alert rows."""

    def __init__(self, path: Path | None, rules: Iterable[Rule] = ()) -> None:
        self.path = path
        self.rules: list[Rule] = list(rules)
        self._nets = [r.network() for r in self.rules]
        #: rules from analysts' false positives (:mod:`amlhp.alerts.feedback`), after the
        #: file's; kept across reloads of the file
        self.extra: list[Rule] = []
        self.matched: Counter[str] = Counter()
        self._mtime: float | None = None

    @classmethod
    def load(cls, path: Path | None) -> Suppressions:
        """The rules of ``path`` (none when it is ``None``; a missing file is an empty
        list until it appears, so an operator can create it while the stage runs)."""
        out = cls(path)
        if path is not None:
            if not path.exists():
                log.warning("suppression file %s does not exist (yet): no rules", path)
            out.reload_if_changed(strict=True)
        return out

    def reload_if_changed(self, strict: bool = False) -> bool:
        """Read the file again if its modification time changed; True when the rules did.
        A file that does not parse is refused (``strict``: raised, else logged) and the
        rules before it kept."""
        if self.path is None:
            return False
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            mtime = None
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            rules = [] if mtime is None else parse_rules(self.path.read_text(), str(self.path))
        except (AlertsError, OSError) as exc:
            if strict:
                raise AlertsError(str(exc)) from exc
            log.error("suppression rules not reloaded, the previous ones kept: %s", exc)
            return False
        self.report_unmatched()
        self.rules, self._nets = rules, [r.network() for r in rules]
        self.matched = Counter({r.id: 0 for r in (*rules, *self.extra)})
        log.info("suppression rules loaded from %s: %s", self.path, [r.id for r in rules])
        return True

    def add(self, rule: Rule) -> bool:
        """Add a rule that comes from feedback (not from the file); False if known."""
        if any(r.id == rule.id for r in (*self.rules, *self.extra)):
            return False
        self.extra.append(rule)
        self.matched[rule.id] += 0
        log.info("suppression rule %s added from feedback: %s", rule.id, rule.reason)
        return True

    def rule_for(self, row: dict[str, Any]) -> Rule | None:
        for rule, net in zip(self.rules, self._nets, strict=True):
            if rule.matches(row, net):
                return rule
        for rule in self.extra:
            if rule.matches(row, rule.network()):
                return rule
        return None

    def mark(self, row: dict[str, Any]) -> dict[str, Any]:
        """Set the row's ``suppressed_by``: the first matching rule's id, or None. A row
        that already names a rule (its incident was covered before) keeps it, whether
        that rule still matches or not: an incident is suppressed whole."""
        if row.get("suppressed_by"):
            self.matched[row["suppressed_by"]] += 1
            return row
        rule = self.rule_for(row) if self.rules or self.extra else None
        row["suppressed_by"] = None if rule is None else rule.id
        if rule is not None:
            self.matched[rule.id] += 1
        return row

    def unmatched(self) -> list[str]:
        """Ids of the rules that matched no alert row since they were loaded."""
        return [r.id for r in (*self.rules, *self.extra) if not self.matched[r.id]]

    def report_unmatched(self) -> None:
        if never := self.unmatched():
            log.warning("suppression rules that matched nothing since loaded: %s", never)


__all__ = ["Rule", "Suppressions", "parse_rules"]
