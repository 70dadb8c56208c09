"""Flow model artifacts for tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from amlhp.flows.artifact import ATTACK_MODEL


def attack_model_at_validation_alarm(folder: Path) -> Path:
    """The committed attack flow model with its alarm at the validation threshold it keeps
    beside the cross-source one (``validation_alarm``): at the committed alarm no flow of
    the demo capture raises it, so flow evidence would never reach an incident."""
    shutil.copytree(ATTACK_MODEL, folder)
    meta_path = folder / "flow_model.json"
    meta = json.loads(meta_path.read_text())
    meta["alarm"] = meta["validation_alarm"]
    meta_path.write_text(json.dumps(meta))
    return folder
