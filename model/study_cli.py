"""``amlhp model results|masking-study|cross-source|decision-table``: the studies.

Each trains many models and writes a results folder under ``model/results``; every
modelling choice of the default model is made by one of them (see docs/model.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from amlhp.model.cli import (
    PUBLIC_LABELS,
    Augment,
    Epochs,
    Ipv6Twins,
    Labels,
    MaxPerClass,
    Seed,
    Threads,
    _runs_progress,
)

if TYPE_CHECKING:
    from amlhp.model.train import TrainConfig


def _run_study(
    run: Callable[..., Any],
    labels: Path,
    out_dir: Path,
    markdown: str,
    config: TrainConfig,
    **options: Any,
) -> Any:
    """Run one study (``run(labels, out_dir, ...)``): a progress bar per training run, its
    events logged on the console; then print the Markdown table it wrote to ``out_dir``."""
    from amlhp.progress import console

    out = console()
    with _runs_progress(config.epochs, config.threads) as on_progress:
        doc = run(
            labels,
            out_dir,
            config=config,
            on_event=lambda msg: out.log(msg),
            on_progress=on_progress,
            **options,
        )
    typer.echo((out_dir / markdown).read_text())
    return doc


def register_studies(group: typer.Typer) -> None:
    """Add the study commands to the ``amlhp model`` group."""

    @group.command("results")
    def results(
        labels: Labels = PUBLIC_LABELS,
        out_dir: Path = typer.Option(Path("model/results"), "--out-dir"),
        artifacts_dir: Path | None = typer.Option(
            Path("out/models"), "--artifacts-dir", help="Save every trained model here"
        ),
        models: list[str] = typer.Option([], "--model", help="Subset of models (repeatable)"),
        splits: list[str] = typer.Option([], "--split", help="Subset of splits (repeatable)"),
        max_per_class: MaxPerClass = 5000,
        epochs: Epochs = 10,
        seed: Seed = 0,
        threads: Threads = None,
    ) -> None:
        """Train and test IoT-AMLHP, its ablations and baselines on random and by-flow splits."""

        from amlhp.model.experiments import RESULT_MODELS, RESULT_SPLITS, run_results
        from amlhp.model.train import TrainConfig

        doc = _run_study(
            run_results,
            labels,
            out_dir,
            "results.md",
            TrainConfig(epochs=epochs, seed=seed, threads=threads),
            models=tuple(models) or RESULT_MODELS,
            splits=tuple(splits) or RESULT_SPLITS,
            max_per_class=max_per_class,
            artifacts_dir=artifacts_dir,
        )
        typer.echo(f"{len(doc['rows'])} rows -> {out_dir}/results-<split>.json and results.md")

    @group.command("masking-study")
    def masking_study(
        labels: Labels = PUBLIC_LABELS,
        out_dir: Path = typer.Option(Path("model/results/masking"), "--out-dir"),
        variants: list[str] = typer.Option(
            [], "--variant", help="Subset of variants (repeatable; default: all)"
        ),
        split_kind: str = typer.Option("file", "--split", help="file (default) or flow"),
        max_per_class: MaxPerClass = 4000,
        epochs: Epochs = 5,
        seed: Seed = 0,
        threads: Threads = None,
    ) -> None:
        """Train one model per masking option, test on unseen capture files, pick the best."""

        from amlhp.model.exceptions import ModelError
        from amlhp.model.masking_study import MASK_VARIANTS, best_variant, run_masking_study
        from amlhp.model.train import TrainConfig

        unknown = sorted(set(variants) - set(MASK_VARIANTS))
        if unknown:
            raise ModelError(f"unknown variant(s) {unknown}; valid: {', '.join(MASK_VARIANTS)}")
        doc = _run_study(
            run_masking_study,
            labels,
            out_dir,
            "masking.md",
            TrainConfig(epochs=epochs, seed=seed, threads=threads),
            variants={k: v for k, v in MASK_VARIANTS.items() if not variants or k in variants},
            split_kind=split_kind,
            max_per_class=max_per_class,
        )
        typer.echo(f"best: {best_variant(doc)} -> {out_dir}/masking.json and masking.md")

    @group.command("cross-source")
    def cross_source(
        labels: Labels = Path("model/labels/all-sources.yaml"),
        out_dir: Path = typer.Option(Path("model/results/cross-source"), "--out-dir"),
        sources: list[str] = typer.Option(
            [], "--source", help="Hold out only these sources (repeatable; default: every one)"
        ),
        mask: list[str] = typer.Option(
            ["ip.src", "ip.dst", "path", "checksums"], "--mask", help="Header fields to zero"
        ),
        max_per_class: MaxPerClass = 3000,
        max_test: int = typer.Option(5000, "--max-test-per-class", min=1),
        max_benign: int | None = typer.Option(
            None, "--max-benign", min=1, help="Training cap of benign classes (default: same)"
        ),
        balance_sources: bool = typer.Option(
            False, "--balance-sources", help="Share each class's cap equally among sources"
        ),
        augment: Augment = 0.0,
        ipv6_twins: Ipv6Twins = 0.0,
        epochs: Epochs = 5,
        seed: Seed = 0,
        threads: Threads = None,
        random_split: bool = typer.Option(True, "--random/--no-random", help="Also 8:1:1"),
        models_dir: Path | None = typer.Option(
            None,
            "--models-dir",
            help="Also save each fold's model here (SOURCE.json/.safetensors), calibrated on "
            "the other folds: what `amlhp model adapt-study` starts from",
        ),
    ) -> None:
        """Leave one source out: train on the others, test on it; benign kept, attacks flagged."""
        from amlhp.encoders.layout import expand_mask_fields
        from amlhp.model.cross_source import run_cross_source
        from amlhp.model.train import TrainConfig

        _run_study(
            run_cross_source,
            labels,
            out_dir,
            "cross-source.md",
            TrainConfig(
                epochs=epochs, seed=seed, threads=threads, augment=augment, ipv6_twins=ipv6_twins
            ),
            mask_fields=expand_mask_fields(tuple(mask)),
            max_per_class=max_per_class,
            max_test_per_class=max_test,
            max_benign=max_benign,
            balance_sources=balance_sources,
            sources=sources or None,
            with_random=random_split,
            models_dir=models_dir,
        )
        typer.echo(f"-> {out_dir}/cross-source.json and cross-source.md")

    @group.command("adapt-study")
    def adapt_study(
        labels: Labels = Path("model/labels/all-sources.yaml"),
        models_dir: Path = typer.Option(
            Path("out/adapt/models"),
            "--models-dir",
            help="Fold models of `amlhp model cross-source --models-dir`",
        ),
        out_dir: Path = typer.Option(Path("model/results/adapt"), "--out-dir"),
        min_count: int = typer.Option(2, "--min-count", min=1, help="Times a kind must be seen"),
    ) -> None:
        """Learning a site, measured: each fold model adapted on benign first halves, judged
        on the second halves and on the attacks it never saw (docs/model.md)."""
        from amlhp.model.adapt_study import run_adapt_study
        from amlhp.progress import console

        out = console()
        run_adapt_study(
            labels, models_dir, out_dir, min_count=min_count, on_event=lambda m: out.log(m)
        )
        typer.echo((out_dir / "adapt-study.md").read_text())

    @group.command("attack-reference")
    def attack_reference(
        labels: Labels = Path("model/labels/all-sources.yaml"),
        model: Path | None = typer.Option(
            None, "--model", help="Encode as this model reads (default: bundled)"
        ),
        per_class: int = typer.Option(100, "--per-class", min=1),
        out: Path = typer.Option(
            Path("model/artifacts/attack-reference"), "--out", "-o", help="Stem of the files"
        ),
        seed: Seed = 0,
    ) -> None:
        """The known attacks `amlhp model adapt` guards every site profile with: a few
        packets of each attack class of the labelled sources, encoded as the model reads."""
        from amlhp.encoders.layout import EncoderConfig
        from amlhp.model.artifact import read_metadata
        from amlhp.model.attack_reference import AttackReference
        from amlhp.model.dataset import load_labelled
        from amlhp.model.labels import load_labels
        from amlhp.model.scorer import default_model_path

        encoding = read_metadata(model or default_model_path())["encoding"]
        config = EncoderConfig(
            payload_bytes=int(encoding["payload_bytes"]),
            mask_fields=tuple(encoding["mask_fields"]),
        )
        data = load_labelled(load_labels(labels), config)
        meta = AttackReference.from_packets(data, per_class=per_class, seed=seed).save(out)
        typer.echo(f"{meta['packets']} packets of {len(meta['attack_classes'])} attack "
                   f"classes -> {out}.json/.safetensors")  # fmt: skip

    @group.command("decision-table")
    def decision_table(
        out_dir: Path = typer.Argument(..., help="A cross-source results folder (with folds/)"),
    ) -> None:
        """Re-fit the three-way decision table of a cross-source run from its saved folds.

        Every fold is judged under a policy calibrated on the other folds only; the JSON
        and Markdown tables are rewritten. No training: seconds.
        """
        import json

        from amlhp.model.cross_source import cross_source_markdown
        from amlhp.model.cross_source import decision_table as table_of

        path = out_dir / "cross-source.json"
        doc = json.loads(path.read_text())
        sources = [r["source"] for r in doc["rows"]]
        doc["decision"] = table_of(out_dir / "folds", sources, doc.get("classes"))
        path.write_text(json.dumps(doc, indent=2) + "\n")
        (out_dir / "cross-source.md").write_text(cross_source_markdown(doc))
        typer.echo((out_dir / "cross-source.md").read_text())
