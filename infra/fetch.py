"""Obtain the local infrastructure's programs: Kafka's jars from Maven Central, Prometheus.

Only Maven Central and Debian's archive are reachable from the project's machines, so the
broker is not a downloaded tarball but the runtime class path of ``kafka_2.13`` copied by
Maven (see ``infra/kafka/pom.xml``), and Prometheus is Debian's ``prometheus`` package.
Both steps are idempotent: a second fetch with the same pom is a directory check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from amlhp.infra.exceptions import FetchError
from amlhp.infra.paths import InfraPaths

_STAMP = ".amlhp-fetched"
# The classes we start; if a future pom drops one, fail at fetch time, not at `kafka up`.
_REQUIRED_JAR_PREFIXES = ("kafka_2.13-", "kafka-server-", "kafka-clients-", "log4j-slf4j2-impl-")


@dataclass(frozen=True)
class FetchResult:
    libs: Path
    version: str
    downloaded: bool
    jars: int


def _cached(libs: Path, digest: str) -> bool:
    stamp = libs / _STAMP
    return stamp.is_file() and stamp.read_text().strip() == digest


def kafka_libs_ready(paths: InfraPaths) -> Path:
    """The cached class path folder, or a :class:`FetchError` saying how to get it."""
    libs = paths.kafka_libs()
    if not _cached(libs, paths.pom_digest()):
        raise FetchError(
            f"Kafka {paths.kafka_version()} jars are not in {libs}: run `amlhp infra fetch`"
        )
    return libs


def fetch_kafka(paths: InfraPaths, *, force: bool = False) -> FetchResult:
    """Copy the broker's runtime jars into ``.cache/kafka/<version>/libs`` (atomic rename)."""
    version = paths.kafka_version()
    digest = paths.pom_digest()
    libs = paths.kafka_libs()
    if not force and _cached(libs, digest):
        return FetchResult(libs, version, downloaded=False, jars=len(list(libs.glob("*.jar"))))
    mvn = shutil.which("mvn")
    if mvn is None:
        raise FetchError("Maven (`mvn`) is not on PATH; install it (Debian: apt-get install maven)")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs.", dir=libs.parent))
    try:
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(paths.pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
            raise FetchError("mvn dependency:copy-dependencies failed:\n" + "\n".join(tail))
        names = [p.name for p in staging.glob("*.jar")]
        missing = [
            pre for pre in _REQUIRED_JAR_PREFIXES if not any(n.startswith(pre) for n in names)
        ]
        if missing:
            raise FetchError(f"Maven copied no jar for {', '.join(missing)}; check {paths.pom}")
        (staging / _STAMP).write_text(digest + "\n")
        if libs.exists():
            shutil.rmtree(libs)
        os.replace(staging, libs)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return FetchResult(libs, version, downloaded=True, jars=len(names))


@dataclass(frozen=True)
class PrometheusInstall:
    binary: Path | None
    message: str


def prometheus_binary() -> Path | None:
    found = shutil.which("prometheus")
    return Path(found) if found else None


def ensure_prometheus(*, install: bool = True) -> PrometheusInstall:
    """Find Prometheus or install Debian's package; never fatal, since only the
    ``prometheus``-marked tests and dashboards need it."""
    found = prometheus_binary()
    if found is not None:
        return PrometheusInstall(found, f"prometheus found at {found}")
    apt = shutil.which("apt-get")
    if not install or apt is None:
        return PrometheusInstall(
            None, "prometheus is not installed (Debian: apt-get install prometheus)"
        )
    if os.geteuid() != 0:
        return PrometheusInstall(
            None, "prometheus is not installed and we are not root: sudo apt-get install prometheus"
        )
    quiet = ["env", "DEBIAN_FRONTEND=noninteractive", apt]  # no debconf prompt
    steps = (
        [*quiet, "update", "-q"],
        [*quiet, "install", "-y", "-q", "--no-install-recommends", "prometheus"],
    )
    for step in steps:
        proc = subprocess.run(
            step, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
        )
        if proc.returncode != 0:
            tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
            return PrometheusInstall(
                None, f"`apt-get {step[3]}` failed ({tail}); Prometheus tests will be skipped"
            )
    found = prometheus_binary()
    if found is None:
        return PrometheusInstall(None, "apt-get installed prometheus but no binary is on PATH")
    return PrometheusInstall(found, f"installed Debian's prometheus at {found}")
