"""Accuracy and macro precision/recall/F1 (paper eq. 11-15) on a hand-checked example."""

from __future__ import annotations

from pathlib import Path

import pytest

from amlhp.model.metrics import (
    classification_report,
    confusion_matrix,
    format_report,
    plot_confusion,
)


def test_hand_computed_example() -> None:
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    report = classification_report(y_true, y_pred, ["a", "b", "c"])
    assert report.confusion.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert report.accuracy == pytest.approx(4 / 6)
    # precision a 1, b 1/2, c 1/2; recall a 2/3, b 1/2, c 1
    assert report.macro_precision == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert report.macro_recall == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    f1 = [2 * 1 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 * 1 / 1.5]
    assert report.macro_f1 == pytest.approx(sum(f1) / 3)
    assert report.per_class["c"]["support"] == 1
    text = format_report(report)
    assert "macro avg" in text
    assert "accuracy 0.6667" in text


def test_absent_class_is_not_averaged_in() -> None:
    report = classification_report([0, 1], [0, 1], ["a", "b", "never"])
    assert report.macro_f1 == 1.0
    assert report.per_class["never"]["support"] == 0


def test_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix([0, 1], [0], 2)


def test_confusion_png(tmp_path: Path) -> None:
    report = classification_report([0, 1, 1], [0, 1, 0], ["a", "b"])
    plot_confusion(report, tmp_path / "cm.png")
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
