"""Least privilege per stage: the ACLs each pipeline principal needs, and nothing more.

One table, derived from what each stage touches
(:func:`stage_access`, also what a stage checks at start: :mod:`amlhp.pipeline.access`), is the
single source for ``amlhp infra kafka acls`` (prints it), ``amlhp topics create --acls``
(applies it on any cluster with Kafka's ``CreateAcls``) and the secured-broker tests
(which run every stage under its own principal against it). Confluent's guidance is
followed: a producer gets WRITE on its topics (since Kafka 3.0, KIP-679, that also
allows the idempotent producer), a consumer READ on its topics and on its group, and a
Faust app CREATE only under the prefix of its own changelog topics. DESCRIBE comes with
READ and WRITE.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from amlhp.infra.exceptions import InfraError
from amlhp.infra.kafka_security import PRINCIPALS, username
from amlhp.settings import Settings


@dataclass(frozen=True)
class Acl:
    """One ALLOW entry: ``principal`` may ``operation`` the resource (any host)."""

    stage: str
    principal: str
    resource: str  # "topic" | "group"
    pattern: str  # "literal" | "prefixed"
    name: str
    operation: str  # "read" | "write" | "create"


@dataclass(frozen=True)
class StageAccess:
    """What one stage touches: topics it reads and writes, its groups, its own topics."""

    stage: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    group_prefixes: tuple[str, ...] = ()
    #: prefix of the topics the stage creates and owns (a Faust app's changelogs)
    own_prefix: str | None = None


def stage_access(settings: Settings) -> list[StageAccess]:
    """Every stage's access, from the settings' topic names and consumer group."""
    t = settings.topics
    group = settings.consumer_group
    return [
        StageAccess("tap", writes=(t.raw,)),
        StageAccess(
            "worker",
            reads=(t.raw,),
            writes=(t.verdicts, t.dead_letter, t.explanations),
            groups=(group,),
        ),
        StageAccess("sink", reads=(t.verdicts,), groups=(f"{group}-sink",)),
        StageAccess(
            "alerts",
            reads=(t.verdicts, t.alert_ticks, t.devices, t.flow_verdicts, t.feedback),
            writes=(t.alerts, t.alert_ticks),
            groups=(f"{group}-alerts", f"{group}-feedback-reader"),
            own_prefix=f"{group}-alerts-",
        ),
        StageAccess("alerts-sink", reads=(t.alerts,), groups=(f"{group}-alerts-sink",)),
        StageAccess(
            "export", reads=(t.alerts,), writes=(t.dead_letter,), groups=(f"{group}-export",)
        ),
        StageAccess(
            "replay",
            reads=(t.raw, t.verdicts),
            groups=(f"{group}-replay-plan",),
            group_prefixes=(f"{group}-replay-",),
        ),
        StageAccess(
            "flows",
            reads=(t.raw, t.flow_verdicts),
            writes=(t.flow_verdicts, t.devices),
            groups=(f"{group}-flows", f"{group}-flows-sink"),
            own_prefix=f"{group}-flows-",
        ),
    ]


def principal_names(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """stage -> Kafka principal (``User:amlhp-<stage>`` unless overridden)."""
    names = {stage: f"User:{username(stage)}" for stage in PRINCIPALS if stage != "admin"}
    for stage, name in (overrides or {}).items():
        if stage not in names:
            raise InfraError(f"no stage {stage!r}; stages: {', '.join(names)}")
        names[stage] = name if name.startswith("User:") else f"User:{name}"
    return names


def stage_acls(settings: Settings, principals: Mapping[str, str] | None = None) -> list[Acl]:
    """The whole table, one row per ALLOW entry, in stage order."""
    names = principal_names(principals)
    rows: list[Acl] = []
    for access in stage_access(settings):
        who = names[access.stage]

        def add(resource: str, pattern: str, name: str, operation: str) -> None:
            row = Acl(access.stage, who, resource, pattern, name, operation)  # noqa: B023
            if row not in rows:
                rows.append(row)

        for topic in access.reads:
            add("topic", "literal", topic, "read")
        for topic in access.writes:
            add("topic", "literal", topic, "write")
        for group in access.groups:
            if not any(group.startswith(prefix) for prefix in access.group_prefixes):
                add("group", "literal", group, "read")
        for prefix in access.group_prefixes:
            add("group", "prefixed", prefix, "read")
        if access.own_prefix:
            for operation in ("create", "read", "write"):
                add("topic", "prefixed", access.own_prefix, operation)
    return rows


def acl_table(rows: Iterable[Acl]) -> str:
    """The table as Markdown (docs/infra.md carries this output)."""
    lines = [
        "| stage | principal | resource | pattern | name | operation |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r.stage} | `{r.principal}` | {r.resource} | {r.pattern} | `{r.name}` | {r.operation} |"
        for r in rows
    ]
    return "\n".join(lines)


def acl_dicts(rows: Iterable[Acl]) -> list[dict[str, str]]:
    return [asdict(r) for r in rows]


def _binding(row: Acl) -> object:
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    return AclBinding(
        ResourceType[row.resource.upper()],
        row.name,
        ResourcePatternType[row.pattern.upper()],
        row.principal,
        "*",
        AclOperation[row.operation.upper()],
        AclPermissionType.ALLOW,
    )


def apply_acls(admin: object, rows: list[Acl], timeout_s: float = 30.0) -> int:
    """Create the entries (existing ones are left as they are); return how many were sent.

    ``admin`` is a confluent-kafka ``AdminClient`` of a principal allowed to ALTER the
    cluster (the secured layout's admin)."""
    from confluent_kafka import KafkaException

    bindings = [_binding(row) for row in rows]
    futures = admin.create_acls(bindings, request_timeout=timeout_s)  # type: ignore[attr-defined]
    for binding, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            raise InfraError(f"Kafka refused the ACL {binding}: {exc.args[0].str()}") from exc
    return len(bindings)
