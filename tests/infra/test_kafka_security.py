"""The secured layouts' files and the ACL table, without a broker (the broker tests are in
``tests/streams/test_secure_pipeline.py``)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from amlhp.infra.kafka_acls import principal_names, stage_access, stage_acls
from amlhp.infra.kafka_config import secure_cluster_layout, server_properties, single_layout
from amlhp.infra.kafka_security import (
    BROKER_PRINCIPAL,
    PRINCIPALS,
    SecurityFiles,
    ensure_certificates,
    ensure_credentials,
    read_env_file,
    scram_format_args,
)
from amlhp.infra.paths import InfraPaths
from amlhp.pipeline.access import check_access
from amlhp.settings import Settings


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#")


def test_secured_layout_has_no_plaintext_listener_and_denies_by_default(tmp_path: Path) -> None:
    layout = secure_cluster_layout(InfraPaths(tmp_path))
    for node in layout.nodes:
        props = _props(server_properties(layout, node))
        assert "PLAINTEXT" not in props["listener.security.protocol.map"]
        assert props["listeners"].startswith(f"SASL_SSL://127.0.0.1:{node.port},")
        assert props["authorizer.class.name"].endswith("StandardAuthorizer")
        assert props["allow.everyone.if.no.acl.found"] == "false"
        assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
        assert props["listener.name.broker.ssl.client.auth"] == "required"
        assert props["listener.name.controller.ssl.client.auth"] == "required"
        assert props["super.users"] == f"{BROKER_PRINCIPAL};User:amlhp-admin"
    plain = single_layout(InfraPaths(tmp_path))
    assert "authorizer.class.name" not in _props(server_properties(plain, plain.nodes[0]))


def test_certificates_chain_to_the_ca_and_keys_are_private(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    files = SecurityFiles(tmp_path / "security")
    assert ensure_certificates(files, "127.0.0.1")
    assert not ensure_certificates(files, "127.0.0.1")  # kept: clients trust this CA
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    leaf = x509.load_pem_x509_certificates(files.broker_keystore.read_bytes())[0]
    leaf.verify_directly_issued_by(ca)
    ca_key = ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert leaf.subject.rfc4514_string() == "CN=amlhp-broker"
    for private in (files.ca_key, files.broker_keystore):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        assert b"PRIVATE KEY" in private.read_bytes()


def test_credentials_one_private_file_per_principal_made_once(tmp_path: Path) -> None:
    files = SecurityFiles(tmp_path / "security")
    first = ensure_credentials(files, "127.0.0.1:9392")
    assert ensure_credentials(files, "127.0.0.1:9392") == first
    assert sorted(first) == sorted(f"amlhp-{p}" for p in PRINCIPALS)
    assert len(set(first.values())) == len(PRINCIPALS)
    for principal in PRINCIPALS:
        path = files.env_file(principal)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        env = read_env_file(path)
        assert env["AMLHP_RDKAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["AMLHP_RDKAFKA_SSL_CA_LOCATION"] == str(files.ca)
        assert env["AMLHP_RDKAFKA_SASL_PASSWORD"] == first[f"amlhp-{principal}"]
    # only the admin is made at format (no stage password on a command line); the admin
    # makes the others once the brokers answer
    assert scram_format_args(first) == [
        "--add-scram",
        f"SCRAM-SHA-512=[name=amlhp-admin,password={first['amlhp-admin']}]",
    ]


def test_acls_grant_each_stage_what_it_touches_and_nothing_else() -> None:
    settings = Settings.model_validate({})
    rows = stage_acls(settings)
    names = principal_names()
    for access in stage_access(settings):
        mine = {(r.resource, r.pattern, r.name, r.operation) for r in rows
                if r.principal == names[access.stage]}  # fmt: skip
        expected = {("topic", "literal", t, "read") for t in access.reads}
        expected |= {("topic", "literal", t, "write") for t in access.writes}
        expected |= {("group", "literal", g, "read") for g in access.groups
                     if not any(g.startswith(p) for p in access.group_prefixes)}  # fmt: skip
        expected |= {("group", "prefixed", g, "read") for g in access.group_prefixes}
        if access.own_prefix:
            expected |= {("topic", "prefixed", access.own_prefix, op)
                         for op in ("create", "read", "write")}  # fmt: skip
        assert mine == expected, access.stage
    tap = [r for r in rows if r.stage == "tap"]
    assert [(r.name, r.operation) for r in tap] == [(settings.topic_raw, "write")]
    assert not any(r.operation == "create" and r.pattern == "literal" for r in rows)
    assert len({r.principal for r in rows}) == len(PRINCIPALS) - 1  # the admin needs none


def test_acls_command_prints_the_table_for_the_settings_and_principals() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "amlhp.cli", "infra", "kafka", "acls", "--principal",
         "tap=gateway-17", "--json"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "AMLHP_CONSUMER_GROUP": "site-7"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    expected = stage_acls(Settings.model_validate({"consumer_group": "site-7"}),
                          {"tap": "gateway-17"})  # fmt: skip
    assert rows == [r.__dict__ for r in expected]
    assert rows[0]["principal"] == "User:gateway-17"
    assert any(r["name"] == "site-7-alerts" for r in rows)


def test_access_check_is_skipped_on_plaintext() -> None:
    # no broker on this address: a check would have to wait; on PLAINTEXT it does not try
    settings = Settings.model_validate({"bootstrap_servers": "127.0.0.1:1"})
    assert check_access(settings, "worker", timeout_s=0.1) is False


def test_the_docs_acl_table_is_the_code_s() -> None:
    """docs/infra.md's ACL table cannot go stale: it is `amlhp infra kafka acls`' output."""
    from amlhp.infra.kafka_acls import acl_table

    docs = (Path(__file__).parents[2] / "docs" / "infra.md").read_text()
    assert acl_table(stage_acls(Settings.model_validate({}))) + "\n\n" in docs
