"""The fitting's corpus cache (``amlhp alerts-evaluate --cache``)."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_an_unreadable_corpus_cache_is_ignored_not_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from amlhp.alerts.fitting import load_cached_corpus

    (tmp_path / "index.json").write_text("{not json")
    assert load_cached_corpus(tmp_path, "v1") is None
    assert "unreadable corpus cache" in caplog.text
    (tmp_path / "index.json").write_text('{"version": "v1", "labels": "x", "hours": {}}')
    assert load_cached_corpus(tmp_path, "v1") is None  # no attack_start, no files
