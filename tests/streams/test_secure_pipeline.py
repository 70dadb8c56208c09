"""The pipeline on a secured broker (TLS, SASL/SCRAM-SHA-512, ACLs), each stage under its
own principal with only the ACLs of ``amlhp infra kafka acls``: exact accounting, the
incidents of ``amlhp alerts`` offline, clear refusals, and no secret in any output."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from amlhp.alerts.offline import alerts_from_captures
from amlhp.alerts.policy import AlertPolicy
from amlhp.infra.kafka_config import principal_settings
from amlhp.infra.kafka_security import PRINCIPALS, SecurityFiles, ensure_certificates
from amlhp.model.scorer import default_model_path, load_scorer
from amlhp.pipeline.children import StageProcess, amlhp_command, child_env, start_stage
from amlhp.pipeline.incident_dataset import wait_incidents
from amlhp.settings import Settings
from amlhp.streams.demo import wait_accounted, wait_groups_ready
from tests.support.incidents import comparable
from tests.support.kafka import KafkaHandle

pytestmark = pytest.mark.slow

IDLE_S = 5.0


@pytest.fixture
def admin(secure_admin: Settings) -> Settings:
    """The admin with this test's topics and ACLs (``secure_admin``), incidents closed
    after a short idle."""
    return secure_admin.model_copy(update={"alert_idle_close_s": IDLE_S})


def _as(admin: Settings, handle: KafkaHandle, principal: str) -> Settings:
    return principal_settings(admin, handle.layout, principal)


def _env(settings: Settings, **rdkafka: str) -> dict[str, str]:
    env = child_env(settings, {**os.environ, "OMP_NUM_THREADS": "1"})
    for name, value in rdkafka.items():
        env[f"AMLHP_RDKAFKA_{name.upper()}"] = value
    return env


def _secrets(handle: KafkaHandle) -> list[str]:
    from amlhp.infra.kafka_security import read_env_file

    files = handle.layout.security
    assert files is not None
    return [read_env_file(files.env_file(p))["AMLHP_RDKAFKA_SASL_PASSWORD"] for p in PRINCIPALS]


def test_whole_pipeline_with_least_privilege(
    admin: Settings, kafka_secure: KafkaHandle, demo_capture: Path, tmp_path: Path
) -> None:
    """Tap, worker, sink, alert stage and alert sink, each its own principal: every packet
    a verdict or a dead letter, the incidents those of ``amlhp alerts`` offline; a replay
    of the raw topic as the replay principal; and no password in any log, output or
    dataset of the run (nor in the broker's logs)."""
    group = admin.consumer_group
    logs, verdicts, alerts_dir = tmp_path / "logs", tmp_path / "verdicts", tmp_path / "alerts"

    def start(principal: str, name: str, *args: str) -> StageProcess:
        return start_stage(name, list(args), logs, _env(_as(admin, kafka_secure, principal)))

    procs = [
        start("worker", "worker", "worker", "--metrics-port", "0"),
        start("sink", "sink", "sink", "--out", str(verdicts), "--roll-seconds", "1"),
        start("alerts", "alerts", "alerts-stage", "--metrics-port", "0"),
        start("alerts-sink", "alert-sink", "alerts-sink", "--out", str(alerts_dir),
              "--roll-seconds", "0.5"),
    ]  # fmt: skip
    try:
        groups = [group, f"{group}-sink", f"{group}-alerts", f"{group}-alerts-sink"]
        wait_groups_ready(admin, groups, procs, 180.0)
        tap = subprocess.run(
            [*amlhp_command(), "tap", "-g", "gw-1", "--keep-timestamps", str(demo_capture)],
            env=_env(_as(admin, kafka_secure, "tap")),
            capture_output=True,
            timeout=300,
        )
        (logs / "tap.out").write_bytes(tap.stdout + tap.stderr)
        assert tap.returncode == 0, tap.stderr.decode()[-2000:]
        stats = json.loads(tap.stdout.decode().strip().splitlines()[-1])
        assert stats["failed_packets"] == 0
        assert stats["packets"] > 50_000
        ledger = wait_accounted(admin, verdicts, {"gw-1": (0, stats["packets"])}, procs, 300)
        assert ledger.complete, ledger.as_dict()
        assert ledger.duplicate_verdicts == 0
        assert ledger.both == 0
        assert ledger.verdicts + ledger.dead_packets == stats["packets"]
        incidents = wait_incidents(alerts_dir, procs, settle_s=IDLE_S + 4, timeout_s=240)
    finally:
        for proc in procs:
            proc.stop(timeout_s=20)

    # a replay of the raw topic as the replay principal: every packet re-scored once
    replay = subprocess.run(
        [*amlhp_command(), "replay", "--from", "2000-01-01T00:00:00", "--to",
         "2100-01-01T00:00:00", "-o", str(tmp_path / "replay"), "--json"],
        env=_env(_as(admin, kafka_secure, "replay")), capture_output=True, timeout=300,
    )  # fmt: skip
    (logs / "replay.out").write_bytes(replay.stdout + replay.stderr)
    assert replay.returncode == 0, replay.stderr.decode()[-2000:]
    totals = json.loads(replay.stdout.decode().strip().splitlines()[-1])["totals"]
    assert totals["packets"] == stats["packets"]
    assert totals["verdicts"] + totals["dead_letters"] == stats["packets"]

    scorer = load_scorer(default_model_path())
    offline = alerts_from_captures(
        [demo_capture], scorer, AlertPolicy.from_settings(admin), gateway="gw-1"
    ).incidents
    assert len(offline) >= 10
    assert comparable(incidents) == comparable(offline)

    secrets = _secrets(kafka_secure)
    broker_logs = [n.logs_dir for n in kafka_secure.layout.nodes]
    scanned = 0
    for root in (logs, verdicts, alerts_dir, tmp_path / "replay", *broker_logs):
        for path in root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                scanned += 1
                leaked = [s for s in secrets if s.encode() in data]
                assert not leaked, f"a password is in {path}"
    assert scanned >= 10


def _refused(args: list[str], env: dict[str, str]) -> str:
    """Run ``amlhp args``; it must exit 2 with one ``error:`` line and no traceback."""
    done = subprocess.run([*amlhp_command(), *args], env=env, capture_output=True, timeout=120)
    err = done.stderr.decode()
    assert done.returncode == 2, (done.returncode, err[-2000:])
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert len(err.splitlines()) <= 3, err  # the settings line, the error: no retry loop
    assert err.rstrip().endswith(errors[0])
    return errors[0]


def test_refusals_are_one_line_and_exit_2(
    admin: Settings, kafka_secure: KafkaHandle, demo_capture: Path, tmp_path: Path
) -> None:
    """A wrong password, a missing CA file, an untrusted CA, a topic and a consumer group
    the principal may not use: each a one-line error naming it, exit 2, no secret."""
    tap = _as(admin, kafka_secure, "tap")
    sink = _as(admin, kafka_secure, "sink")
    other_ca = SecurityFiles(tmp_path / "other-ca")
    ensure_certificates(other_ca, "127.0.0.1")
    pcap = str(demo_capture)
    worker = ["worker", "--metrics-port", "-1"]
    out = str(tmp_path / "out")
    cases = [
        (["tap", "-g", "gw", pcap], _env(tap, sasl_password="not-the-password"),
         "refused the login of user 'amlhp-tap' (SASL SCRAM-SHA-512)"),
        (worker, _env(_as(admin, kafka_secure, "worker"),
                      ssl_ca_location=str(tmp_path / "missing.pem")),
         f"ssl.ca.location={tmp_path / 'missing.pem'}: no such file"),
        (worker, _env(_as(admin, kafka_secure, "worker"), ssl_ca_location=str(other_ca.ca)),
         "the broker's certificate is not trusted by ssl.ca.location"),
        (["tap", "-g", "gw", pcap], _env(sink),
         f"refused user 'amlhp-sink' (tap) topic '{admin.topic_raw}': no ACL allows it "
         "to write it"),
        (["sink", "--out", out, "--group", "someone-elses"], _env(sink),
         "refused user 'amlhp-sink' (sink) consumer group 'someone-elses'"),
    ]  # fmt: skip
    secrets = _secrets(kafka_secure)
    for args, env, expected in cases:
        line = _refused(args, env)
        assert expected in line, (args[0], line)
        assert not any(s in line for s in secrets)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.parquet"))
