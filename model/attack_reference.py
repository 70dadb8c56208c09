"""A small reference set of known attack packets, shipped beside the default model.

Why: adapting to a site (``amlhp model adapt``) must never unlearn a known attack kind,
and an operator adapting a gateway has no attack data of their own. The reference set is
what the project's training sources hold of every attack class, a few packets each, as
the encoder's arrays (addresses, TTL, IP id and checksums zeroed as in the model's
inputs: no host can be read back from it), written as safetensors + JSON locked to each
other like a model artifact. A site profile is guarded and evaluated against it
(:mod:`amlhp.model.site`) before it is published.

``make attack-reference`` builds it from ``make lab-data`` and the shared captures.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from amlhp.model.artifact import artifact_paths, verify_locked, write_locked
from amlhp.model.dataset import LabelledPackets, cap_per_class
from amlhp.model.decision import is_benign_class
from amlhp.model.exceptions import ArtifactError

FORMAT = "amlhp-attack-reference"
FORMAT_VERSION = 1
#: packets per attack class in the committed set
PER_CLASS = 100
DEFAULT_REFERENCE = Path(
    str(resources.files("amlhp.model").joinpath("artifacts", "attack-reference"))
)


@dataclass(frozen=True)
class AttackReference:
    """Encoded attack packets: header (N, 128), payload (N, P), class names per row."""

    header: npt.NDArray[np.uint8]
    payload: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int16]
    classes: list[str]
    meta: dict[str, Any]

    def __len__(self) -> int:
        return int(self.labels.size)

    @classmethod
    def from_packets(
        cls, data: LabelledPackets, rows: npt.NDArray[np.int64] | None = None,
        per_class: int = PER_CLASS, seed: int = 0,
    ) -> AttackReference:  # fmt: skip
        """At most ``per_class`` packets of each attack class among ``rows`` (all rows
        when None), drawn uniformly with ``seed``."""
        pool = np.arange(len(data)) if rows is None else np.asarray(rows, np.int64)
        attack = np.array([not is_benign_class(c) for c in data.classes])
        pool = pool[attack[data.labels[pool]]]
        picked = np.sort(pool[cap_per_class(data.labels[pool], per_class, seed)])
        return cls(
            data.header[picked],
            data.payload[picked, : data.config.payload_bytes],
            data.labels[picked].astype(np.int16),
            list(data.classes),
            {
                "mask_fields": list(data.config.mask_fields),
                "payload_bytes": data.config.payload_bytes,
                "per_class": per_class,
                "seed": seed,
                "data_fingerprint": data.fingerprint,
            },
        )

    def save(self, path: str | Path) -> dict[str, Any]:
        json_path, weights_path = artifact_paths(path)
        present = sorted({self.classes[i] for i in np.unique(self.labels).tolist()})
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "classes": self.classes,
            "attack_classes": present,
            "packets": len(self),
            "weights_file": weights_path.name,
            **self.meta,
        }
        arrays: dict[str, npt.NDArray[Any]] = {
            "header": self.header,
            "payload": self.payload,
            "labels": self.labels,
        }
        return write_locked(json_path, weights_path, arrays, meta)

    @classmethod
    def load(cls, path: str | Path | None = None) -> AttackReference:
        """Verify and read a reference set (the committed one when ``path`` is None)."""
        from safetensors.numpy import load_file

        json_path, weights_path = artifact_paths(path or DEFAULT_REFERENCE)
        try:
            meta = json.loads(json_path.read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{json_path}: unreadable attack reference ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ArtifactError(f"{json_path}: not an {FORMAT} file")
        verify_locked(json_path, weights_path, meta)
        arrays = load_file(str(weights_path))
        return cls(
            arrays["header"].astype(np.uint8),
            arrays["payload"].astype(np.uint8),
            arrays["labels"].astype(np.int16),
            [str(c) for c in meta["classes"]],
            meta,
        )

    def check_encoding(self, mask_fields: tuple[str, ...], payload_bytes: int) -> None:
        """Refuse to guard a model that reads other bytes than the set holds."""
        if sorted(self.meta.get("mask_fields", [])) != sorted(mask_fields):
            raise ArtifactError(
                f"the attack reference was encoded with masks {self.meta.get('mask_fields')}, "
                f"the model reads {list(mask_fields)}: rebuild it (make attack-reference)"
            )
        if int(self.meta.get("payload_bytes", -1)) != payload_bytes:
            raise ArtifactError(
                f"the attack reference holds P={self.meta.get('payload_bytes')} payload bytes, "
                f"the model reads P={payload_bytes}"
            )
