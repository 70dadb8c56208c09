"""Accuracy and macro precision, recall, F1 (paper eq. 11-15), per-class report, confusion.

Macro averages are taken over the classes that occur in the test labels or the predictions
(as scikit-learn does by default); a class never predicted has precision 0, one never
present has recall 0 (and is only averaged in when it was predicted).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

#: the headline scores of a :class:`Report`, in the order they are printed
SCORES = ("accuracy", "macro_precision", "macro_recall", "macro_f1")


@dataclass(frozen=True)
class Report:
    """Everything ``amlhp evaluate`` prints and saves."""

    classes: list[str]
    confusion: npt.NDArray[np.int64]  # rows: true class, columns: predicted class
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]

    def as_dict(self) -> dict[str, Any]:
        return {
            **{name: getattr(self, name) for name in SCORES},
            "support": int(self.confusion.sum()),
            "classes": self.classes,
            "per_class": self.per_class,
            "confusion": self.confusion.tolist(),
        }

    def summary(self) -> dict[str, float]:
        return {name: round(getattr(self, name), 4) for name in SCORES}


def confusion_matrix(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, num_classes: int
) -> npt.NDArray[np.int64]:
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} differ in shape")
    flat = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _ratio(num: npt.NDArray[np.float64], den: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def classification_report(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, classes: list[str]
) -> Report:
    k = len(classes)
    cm = confusion_matrix(y_true, y_pred, k)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    seen = (support > 0) | (predicted > 0)
    total = cm.sum()
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    return Report(
        classes=list(classes),
        confusion=cm,
        accuracy=float(tp.sum() / total) if total else 0.0,
        macro_precision=float(precision[seen].mean()) if seen.any() else 0.0,
        macro_recall=float(recall[seen].mean()) if seen.any() else 0.0,
        macro_f1=float(f1[seen].mean()) if seen.any() else 0.0,
        per_class=per_class,
    )


def format_report(report: Report) -> str:
    """A plain-text per-class table (like scikit-learn's) plus the macro line."""
    width = max(12, *(len(c) for c in report.classes))
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for name, row in report.per_class.items():
        lines.append(
            f"{name:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  "
            f"{row['f1']:5.4f}  {row['support']:7d}"
        )
    lines.append(
        f"{'macro avg':<{width}}  {report.macro_precision:9.4f}  {report.macro_recall:6.4f}  "
        f"{report.macro_f1:5.4f}  {int(report.confusion.sum()):7d}"
    )
    lines.append(f"accuracy {report.accuracy:.4f}")
    return "\n".join(lines)


def plot_confusion(report: Report, path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix heat map with counts, as a PNG."""
    from amlhp.plots import pyplot, save_figure

    plt = pyplot()

    cm = report.confusion
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, np.float64), where=rows > 0)
    k = len(report.classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * k, 0.8 + 0.7 * k))
    ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(k), report.classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), report.classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                color = "white" if norm[i, j] > 0.5 else "black"
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_title(title or f"accuracy {report.accuracy:.4f}, macro F1 {report.macro_f1:.4f}")
    save_figure(fig, path)
