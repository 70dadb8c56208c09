"""Child ``amlhp`` processes: the environment that carries the settings, and the launcher.

The demo, the benchmarks and the tests start the pipeline's stages (worker, sink, tap) as
separate ``amlhp`` processes. A child builds its settings from the environment like any
command, so the one way to hand it the parent's settings is :func:`child_env`: every
field of :class:`~amlhp.settings.Settings` as its ``AMLHP_<FIELD>`` variable and every
librdkafka property as ``AMLHP_RDKAFKA_<NAME>``. It walks ``Settings.model_fields``, so a
field added later reaches the children without touching any launcher (the bug this
replaces: ``amlhp -X security.protocol=SASL_SSL demo`` started children that never saw
the flag).

Secrets (``SecretStr`` fields and sensitive librdkafka properties) are revealed into the
returned dict only, because a child cannot read them any other way; nothing here logs the
environment, and a stage logs its settings only through :func:`log_settings`, which
masks them.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from amlhp.pipeline.exceptions import ChildExitedError
from amlhp.settings import ENV_PREFIX, RDKAFKA_ENV_PREFIX, Settings, rdkafka_env_name

log = logging.getLogger(__name__)

#: how a stage's log line with its effective settings starts (tests look for it)
SETTINGS_LOG_PREFIX = "effective settings"


def _env_value(value: Any) -> str | None:
    """A setting's value as pydantic-settings reads it back from an environment variable."""
    if value is None:
        return None
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float | Path):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(value)  # lists and mappings: pydantic-settings parses JSON


def child_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment that makes a child ``amlhp`` process build exactly ``settings``.

    ``base`` (default: this process's environment) provides everything else (``PATH``,
    ``OMP_NUM_THREADS``, ...). Its ``AMLHP_RDKAFKA_*`` and ``AMLHP_<FIELD>`` variables are
    dropped first, so that a property or value the parent overrode (with ``-X`` or a
    flag) or unset cannot come back in the child. A librdkafka property whose name cannot
    be read back from a variable (an underscore, a capital) is a
    :class:`~amlhp.errors.ConfigError`.
    """
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    env = {
        key: value
        for key, value in (os.environ if base is None else base).items()
        if key.upper() not in fields and not key.upper().startswith(RDKAFKA_ENV_PREFIX)
    }
    for name in Settings.model_fields:
        if name == "rdkafka":
            continue
        text = _env_value(getattr(settings, name))
        if text is not None:
            env[ENV_PREFIX + name.upper()] = text
    for prop, value in settings.rdkafka.items():
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        env[rdkafka_env_name(prop)] = text
    return env


def log_settings(stage: str, settings: Settings) -> None:
    """Log a stage's effective settings, secrets masked (``Settings.redacted``).

    Called once at a stage's start, so that its log file shows what it runs with (which
    cluster, topics, librdkafka properties); the tests read it to check what a child got.
    """
    log.info("%s of %s: %s", SETTINGS_LOG_PREFIX, stage, json.dumps(settings.redacted()))


def amlhp_command() -> list[str]:
    """How to start another ``amlhp`` process with the same interpreter."""
    return [sys.executable, "-m", "amlhp.cli"]


@dataclass
class StageProcess:
    """A child stage process with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, wait, then SIGKILL: the stage flushes and commits on SIGTERM."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def check_alive(self) -> None:
        """Raise :class:`ChildExitedError` with the log's tail if the stage has ended."""
        code = self.proc.poll()
        if code is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise ChildExitedError(f"{self.name} exited with code {code}; log tail:\n{tail}")


def start_stage(name: str, args: list[str], log_dir: Path, env: dict[str, str]) -> StageProcess:
    """Start ``amlhp <args>`` with ``env`` (from :func:`child_env`), output to ``<name>.log``.

    ``PYTHONFAULTHANDLER`` is set so that a native crash (a signal inside librdkafka,
    Arrow or torch) leaves the Python stack of every thread in the log, not only an exit
    code: :meth:`StageProcess.check_alive` reports that tail.
    """
    env = {**env, "PYTHONFAULTHANDLER": "1"}
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log.debug("starting %s: amlhp %s (log %s)", name, " ".join(args), log_path)
    with open(log_path, "wb") as fh:
        proc = subprocess.Popen(
            [*amlhp_command(), *args], stdout=fh, stderr=subprocess.STDOUT, env=env
        )
    return StageProcess(name, proc, log_path)
