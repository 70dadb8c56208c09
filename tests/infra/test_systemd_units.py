"""The systemd units of docs/deploying.md run real ``amlhp`` commands with options that
exist, and their environment file names only settings that exist."""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from amlhp.infra.kafka_acls import stage_access
from amlhp.infra.kafka_security import PRINCIPALS
from amlhp.settings import Settings, unknown_env

UNITS = Path(__file__).parents[2] / "infra" / "systemd"
AMLHP = str(Path(sys.executable).with_name("amlhp"))


def _exec_start(unit: Path) -> list[str]:
    line = next(x for x in unit.read_text().splitlines() if x.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[0] == "/opt/amlhp/bin/amlhp", unit.name
    names = {"%i": "lo", "%H": socket.gethostname()}
    return [AMLHP, *(names.get(a, a) for a in argv[1:])]


@pytest.mark.parametrize("unit", sorted(UNITS.glob("*.service")), ids=lambda p: p.name)
def test_each_unit_starts_an_amlhp_command_whose_options_parse(unit: Path) -> None:
    text = unit.read_text()
    assert "EnvironmentFile=/etc/amlhp/amlhp.env" in text
    # then, optional, the stage's own principal on a secured cluster (a principal that
    # `amlhp infra kafka up --secure` makes and the ACL table grants)
    principal = re.search(r"^EnvironmentFile=-/etc/amlhp/([a-z-]+)\.env$", text, re.M)
    assert principal is not None, unit.name
    assert principal[1] in PRINCIPALS
    assert principal[1] in {a.stage for a in stage_access(Settings.model_validate({}))}
    assert text.index("amlhp.env") < text.index(f"{principal[1]}.env")  # it wins
    assert re.search(r"^Restart=on-failure$", text, re.M)
    argv = _exec_start(unit)
    assert "--metrics-port" in argv  # a fixed port per stage, for the scrape config
    done = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_environment_file_names_only_known_settings() -> None:
    lines = (UNITS / "amlhp.env.example").read_text().splitlines()
    names = {
        line.lstrip("# ").split("=", 1)[0]: ""
        for line in lines
        if re.match(r"#? ?AMLHP_[A-Z_]+=", line)
    }
    assert names
    assert unknown_env(names) == []
