"""One frozen, typed settings object for every process of the pipeline.

Settings are read once, in ``main()`` of each command, from environment variables with
the ``AMLHP_`` prefix (each field documents its variable) and then overridden by CLI
flags. Nothing else in the code base reads the environment.

Any librdkafka property can be passed through, so that the project can be pointed at a
secured cluster:

* ``AMLHP_RDKAFKA_<NAME>``: ``NAME`` upper-cased with dots as underscores, for example
  ``AMLHP_RDKAFKA_SECURITY_PROTOCOL=SASL_SSL`` or ``AMLHP_RDKAFKA_SASL_PASSWORD=...``.
* ``-X name=value`` on the command line (like kcat), for example
  ``-X sasl.mechanism=SCRAM-SHA-512``.

Child processes (the demo's and the benchmarks' stages) get the properties as variables,
so a property whose name the variable form cannot spell (an underscore or a capital) is
refused there with a :class:`ConfigError` (:func:`rdkafka_env_name`).

Values of sensitive properties (passwords, secrets, keys, tokens) are kept as
:class:`pydantic.SecretStr` and never appear in ``repr``, logs or status output.

``AMLHP_HOME`` names the one folder that holds what the project writes: ``var/`` (broker
data, logs, pid files), ``.cache/`` (the Kafka jars) and ``out/`` (datasets, results). It
defaults to the working directory when the settings are built, so ``make demo`` in a
checkout keeps using the checkout; an installed ``amlhp`` run elsewhere writes there.
Child processes get the parent's home through :func:`amlhp.pipeline.children.child_env`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from amlhp.errors import ConfigError

ENV_PREFIX = "AMLHP_"
RDKAFKA_ENV_PREFIX = "AMLHP_RDKAFKA_"
_SENSITIVE_MARKERS = ("password", "secret", "key", "token", "credentials", "jaas")


def default_home() -> Path:
    """The home folder when ``AMLHP_HOME`` is not set: the working directory."""
    return Path.cwd()


def is_sensitive(name: str) -> bool:
    """True when a librdkafka property holds a secret (by name)."""
    lowered = name.lower()
    if lowered in {"ssl.key.location", "ssl.keystore.location"}:
        return False  # a path, not a secret
    return any(marker in lowered for marker in _SENSITIVE_MARKERS)


class TopicNames(BaseModel):
    """Names of the pipeline's Kafka topics."""

    model_config = ConfigDict(frozen=True)

    raw: str = Field(
        "amlhp.packets.raw", description="env AMLHP_TOPIC_RAW: raw packet batches from the taps"
    )
    verdicts: str = Field(
        "amlhp.verdicts",
        description="env AMLHP_TOPIC_VERDICTS: per-packet verdicts (amlhp.verdict v3)",
    )
    dead_letter: str = Field(
        "amlhp.deadletter",
        description="env AMLHP_TOPIC_DEAD_LETTER: refused packets and messages, with reason codes",
    )
    flow_verdicts: str = Field(
        "amlhp.flows.verdicts",
        description="env AMLHP_TOPIC_FLOW_VERDICTS: flow-level verdicts of the flow worker",
    )
    devices: str = Field(
        "amlhp.devices",
        description="env AMLHP_TOPIC_DEVICES: the device inventory (compacted, amlhp.device v1)",
    )
    explanations: str = Field("amlhp.explanations", description="env AMLHP_TOPIC_EXPLANATIONS")
    alerts: str = Field("amlhp.alerts", description="env AMLHP_TOPIC_ALERTS")
    alert_ticks: str = Field("amlhp.alerts.ticks", description="env AMLHP_TOPIC_ALERT_TICKS")
    feedback: str = Field(
        "amlhp.feedback",
        description="env AMLHP_TOPIC_FEEDBACK: analysts' verdicts on incidents (compacted)",
    )

    def all(self) -> list[str]:
        """Every topic name, in the order of the fields."""
        return [getattr(self, name) for name in type(self).model_fields]


class Settings(BaseSettings):
    """Everything a pipeline process needs to know, frozen once built."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="ignore",
        case_sensitive=False,
    )

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="env AMLHP_BOOTSTRAP_SERVERS: Kafka bootstrap servers"
    )
    topic_raw: str = Field(
        "amlhp.packets.raw", description="env AMLHP_TOPIC_RAW: raw packet batches from the taps"
    )
    topic_verdicts: str = Field(
        "amlhp.verdicts",
        description="env AMLHP_TOPIC_VERDICTS: per-packet verdicts (amlhp.verdict v3)",
    )
    topic_dead_letter: str = Field(
        "amlhp.deadletter",
        description="env AMLHP_TOPIC_DEAD_LETTER: refused packets and messages, with reason codes",
    )
    topic_flow_verdicts: str = Field(
        "amlhp.flows.verdicts",
        description="env AMLHP_TOPIC_FLOW_VERDICTS: flow-level verdicts of the flow worker",
    )
    topic_devices: str = Field(
        "amlhp.devices",
        description="env AMLHP_TOPIC_DEVICES: the device inventory of the flow worker "
        "(compacted: the latest entry per gateway and host; amlhp.device v1)",
    )
    topic_explanations: str = Field(
        "amlhp.explanations",
        description="env AMLHP_TOPIC_EXPLANATIONS: sampled per-packet explanations",
    )
    topic_alerts: str = Field(
        "amlhp.alerts", description="env AMLHP_TOPIC_ALERTS: incidents (amlhp.alert v4)"
    )
    topic_alert_ticks: str = Field(
        "amlhp.alerts.ticks",
        description="env AMLHP_TOPIC_ALERT_TICKS: the alert stage's clock ticks, one per "
        "partition and second, so that idle gateways' incidents close",
    )
    topic_feedback: str = Field(
        "amlhp.feedback",
        description="env AMLHP_TOPIC_FEEDBACK: analysts' verdicts on incidents, `amlhp "
        "alerts-feedback` (compacted: the latest per incident; amlhp.feedback v1)",
    )
    alert_window_s: float = Field(
        10.0, gt=0, description="env AMLHP_ALERT_WINDOW_S: evidence window (event time)"
    )
    alert_quiet_s: float = Field(
        60.0,
        gt=0,
        description="env AMLHP_ALERT_QUIET_S: an incident closes this long "
        "(event time) after its last packet",
    )
    alert_update_s: float = Field(
        30.0,
        gt=0,
        description="env AMLHP_ALERT_UPDATE_S: at most one update per incident "
        "this often (event time)",
    )
    alert_idle_close_s: float = Field(
        30.0,
        gt=0,
        description="env AMLHP_ALERT_IDLE_CLOSE_S: close a gateway's incidents "
        "when none of its verdicts came for this long (wall clock, stream only)",
    )
    alert_min_packets: int = Field(
        20,
        ge=1,
        description="env AMLHP_ALERT_MIN_PACKETS: malicious packets of one kind "
        "a host needs in one window",
    )
    alert_min_score: float = Field(
        0.84, ge=0, le=1, description="env AMLHP_ALERT_MIN_SCORE: their mean malicious_score"
    )
    alert_scan_min_targets: int = Field(
        10,
        ge=1,
        description="env AMLHP_ALERT_SCAN_MIN_TARGETS: distinct (peer, port) "
        "a scan reaches in one window",
    )
    alert_brute_min_attempts: int = Field(
        5,
        ge=1,
        description="env AMLHP_ALERT_BRUTE_MIN_ATTEMPTS: connection attempts "
        "(distinct client ports) of a brute force in one window",
    )
    alert_dos_min_pps: float = Field(
        10.0,
        gt=0,
        description="env AMLHP_ALERT_DOS_MIN_PPS: malicious packets per second of a flood",
    )
    alert_target_min_sources: int = Field(
        16,
        ge=2,
        description="env AMLHP_ALERT_TARGET_MIN_SOURCES: distinct sources that "
        "make a host the target of a distributed attack in one window",
    )
    alert_explain_every: int = Field(
        0,
        ge=0,
        description="env AMLHP_ALERT_EXPLAIN_EVERY: the workers' --explain-every, "
        "to name an explained packet in each alert (0: none)",
    )
    alert_minutes_s: float = Field(
        300.0, gt=0, description="env AMLHP_ALERT_MINUTES_S: the minutes scale of host behaviour"
    )
    alert_hour_s: float = Field(
        3600.0, gt=0, description="env AMLHP_ALERT_HOUR_S: the hour scale of host behaviour"
    )
    alert_behaviour_scale: float = Field(
        1.5,
        gt=0,
        description="env AMLHP_ALERT_BEHAVIOUR_SCALE: factor on every behaviour detector's "
        "thresholds (fitted leaving one source out; higher: fewer incidents)",
    )
    alert_model_min_share: float = Field(
        0.7,
        ge=0,
        le=1,
        description="env AMLHP_ALERT_MODEL_MIN_SHARE: the model's evidence must be this share "
        "of a host's packets to count at the minutes and hour scales",
    )
    alert_model_packets_scale: float = Field(
        2.0,
        gt=0,
        description="env AMLHP_ALERT_MODEL_PACKETS_SCALE: factor on the model's packet counts "
        "at the minutes and hour scales",
    )
    alert_flow_min_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="env AMLHP_ALERT_FLOW_MIN_SHARE: the attack flow model's alarmed flows "
        "must be this share of the flows a host started to count",
    )
    alert_flow_wait_s: float = Field(
        0.0,
        ge=0,
        description="env AMLHP_ALERT_FLOW_WAIT_S: seconds the alert stage waits for the flow "
        "worker's clock to pass a verdict batch (0: flows applied as they come)",
    )
    alert_arp_rebind_s: float = Field(
        300.0,
        gt=0,
        description="env AMLHP_ALERT_ARP_REBIND_S: an address's ARP binding moves to another "
        "MAC once its owner has been silent this long (before: a claim by another MAC is a "
        "conflict, the sign of ARP cache poisoning)",
    )
    alert_suppressions: Path | None = Field(
        None,
        description="env AMLHP_ALERT_SUPPRESSIONS: the allow-list (YAML) of the alert stage and "
        "`amlhp alerts`; reloaded when it changes (docs/alerts.md#suppression)",
    )
    sites_dir: Path | None = Field(
        None,
        description="env AMLHP_SITES_DIR: the folder of learnt sites (`amlhp model adapt` "
        "writes there; the worker, replay, score and alerts judge each profile's gateways "
        "with it; the worker reloads it when it changes; docs/model.md#learning-a-site)",
    )
    partitions: int = Field(4, ge=1, description="env AMLHP_PARTITIONS: partitions per topic")
    replication_factor: int = Field(
        1, ge=1, description="env AMLHP_REPLICATION_FACTOR: replicas per topic"
    )
    retention_ms: int = Field(
        7 * 24 * 3600 * 1000, ge=-1, description="env AMLHP_RETENTION_MS: topic retention"
    )
    consumer_group: str = Field(
        "amlhp",
        description="env AMLHP_CONSUMER_GROUP: consumer group of the workers (stages add a suffix)",
    )
    session_timeout_s: float = Field(
        10.0,
        ge=6.0,
        le=300.0,
        description="env AMLHP_SESSION_TIMEOUT_S: consumer group session timeout of the "
        "workers and sinks: how long a killed member's partitions wait before another "
        "member takes them (heartbeats every third of it; the broker's minimum is 6 s)",
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="env AMLHP_METRICS_HOST: address the stages' /metrics endpoints listen "
        "on (0.0.0.0: every interface, for a Prometheus on another machine)",
    )
    metrics_tls_cert: Path | None = Field(
        None,
        description="env AMLHP_METRICS_TLS_CERT: PEM certificate chain; with "
        "AMLHP_METRICS_TLS_KEY the /metrics endpoints serve HTTPS only",
    )
    metrics_tls_key: Path | None = Field(
        None, description="env AMLHP_METRICS_TLS_KEY: the PEM private key of that certificate"
    )
    metrics_tls_ca: Path | None = Field(
        None,
        description="env AMLHP_METRICS_TLS_CA: the CA Prometheus trusts for the endpoints' "
        "certificate (`amlhp infra prometheus up`; default: the system's)",
    )
    metrics_user: str | None = Field(
        None,
        description="env AMLHP_METRICS_USER: with AMLHP_METRICS_PASSWORD, the endpoints "
        "answer only HTTP basic authentication as this user",
    )
    metrics_password: SecretStr | None = Field(
        None, description="env AMLHP_METRICS_PASSWORD: that user's password (never logged)"
    )
    payload_bytes: int = Field(
        64, ge=1, le=1500, description="env AMLHP_PAYLOAD_BYTES: P, payload bytes kept per packet"
    )
    grafana_token: SecretStr | None = Field(
        None,
        description="env AMLHP_GRAFANA_TOKEN: Grafana service-account token for "
        "`amlhp dashboards push` (never stored in the repository)",
    )
    export_webhook_token: SecretStr | None = Field(
        None,
        description="env AMLHP_EXPORT_WEBHOOK_TOKEN: bearer token `amlhp alerts export` sends "
        "to an http(s) webhook (never logged)",
    )
    home: Path = Field(
        default_factory=default_home,
        description="env AMLHP_HOME: folder of var/, .cache/ and out/ (default: the "
        "working directory)",
    )
    rdkafka: Mapping[str, str | SecretStr] = Field(
        default_factory=dict,
        description="env AMLHP_RDKAFKA_<NAME>: any librdkafka property (also CLI -X name=value)",
    )

    @model_validator(mode="after")
    def _metrics_pairs(self) -> Settings:
        """TLS needs both files and basic authentication both halves, or neither."""
        if (self.metrics_tls_cert is None) != (self.metrics_tls_key is None):
            raise ValueError("AMLHP_METRICS_TLS_CERT and AMLHP_METRICS_TLS_KEY go together")
        if (self.metrics_user is None) != (self.metrics_password is None):
            raise ValueError("AMLHP_METRICS_USER and AMLHP_METRICS_PASSWORD go together")
        return self

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        """Relative to the working directory of the process that reads it, then fixed."""
        return value.expanduser().absolute()

    @field_validator("rdkafka", mode="before")
    @classmethod
    def _protect_secrets(cls, value: Any) -> dict[str, str | SecretStr]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValueError("rdkafka must be a mapping of librdkafka property names to values")
        out: dict[str, str | SecretStr] = {}
        for name, raw in value.items():
            text = raw.get_secret_value() if isinstance(raw, SecretStr) else str(raw)
            out[str(name)] = SecretStr(text) if is_sensitive(str(name)) else text
        return out

    @property
    def topics(self) -> TopicNames:
        """The ``topic_<name>`` settings as :class:`TopicNames` (one field each)."""
        return TopicNames.model_validate(
            {name: getattr(self, f"topic_{name}") for name in TopicNames.model_fields}
        )

    def kafka_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka configuration with secrets revealed, for the client constructors only."""
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        for name, value in self.rdkafka.items():
            config[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
        config.update(extra)
        return config

    def under_home(self, path: Path) -> Path:
        """``path`` as a command means it: relative paths (the defaults such as
        ``out/verdicts`` included) are under the home folder."""
        return path if path.is_absolute() else self.home / path

    def redacted(self) -> dict[str, Any]:
        """A loggable view of the settings: every secret replaced by ``**********``."""
        data = self.model_dump(mode="json", exclude={"rdkafka"})  # SecretStr -> "**********"
        data["rdkafka"] = {
            name: ("**********" if isinstance(value, SecretStr) else value)
            for name, value in self.rdkafka.items()
        }
        return data


def user_cache_dir() -> Path:
    """The user's cache folder for amlhp: ``$XDG_CACHE_HOME/amlhp``, else ``~/.cache/amlhp``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "amlhp"


def settings_table() -> str:
    """The Markdown table of every setting's variable, default and meaning (docs/infra.md
    holds it; a test keeps the two equal)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        variable, _, meaning = (info.description or "").removeprefix("env ").partition(": ")
        if info.default_factory is not None:
            default = "the working directory" if name == "home" else "none"
        elif info.default is None:
            default = "unset"
        else:
            default = f"`{info.default}`"
        lines.append(f"| `{variable}` | {default} | {meaning.replace('|', '/')} |")
    return "\n".join(lines)


def rdkafka_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Collect ``AMLHP_RDKAFKA_*`` variables as librdkafka properties."""
    props: dict[str, str] = {}
    for key, value in environ.items():
        if key.upper().startswith(RDKAFKA_ENV_PREFIX) and len(key) > len(RDKAFKA_ENV_PREFIX):
            name = key[len(RDKAFKA_ENV_PREFIX) :].lower().replace("_", ".")
            props[name] = value
    return props


def rdkafka_env_name(name: str) -> str:
    """The ``AMLHP_RDKAFKA_*`` variable that :func:`rdkafka_from_env` reads back as ``name``.

    The variable reads underscores as dots and is case-insensitive, so a property whose
    name has an underscore or a capital cannot be passed that way: a :class:`ConfigError`
    rather than a child process that silently gets a different property.
    """
    env = RDKAFKA_ENV_PREFIX + name.upper().replace(".", "_")
    if list(rdkafka_from_env({env: ""})) != [name]:
        raise ConfigError(
            f"librdkafka property {name!r} cannot be passed to a child process as {env} "
            "(the variable reads back every '_' as '.' and lower-cases the name)"
        )
    return env


def parse_rdkafka_flags(flags: list[str] | None) -> dict[str, str]:
    """Parse ``-X name=value`` flags; a malformed flag is a :class:`ConfigError`."""
    props: dict[str, str] = {}
    for flag in flags or []:
        name, sep, value = flag.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"-X expects name=value, got {flag.split('=')[0]!r}")
        props[name.strip()] = value
    return props


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    rdkafka_flags: list[str] | None = None,
) -> Settings:
    """Build the settings: defaults < environment < CLI overrides (``None`` values ignored).

    Called once from a command's entry point; the result is passed down explicitly.
    """
    rdkafka = rdkafka_from_env(os.environ)
    rdkafka.update(parse_rdkafka_flags(rdkafka_flags))
    values = {k: v for k, v in (overrides or {}).items() if v is not None}
    values["rdkafka"] = rdkafka
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_invalid(exc, flagged=set(values) - {"rdkafka"})) from exc


def _invalid(exc: ValidationError, flagged: set[str]) -> str:
    """A pydantic error as the user wrote the setting: the variable (or the flag's setting),
    what is wrong, and the value unless it is a secret."""
    parts = []
    for error in exc.errors():
        if not error["loc"]:  # a rule across fields: its input is every value, secrets too
            parts.append(str(error["msg"]).removeprefix("Value error, "))
            continue
        field = str(error["loc"][0])
        where = f"--{field.replace('_', '-')}" if field in flagged else env_name(field)
        shown = "" if field in SECRET_FIELDS else f" (got {error.get('input')!r})"
        parts.append(f"{where}: {error['msg']}{shown}")
    return "invalid setting " + "; ".join(parts)


#: fields whose values are never echoed, not even in an error
SECRET_FIELDS = frozenset({"grafana_token", "export_webhook_token", "metrics_password", "rdkafka"})
#: variables with the prefix that are not settings: the test suite's own
OTHER_ENV_PREFIXES = (RDKAFKA_ENV_PREFIX, "AMLHP_TEST_")


def env_name(field: str) -> str:
    """The environment variable of a settings field."""
    return ENV_PREFIX + field.upper()


def unknown_env(environ: Mapping[str, str]) -> list[str]:
    """``AMLHP_*`` variables that name no setting (a typo is otherwise silently ignored),
    each with the closest known name when there is one."""
    import difflib

    known = [env_name(f) for f in Settings.model_fields if f != "rdkafka"]
    out = []
    for key in sorted(environ):
        name = key.upper()
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        if name.startswith(OTHER_ENV_PREFIXES):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        out.append(f"{key} (did you mean {close[0]}?)" if close else key)
    return out
