"""Content hashes of files: the one way captures, datasets and model weights are pinned.

Kept out of the stages (and free of heavy imports) because the lab, the model and its
datasets all record or check the same SHA-256 of a file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks (captures and weights can be large)."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
