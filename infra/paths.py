"""Where the local infrastructure keeps its files: caches, data and logs, all in the home.

Everything the local broker, cluster and Prometheus write lives under one git-ignored
folder of the home (``AMLHP_HOME``, by default the working directory: the checkout for
``make``), ``var/`` (data, logs, pid files), and the fetched Kafka jars under ``.cache/``,
so that ``make clean`` removes all of it and nothing is written elsewhere (Maven's own
cache, ``~/.m2``, excepted). The Maven pom that pins Kafka is package data.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from amlhp.infra.exceptions import InfraError
from amlhp.settings import default_home

_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


@dataclass(frozen=True)
class InfraPaths:
    """The folders under one home (``Settings.home``); tests may point ``root`` elsewhere."""

    root: Path

    @property
    def var(self) -> Path:
        return self.root / "var"

    @property
    def cache(self) -> Path:
        return self.root / ".cache"

    @property
    def pom(self) -> Path:
        return Path(str(resources.files("amlhp.infra").joinpath("kafka", "pom.xml")))

    def kafka_version(self) -> str:
        """The pinned Kafka version: the pom's ``kafka.version`` property, the one source."""
        try:
            tree = ET.parse(self.pom)
        except (OSError, ET.ParseError) as exc:
            raise InfraError(f"cannot read {self.pom}: {exc}") from exc
        node = tree.getroot().find("m:properties/m:kafka.version", _POM_NS)
        if node is None or not (node.text or "").strip():
            raise InfraError(f"{self.pom} has no <kafka.version> property")
        return (node.text or "").strip()

    def pom_digest(self) -> str:
        """A hash of the pom, stamped on the cache so that editing the pom refetches."""
        return hashlib.sha256(self.pom.read_bytes()).hexdigest()[:16]

    def kafka_libs(self) -> Path:
        return self.cache / "kafka" / self.kafka_version() / "libs"


def default_paths(home: Path | None = None) -> InfraPaths:
    """The folders under ``home``: pass ``settings.home``; ``None`` is its default (cwd)."""
    return InfraPaths(root=home if home is not None else default_home())
