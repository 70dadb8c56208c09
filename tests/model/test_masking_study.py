"""The masking study's bookkeeping: metrics over tested classes, the choice, the table."""

from __future__ import annotations

import itertools

import pytest
from typer.testing import CliRunner

from amlhp.cli import build_app
from amlhp.encoders.layout import expand_mask_fields
from amlhp.model.exceptions import ModelError
from amlhp.model.masking_study import (
    MASK_VARIANTS,
    best_variant,
    masking_markdown,
    unseen_file_metrics,
)
from amlhp.model.metrics import classification_report


def test_unseen_file_metrics_leave_out_train_only_classes() -> None:
    # class 2 has no test packet (train-only); one packet of class 0 is called class 2.
    report = classification_report([0, 0, 0, 0, 1, 1], [0, 0, 0, 2, 1, 1], ["a", "b", "c"])
    m = unseen_file_metrics(report)
    assert m["tested_classes"] == ["a", "b"]
    f1_a = 2 * 1.0 * 0.75 / 1.75
    assert m["macro_f1_tested"] == pytest.approx(round((f1_a + 1.0) / 2, 4))
    assert m["accuracy"] == pytest.approx(round(5 / 6, 4))


def _row(name: str, f1: float) -> dict[str, object]:
    return {
        "variant": name,
        "mask_fields": list(expand_mask_fields(MASK_VARIANTS[name])),
        "accuracy": f1,
        "macro_f1_tested": f1,
        "tested_classes": ["a"],
        "per_class_f1": {"a": f1},
    }


def test_best_variant_prefers_f1_then_fewer_masked_fields() -> None:
    doc = {
        "rows": [_row("addresses", 0.5), _row("addresses+ttl", 0.6), _row("addresses+path", 0.6)]
    }
    assert best_variant(doc) == "addresses+ttl"
    table = masking_markdown(doc)
    assert "| addresses+ttl **(chosen)** | 0.6000 | 0.6000 | 0.600 |" in table
    assert table.count("(chosen)") == 1


def test_variants_only_add_fields() -> None:
    masks = [set(expand_mask_fields(v)) for v in MASK_VARIANTS.values()]
    assert all(a < b for a, b in itertools.pairwise(masks))
    assert masks[0] == {"ip.src", "ip.dst"}


def test_unknown_variant_is_one_clear_error() -> None:
    result = CliRunner().invoke(build_app(), ["model", "masking-study", "--variant", "nope"])
    assert isinstance(result.exception, ModelError)  # `amlhp` prints it as one line, exit 2
    assert "unknown variant" in str(result.exception)
