"""What each stage touches on Kafka, and a check at start that it may.

On a secured cluster a stage that lacks a permission, or whose password or CA is wrong,
would otherwise fail late and noisily: librdkafka retries a refused login forever (a log
line every few milliseconds, held back to one a minute but never an exit), a producer
without WRITE times its messages out after two minutes, and Faust's client raises from
deep inside its event loop. So every stage, before it starts its clients, asks the
cluster once (:func:`check_access`): it logs in, describes its topics with the operations
its principal is authorised for (KIP-430), and describes its consumer groups the same way
(DescribeGroups, not ListConsumerGroupOffsets: librdkafka's admin client dereferences a
null group handle when an OffsetFetch answer says the coordinator is still loading, and
the stage died of a segmentation fault right after a broker start, librdkafka issue
5040). Whatever is
refused ends the stage with one line naming it (:class:`KafkaAccessError`, exit 2); a
cluster that does not answer in time is left to the clients' usual reconnects.

The check runs where a cluster has security (``security.protocol`` other than
PLAINTEXT): there are no principals or ACLs on a plaintext listener to check, and the
local plaintext broker creates topics on first use, which a check would race.

What a stage needs comes from :func:`amlhp.infra.kafka_acls.stage_access`, the source of
the ACL table too: the permissions granted and the permissions checked cannot drift apart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from amlhp.infra.kafka_acls import StageAccess, stage_access
from amlhp.pipeline.exceptions import PipelineError
from amlhp.settings import Settings

log = logging.getLogger(__name__)

#: how long the check waits for the cluster before leaving it to the clients' reconnects
CHECK_TIMEOUT_S = 15.0


class KafkaAccessError(PipelineError):
    """The cluster refused this stage's login, TLS handshake, topic or group."""


#: process names (as in logs and metrics) whose access is another stage's
PROCESS_STAGE = {"alert-sink": "alerts-sink", "flow-sink": "flows"}


def access_of(settings: Settings, process: str) -> StageAccess:
    stage = PROCESS_STAGE.get(process, process)
    for access in stage_access(settings):
        if access.stage == stage:
            return access
    raise KeyError(stage)


def secured(settings: Settings) -> bool:
    """True when the cluster has security to check (module docstring)."""
    protocol = str(settings.kafka_config().get("security.protocol", "PLAINTEXT"))
    return protocol.upper() != "PLAINTEXT"


def _who(settings: Settings) -> str:
    config = settings.kafka_config()
    user = config.get("sasl.username")
    return f"user {user!r}" if user else "this client"


def _login_refusal(settings: Settings, error: Any) -> str | None:
    """The one-line text of a refused login or TLS handshake, else None (keep waiting)."""
    from confluent_kafka import KafkaError

    config = settings.kafka_config()
    code, text = error.code(), error.str()
    if "transport failure" in text or "Disconnected" in text:
        return None  # the connection dropped mid-login (a broker restarting): not a refusal
    if code == KafkaError._AUTHENTICATION or "SASL authentication error" in text:
        mechanism = config.get("sasl.mechanism", config.get("sasl.mechanisms", "PLAIN"))
        return (
            f"Kafka refused the login of {_who(settings)} (SASL {mechanism}): wrong user "
            f"name or password, or no such user ({settings.bootstrap_servers})"
        )
    if code == KafkaError._SSL or "SSL handshake failed" in text:
        ca = config.get("ssl.ca.location", "the system's CAs")
        reason = "certificate verify failed" if "verify failed" in text else text.split(": ")[-1]
        return (
            f"TLS to {settings.bootstrap_servers} refused: the broker's certificate is not "
            f"trusted by ssl.ca.location={ca} ({reason})"
        )
    return None


#: the TLS files a client reads (librdkafka's own error for a missing one is OpenSSL's)
TLS_FILES = ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location")


def _client(settings: Settings, errors: list[Any]) -> Any:
    from pathlib import Path

    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    # no logger: librdkafka's own lines would repeat what the refusal says
    config = settings.kafka_config(**{"error_cb": errors.append, "log_level": 0})
    for name in TLS_FILES:
        path = config.get(name)
        if path and not Path(str(path)).exists():
            raise KafkaAccessError(f"TLS: {name}={path}: no such file")
    try:
        return AdminClient(config)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else exc
        text = error.str() if hasattr(error, "str") else str(error)
        if "ssl.ca.location" in text or "ssl.certificate.location" in text:
            raise KafkaAccessError(f"TLS settings refused by the Kafka client: {text}") from None
        raise KafkaAccessError(f"Kafka client settings refused: {text}") from None


def _wait(
    admin: Any, futures: Sequence[Any], errors: list[Any], settings: Settings, deadline: float
) -> bool:
    """Poll until the futures are done (True) or the deadline passes (False); a refused
    login or handshake raises at once."""
    while True:
        for error in errors:
            refusal = _login_refusal(settings, error)
            if refusal is not None:
                raise KafkaAccessError(refusal)
        if all(f.done() for f in futures):
            return True
        if time.monotonic() > deadline:
            return False
        admin.poll(0.1)


def check_access(
    settings: Settings,
    stage: str,
    *,
    group: str | None = None,
    timeout_s: float = CHECK_TIMEOUT_S,
) -> bool:
    """Check that ``stage`` (a process name) may do what it needs on a secured cluster
    (module docstring).

    ``group`` is the consumer group it will use when named on its command line
    (``--group``, ``--app-id``): then only that group is checked. Returns False when
    nothing was checked (plaintext, or the cluster did not answer in time); raises
    :class:`KafkaAccessError` on a refusal.
    """
    if not secured(settings):
        return False
    from confluent_kafka import KafkaError, KafkaException, TopicCollection
    from confluent_kafka.admin import AclOperation

    access = access_of(settings, stage)
    errors: list[Any] = []
    admin = _client(settings, errors)
    deadline = time.monotonic() + timeout_s
    topics = list(dict.fromkeys([*access.reads, *access.writes]))
    wanted = {t: set() for t in topics}  # type: dict[str, set[str]]
    for topic in access.reads:
        wanted[topic].add("READ")
    for topic in access.writes:
        wanted[topic].add("WRITE")
    described = (
        admin.describe_topics(
            TopicCollection(topics), request_timeout=timeout_s, include_authorized_operations=True
        )
        if topics
        else {}
    )
    # a stage named its own group (--group, --app-id): that one; else every group it uses
    group_names = [group] if group else list(dict.fromkeys(access.groups))
    listed = (
        admin.describe_consumer_groups(
            group_names, request_timeout=timeout_s, include_authorized_operations=True
        )
        if group_names
        else {}
    )
    futures = [*described.values(), *listed.values()]
    if not _wait(admin, futures, errors, settings, deadline):
        log.warning(
            "could not check %s's access: %s did not answer in %.0f s",
            stage,
            settings.bootstrap_servers,
            timeout_s,
        )
        # the requests time out by themselves (request_timeout): let them, because a
        # client destroyed with requests in flight calls back into freed futures
        _wait(admin, futures, [], settings, deadline + 10.0)
        return False
    who = _who(settings)
    for topic, future in described.items():
        try:
            description = future.result()
        except KafkaException as exc:
            code = exc.args[0].code() if exc.args else None
            if code == KafkaError.UNKNOWN_TOPIC_OR_PART:
                continue  # made later (auto-creation, `amlhp topics create`)
            if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                raise KafkaAccessError(
                    f"Kafka refused {who} ({stage}) topic {topic!r}: no ACL allows it to "
                    f"{' or '.join(sorted(wanted[topic])).lower()} it"
                ) from None
            raise KafkaAccessError(f"Kafka: describing topic {topic!r}: {exc}") from None
        allowed = description.authorized_operations
        if allowed is None:  # the cluster has no authorizer: nothing is refused
            continue
        names = {op.name for op in allowed}
        if AclOperation.ALL in allowed:
            continue
        missing = sorted(wanted[topic] - names)
        if missing:
            raise KafkaAccessError(
                f"Kafka refused {who} ({stage}) to {' and '.join(missing).lower()} topic "
                f"{topic!r} (allowed: {', '.join(sorted(n.lower() for n in names)) or 'nothing'})"
            )
    not_yet = {
        KafkaError.GROUP_ID_NOT_FOUND,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.NOT_COORDINATOR,
    }  # a group or coordinator not there yet: the clients wait for it, nothing refused
    for group, future in listed.items():
        try:
            allowed = future.result().authorized_operations
        except KafkaException as exc:
            code = exc.args[0].code() if exc.args else None
            if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
                allowed = []
            elif code in not_yet:
                continue
            else:
                raise KafkaAccessError(f"Kafka: consumer group {group!r}: {exc}") from None
        if allowed is None:  # the cluster has no authorizer
            continue
        if not {AclOperation.READ, AclOperation.ALL} & set(allowed):
            raise KafkaAccessError(
                f"Kafka refused {who} ({stage}) consumer group {group!r}: no ACL allows "
                f"it to read the group"
            )
    return True
