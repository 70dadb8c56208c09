"""The one Faust app factory of the pipeline's workers (packet worker, flow worker, ...).

Every Faust worker talks to the same cluster with the same guarantees, so the broker URL,
the credentials (translated from the librdkafka ``-X`` passthrough) and the app
configuration are written once: raw bytes in and out (each agent decodes with
:mod:`amlhp.wire`), in-memory table stores (tables recover from their changelog topics),
acks from all in-sync replicas, large messages, offsets from the earliest record for a new
group, a commit every second, and the settings' partition count and replication factor
for the topics Faust creates. A worker passes its own app id and any ``overrides``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from amlhp.settings import Settings


def faust_broker_url(bootstrap_servers: str) -> str:
    """librdkafka's ``h1:9092,h2:9092`` -> Faust's ``kafka://h1:9092;kafka://h2:9092``."""
    hosts = [h.strip() for h in bootstrap_servers.split(",") if h.strip()]
    return ";".join(f"kafka://{h}" for h in hosts)


def faust_credentials(settings: Settings) -> Any:
    """Translate the librdkafka security passthrough into Faust credentials (or None)."""
    import ssl

    import faust

    cfg = settings.kafka_config()
    protocol = str(cfg.get("security.protocol", "PLAINTEXT")).upper()
    if protocol == "PLAINTEXT":
        return None
    context = None
    if "SSL" in protocol:
        context = ssl.create_default_context(cafile=cfg.get("ssl.ca.location"))
        if "ssl.certificate.location" in cfg:
            context.load_cert_chain(cfg["ssl.certificate.location"], cfg.get("ssl.key.location"))
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=cfg.get("sasl.username"),
            password=cfg.get("sasl.password"),
            mechanism=str(cfg.get("sasl.mechanism", cfg.get("sasl.mechanisms", "PLAIN"))),
            ssl_context=context,
        )
    return faust.SSLCredentials(context)


def create_faust_app(settings: Settings, app_id: str, **overrides: Any) -> Any:
    """A Faust app with the pipeline's shared configuration (nothing runs until started)."""
    import faust

    data_root = settings.under_home(Path("var") / "faust")
    data_root.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    config: dict[str, Any] = {
        "broker": faust_broker_url(settings.bootstrap_servers),
        "broker_credentials": faust_credentials(settings),
        "store": "memory://",
        "value_serializer": "raw",
        "key_serializer": "raw",
        "web_enabled": False,
        # Faust makes a data folder even for memory stores; keep it under var/, not in the
        # working directory (Faust's default "{conf.name}-data")
        "datadir": str(data_root / "{conf.name}-data"),
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "topic_disable_leader": True,
        "producer_acks": -1,
        "producer_max_request_size": 8_000_000,
        "consumer_max_fetch_size": 8_000_000,
        "consumer_auto_offset_reset": "earliest",
        "broker_commit_interval": 1.0,
        # Faust's default session timeout is 60 s: a SIGKILLed worker's partitions would
        # wait that long for another member (issue 17's recovery goal is 15 s)
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": settings.session_timeout_s / 3.0,
        "stream_wait_empty": False,
    }
    config.update(overrides)
    return faust.App(app_id, **config)


def run_faust_worker(app: Any) -> None:
    """Run ``app`` in the foreground until SIGTERM/SIGINT (Faust's own worker loop)."""
    from faust.worker import Worker

    Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()
