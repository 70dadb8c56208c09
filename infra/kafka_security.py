"""The secured local layouts' key material: a CA, broker certificates and SCRAM principals.

``amlhp infra kafka up --secure`` runs Kafka as a shared production cluster is run: clients
connect over TLS and authenticate with SASL/SCRAM-SHA-512, and the KRaft
``StandardAuthorizer`` refuses whatever no ACL allows. The material it needs is made
locally on first start, with Python's ``cryptography`` (no ``openssl`` command line to
parse), under ``var/kafka/<layout>/security/``:

* ``ca.pem``: a self-signed CA (EC P-256, ten years); its key ``ca.key`` stays beside it,
  mode 0600, so that more certificates can be issued later;
* ``broker.pem``: the brokers' PKCS#8 key and certificate chain (Kafka's ``PEM`` keystore
  type), for ``127.0.0.1`` and ``localhost``. The brokers also present it to each other and
  to the controllers over mutual TLS, where it is the principal ``User:CN=amlhp-broker``;
* ``credentials/<principal>.env``: one file per stage principal (mode 0600) with the
  ``AMLHP_BOOTSTRAP_SERVERS`` and ``AMLHP_RDKAFKA_*`` settings that principal connects with,
  ready for ``set -a; . file; set +a`` or systemd's ``EnvironmentFile=``. The passwords are
  random and written only there. The admin's reaches the brokers as a SCRAM credential
  when the storage is formatted (``kafka-storage format --add-scram``, KIP-900: the only
  way to create the first SCRAM user of a KRaft cluster); the admin then creates the
  others at every start (:func:`upsert_scram_users`, idempotent).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from amlhp.infra.exceptions import InfraError
from amlhp.settings import rdkafka_from_env

#: the SASL mechanism of the secured layouts (Kafka's SCRAM with SHA-512)
SCRAM_MECHANISM = "SCRAM-SHA-512"
#: the subject of the brokers' certificate: their principal over mutual TLS
BROKER_CN = "amlhp-broker"
BROKER_PRINCIPAL = f"User:CN={BROKER_CN}"
#: the principals a secured layout creates, one per stage plus the administrator
PRINCIPALS = (
    "admin",
    "tap",
    "worker",
    "sink",
    "alerts",
    "alerts-sink",
    "export",
    "replay",
    "flows",
)
_VALID_DAYS = 3650


@dataclass(frozen=True)
class SecurityFiles:
    """Where a secured layout keeps its CA, broker keystore and principals' credentials."""

    home: Path

    @property
    def ca(self) -> Path:
        return self.home / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.home / "ca.key"

    @property
    def broker_keystore(self) -> Path:
        return self.home / "broker.pem"

    @property
    def credentials(self) -> Path:
        return self.home / "credentials"

    def env_file(self, principal: str) -> Path:
        if principal not in PRINCIPALS:
            raise InfraError(f"no principal {principal!r}; the secured layout has {PRINCIPALS}")
        return self.credentials / f"{principal}.env"


def username(principal: str) -> str:
    """The SCRAM user name of a stage principal (``amlhp-<stage>``)."""
    return f"amlhp-{principal}"


def _write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read (created so, never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def ensure_certificates(files: SecurityFiles, host: str) -> bool:
    """Make the CA and the brokers' keystore unless both exist; True when made now."""
    if files.ca.is_file() and files.broker_keystore.is_file():
        return False
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "amlhp local CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    if host not in {"127.0.0.1", "localhost"}:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, BROKER_CN)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    _write_private(
        files.ca_key,
        ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    files.ca.write_bytes(ca_cert.public_bytes(pem))
    # Kafka's PEM keystore: an unencrypted PKCS#8 key, then the chain (leaf first)
    _write_private(
        files.broker_keystore,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert.public_bytes(pem)
        + ca_cert.public_bytes(pem),
    )
    return True


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of a credentials file (values single-quoted when written)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#") or "=" not in line:
            continue
        name, value = line.split("=", 1)
        values[name.strip()] = value.strip().strip("'")
    return values


def client_env(files: SecurityFiles, bootstrap_servers: str, user: str, password: str) -> str:
    """The settings one principal connects with, as an environment file."""
    lines = {
        "AMLHP_BOOTSTRAP_SERVERS": bootstrap_servers,
        "AMLHP_RDKAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "AMLHP_RDKAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
        "AMLHP_RDKAFKA_SASL_USERNAME": user,
        "AMLHP_RDKAFKA_SASL_PASSWORD": password,
        "AMLHP_RDKAFKA_SSL_CA_LOCATION": str(files.ca),
    }
    head = "# made by `amlhp infra kafka up --secure`: a secret, keep it mode 0600\n"
    return head + "".join(f"{name}='{value}'\n" for name, value in lines.items())


def ensure_credentials(files: SecurityFiles, bootstrap_servers: str) -> dict[str, str]:
    """Each principal's SCRAM password (made and written once); {user name: password}."""
    passwords: dict[str, str] = {}
    for principal in PRINCIPALS:
        path = files.env_file(principal)
        user = username(principal)
        if path.is_file():
            password = read_env_file(path).get("AMLHP_RDKAFKA_SASL_PASSWORD", "")
            if not password:
                raise InfraError(f"{path} has no AMLHP_RDKAFKA_SASL_PASSWORD; delete it")
        else:
            password = secrets.token_urlsafe(24)
            _write_private(path, client_env(files, bootstrap_servers, user, password).encode())
        passwords[user] = password
    return passwords


def scram_format_args(passwords: dict[str, str]) -> list[str]:
    """``kafka-storage format`` arguments that create the admin's SCRAM user at first
    start (the only way to make the first one; the others: :func:`upsert_scram_users`)."""
    user = username("admin")
    return ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={passwords[user]}]"]


def upsert_scram_users(admin: object, passwords: dict[str, str], timeout_s: float = 30.0) -> int:
    """Create or update the stage principals' SCRAM credentials through the admin
    (``AlterUserScramCredentials``, KIP-554): idempotent, and a principal added to
    :data:`PRINCIPALS` later gets its user on the next start. Returns how many."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    changes = [
        UserScramCredentialUpsertion(user, info, password.encode())
        for user, password in passwords.items()
        if user != username("admin")
    ]
    futures = admin.alter_user_scram_credentials(  # type: ignore[attr-defined]
        changes, request_timeout=timeout_s
    )
    for user, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            raise InfraError(
                f"creating the SCRAM user {user!r} failed: {exc.args[0].str()}"
            ) from None
    return len(changes)


def admin_client_config(files: SecurityFiles, bootstrap_servers: str) -> dict[str, str]:
    """The librdkafka settings of the admin principal (waiting for brokers, applying ACLs)."""
    return {
        "bootstrap.servers": bootstrap_servers,
        **rdkafka_from_env(read_env_file(files.env_file("admin"))),
    }


def security_properties(files: SecurityFiles) -> dict[str, object]:
    """The broker properties shared by every node of a secured layout (listeners aside)."""
    return {
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        # the server side of SCRAM needs only the login module (no credentials: brokers
        # talk to each other over mutual TLS, not SASL)
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": files.broker_keystore,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": files.ca,
        # brokers and controllers authenticate each other by certificate
        "listener.name.broker.ssl.client.auth": "required",
        "listener.name.controller.ssl.client.auth": "required",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"{BROKER_PRINCIPAL};User:{username('admin')}",
    }
