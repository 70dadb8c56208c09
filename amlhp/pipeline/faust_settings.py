"""Translating the pipeline's settings into Faust's: the broker URL and the credentials.

Kept apart from :mod:`amlhp.pipeline.faust_app` (which holds the Faust internals the
pipeline relies on): this is Faust's public configuration only."""

from __future__ import annotations

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
