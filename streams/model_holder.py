"""The serving model, swapped atomically when a new artifact appears.

The worker reads :attr:`ModelHolder.current` once per micro-batch, so a batch is
always scored by exactly one model version. :meth:`ModelHolder.check` (run off the event
loop) watches the artifact's files; a new artifact is loaded and verified (sha256,
metadata, a smoke prediction) before it replaces the old one. A broken artifact is
refused, counted and logged, and the old model keeps serving. The folder of learnt sites
(``amlhp model adapt``), when there is one, is watched the same way: a new or changed
profile reloads the scorer with it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from amlhp.streams.exceptions import ModelReloadError
from amlhp.streams.processing import BatchScorer

log = logging.getLogger(__name__)

Loader = Callable[[Path], BatchScorer]


def _fingerprint(path: Path, sites: Path | None = None) -> tuple[tuple[str, int, int], ...]:
    """Name, size and mtime of the artifact's files (and of the site profiles): cheap
    change detection."""
    files = [path] if path.is_file() else sorted(path.parent.glob(path.stem + ".*"))
    if sites is not None and sites.is_dir():
        files += sorted(sites.iterdir())
    out = []
    for f in files:
        try:
            st = f.stat()
        except FileNotFoundError:
            continue
        out.append((f.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


class ModelHolder:
    """Holds the serving scorer and reloads it from ``path`` when its files change (or,
    with ``sites``, the site profiles: ``loader`` then reads them too)."""

    def __init__(self, path: Path, loader: Loader, sites: Path | None = None) -> None:
        self.path = Path(path)
        self.sites = sites
        self._loader = loader
        self._lock = threading.Lock()
        self.refused = 0
        self.loaded = 0
        self.last_error: str | None = None
        self._current = self._load_verified()
        self._seen = _fingerprint(self.path, self.sites)

    @property
    def current(self) -> BatchScorer:
        return self._current

    def _load_verified(self) -> BatchScorer:
        scorer = self._loader(self.path)
        smoke = scorer.assess(
            np.zeros((1, 128), np.uint8), np.zeros((1, _payload_len(scorer)), np.uint8)
        )
        if smoke.class_ids.shape != (1,) or smoke.probs.shape != (1, len(scorer.classes)):
            raise ModelReloadError(f"{self.path}: smoke prediction has the wrong shape")
        if not (np.all(np.isfinite(smoke.probs)) and np.isfinite(smoke.malicious_score).all()):
            raise ModelReloadError(f"{self.path}: smoke prediction is not finite")
        self.loaded += 1
        return scorer

    def check(self) -> bool:
        """Reload if the artifact changed; True when a new version now serves."""
        with self._lock:
            seen = _fingerprint(self.path, self.sites)
            if seen == self._seen:
                return False
            self._seen = seen
            try:
                scorer = self._load_verified()
            except Exception as exc:  # noqa: BLE001 - any failure must keep the old model
                self.refused += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error(
                    "refused new model at %s (%s); still serving %s",
                    self.path,
                    self.last_error,
                    self._current.version,
                )
                return False
            old = self._current.version
            self._current = scorer
            log.info("model reloaded: %s -> %s", old, scorer.version)
            return True


def _payload_len(scorer: BatchScorer) -> int:
    return int(getattr(scorer, "payload_bytes", 64))
