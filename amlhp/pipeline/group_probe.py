"""Consumer-group states, asked from a child process: librdkafka may abort the asker.

``AdminClient.describe_consumer_groups`` can trip an assertion inside librdkafka
(``rd_kafka_enq_once_del_source_return``, confluentinc/librdkafka#4605) while a group's
coordinator moves or loads, which aborts the whole process: it aborted ``make test`` on a
freshly started cluster. The demo, the fault suite and the tests only need to know when
their groups are stable, so they ask in a short-lived child (``python -m
amlhp.pipeline.group_probe``, the client configuration on stdin, never on the command
line) and treat a child that died as "not known yet".
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from typing import Any

log = logging.getLogger(__name__)

#: how long one probe may take before it counts as "not known yet"
PROBE_TIMEOUT_S = 60.0


def probe_groups(config: dict[str, Any], groups: list[str]) -> dict[str, tuple[str, int]]:
    """Group -> (state name, members) for the groups the coordinator knows; a group that
    is not known yet (or a probe that failed) is absent."""
    request = json.dumps({"config": config, "groups": groups})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "amlhp.pipeline.group_probe"],
            input=request,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        log.info("consumer-group probe timed out after %.0f s", PROBE_TIMEOUT_S)
        return {}
    if done.returncode != 0:
        log.info("consumer-group probe ended with %d: %s", done.returncode, done.stderr[-500:])
        return {}
    answer = json.loads(done.stdout)
    return {group: (str(v[0]), int(v[1])) for group, v in answer.items()}


def _main() -> int:
    from confluent_kafka.admin import AdminClient

    request = json.loads(sys.stdin.read())
    admin = AdminClient({**request["config"], "log_level": 0})
    futures = admin.describe_consumer_groups(request["groups"], request_timeout=30)
    answer: dict[str, tuple[str, int]] = {}
    for group, future in futures.items():
        try:
            desc = future.result()
        except Exception:  # noqa: BLE001 - not yet known to the coordinator: absent
            continue
        answer[group] = (desc.state.name, len(desc.members))
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
