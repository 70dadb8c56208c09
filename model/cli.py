"""Sub-commands of `amlhp` contributed by the `model` stage.

``amlhp train``, ``amlhp evaluate``, ``amlhp score`` and ``amlhp model info|results``. Heavy
imports (torch, pyarrow) happen inside the commands. Progress goes to stderr; stdout carries
the result (JSON with ``--json``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

#: options that several commands share (one declaration each)
Labels = Annotated[Path, typer.Option("--labels", "-l", help="Labels YAML")]
Epochs = Annotated[int, typer.Option("--epochs", min=1, help="Training epochs")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of sampling, split and training")]
Threads = Annotated[int | None, typer.Option("--threads", min=1, help="torch threads")]
MaxPerClass = Annotated[int, typer.Option("--max-per-class", min=1, help="Packets per class")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON")]
Augment = Annotated[
    float, typer.Option("--augment", min=0.0, max=1.0, help="Fingerprint rewrite probability")
]
Ipv6Twins = Annotated[
    float,
    typer.Option(
        "--ipv6-twins", min=0.0, max=1.0,
        help="Probability that an IPv4 TCP/UDP training packet becomes its IPv6 twin",
    ),
]  # fmt: skip
PUBLIC_LABELS = Path("model/labels/public.yaml")

_SPLIT_HELP = "random (8:1:1 by packet, as the paper), flow or file (no leakage)"


def _progress_fn(progress: Any, task: Any, epochs: int) -> Any:
    def update(epoch: int, step: int, steps: int, loss: float) -> None:
        progress.update(
            task,
            total=steps * epochs,
            completed=(epoch - 1) * steps + step,
            status=f"epoch {epoch}/{epochs} loss {loss:.4f}",
        )

    return update


def _label_spec(labels: Path, captures: list[Path] | None) -> Any:
    """The labels file, restricted to ``captures`` when some are named."""
    from amlhp.model.labels import load_labels, restrict_to

    spec = load_labels(labels)
    return restrict_to(spec, captures) if captures else spec


def _load_labelled(spec: Any, encoder: Any, cap: int | None, seed: int) -> Any:
    """Encode the labelled captures with a status line naming the file being read."""
    from amlhp.model.dataset import load_labelled
    from amlhp.progress import console

    with console().status("encoding captures") as status:
        return load_labelled(
            spec,
            encoder,
            max_per_class=cap,
            seed=seed,
            on_file=lambda n: status.update(f"encoding {n}"),
        )


def _capped(
    spec: Any,
    encoder: Any,
    cap: int | None,
    benign_cap: int | None,
    seed: int,
    balance_sources: bool = False,
) -> Any:
    """The labelled packets, at most ``cap`` per attack class and ``benign_cap`` per benign
    one; with ``balance_sources`` a class's cap is shared equally among its sources."""
    if cap is None or (benign_cap is None and not balance_sources):
        return _load_labelled(spec, encoder, cap, seed)
    import numpy as np

    from amlhp.model.cross_source import source_of
    from amlhp.model.dataset import cap_rows, data_fingerprint
    from amlhp.model.decision import benign_mask

    data = _load_labelled(
        spec, encoder, None if balance_sources else max(cap, benign_cap or 0), seed
    )
    sources = None
    if balance_sources:
        names = np.array([source_of(f) for f in data.files])
        sources = np.unique(names, return_inverse=True)[1][data.file_ids]
    rows = cap_rows(
        np.arange(len(data)), data.labels, cap, seed, benign_mask(data.classes), benign_cap,
        sources,
    )  # fmt: skip
    data = data.subset(rows)
    data.fingerprint = data_fingerprint(
        spec, encoder, cap, seed, sampling_of(benign_cap, balance_sources)
    )
    return data


def sampling_of(benign_cap: int | None, balance_sources: bool) -> dict[str, Any] | None:
    """The caps beyond ``--max-per-class`` as recorded in an artifact (None: none)."""
    doc: dict[str, Any] = {}
    if benign_cap is not None:
        doc["max_benign"] = benign_cap
    if balance_sources:
        doc["balance_sources"] = True
    return doc or None


@contextmanager
def _runs_progress(epochs: int, threads: int | None) -> Iterator[Callable[[str], Any]]:
    """One progress bar per training run of a study (on ``threads`` torch threads):
    ``on_progress(label)`` adds a bar and returns the run's per-step callback."""
    import torch

    from amlhp.progress import progress_bar

    if threads:
        torch.set_num_threads(threads)
    with progress_bar() as progress:

        def on_progress(label: str) -> Any:
            return _progress_fn(progress, progress.add_task(label, total=None, status=""), epochs)

        yield on_progress


def _register_train(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        captures: list[Path] = typer.Argument(
            None,
            metavar="[PCAP]...",
            help="Restrict to these captures/folders (default: all the labels file names)",
        ),
        labels: Path = typer.Option(
            ..., "--labels", "-l", help="Labels YAML (class -> files/rules)"
        ),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Artifact path stem (writes STEM.json + STEM.safetensors)"
        ),
        model: str = typer.Option(
            "amlhp",
            "--arch",
            "--model",
            "-m",
            help="Architecture: amlhp, an ablation or a baseline (see `amlhp model list`); "
            "elsewhere --model names an artifact",
        ),
        split_kind: str = typer.Option("random", "--split", help=_SPLIT_HELP),
        epochs: Epochs = 10,
        batch_size: int = typer.Option(128, "--batch-size", min=1),
        lr: float | None = typer.Option(
            None, "--lr", help="Adam learning rate [1e-2 (paper) for amlhp*, 1e-3 for baselines]"
        ),
        seed: Seed = 0,
        max_per_class: int | None = typer.Option(
            None, "--max-per-class", min=1, help="Cap packets per class (uniform draw)"
        ),
        max_benign: int | None = typer.Option(
            None, "--max-benign", min=1, help="Cap for benign classes (default: --max-per-class)"
        ),
        mask: list[str] = typer.Option(
            [], "--mask", help="Header field/group to zero (repeatable); default ip.src, ip.dst"
        ),
        balance_sources: bool = typer.Option(
            False, "--balance-sources", help="Share each class's cap equally among sources"
        ),
        augment: Augment = 0.0,
        ipv6_twins: Ipv6Twins = 0.0,
        feedback: Path | None = typer.Option(
            None,
            "--feedback",
            help="Add analysts' verdicts: the folder of `amlhp alerts-feedback-data` (its "
            "labels.yaml: false positives as benign, confirmed incidents as their class)",
        ),
        calibrate_on: Path | None = typer.Option(
            None,
            "--calibrate-on",
            help="Folds of `amlhp model cross-source` (OUT/folds): fit the malicious score "
            "and decision band on them and store the policy in the artifact",
        ),
        threads: Threads = None,
        report_dir: Path | None = typer.Option(
            None, "--report-dir", help="Write the test report + confusion matrix here"
        ),
        as_json: AsJson = False,
    ) -> None:
        """Train a model on labelled captures (paper's hyperparameters by default) and save it."""
        import shlex
        import sys

        import torch

        from amlhp.encoders.layout import DEFAULT_MASK_FIELDS, EncoderConfig
        from amlhp.model.registry import create_model
        from amlhp.model.train import TrainConfig
        from amlhp.model.workflow import (
            encoder_config_for,
            save_outcome,
            train_and_evaluate,
            write_report,
        )
        from amlhp.progress import progress_bar

        if threads:
            torch.set_num_threads(threads)
        spec = _label_spec(labels, captures)
        if feedback is not None:
            from amlhp.model.labels import load_labels, merge_labels

            spec = merge_labels(spec, load_labels(feedback / "labels.yaml"))
        probe = create_model(model, num_classes=len(spec.classes))
        mask_fields = tuple(mask) if mask else DEFAULT_MASK_FIELDS
        encoder = encoder_config_for(probe, EncoderConfig(mask_fields=mask_fields).mask_fields)
        data = _capped(spec, encoder, max_per_class, max_benign, seed, balance_sources)
        config = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            threads=threads,
            augment=augment,
            ipv6_twins=ipv6_twins,
        )
        with progress_bar() as progress:
            task = progress.add_task(f"train {model}", total=None, status="")
            outcome = train_and_evaluate(
                model,
                data,
                spec,
                split_kind=split_kind,
                config=config,
                max_per_class=max_per_class,
                on_progress=_progress_fn(progress, task, epochs),
                lr=lr,
                sampling=sampling_of(max_benign, balance_sources),
            )
        if calibrate_on is not None:
            from amlhp.model.workflow import calibrate_outcome

            calibrate_outcome(outcome, calibrate_on)
        command = "amlhp " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        meta = save_outcome(outcome, data, out, command)
        summary: dict[str, Any] = {
            "artifact": str(out),
            "version": meta["version"],
            "model": model,
            "split": split_kind,
            "packets": len(data),
            "packets_per_class": {
                name: int((data.labels == i).sum()) for i, name in enumerate(data.classes)
            },
            "test_packets": int(outcome.split.test.size),
            **outcome.report.summary(),
            "params": meta["params"],
            "flops": meta["flops"],
            "size_bytes": meta["size_bytes"],
            "best_epoch": outcome.result.best_epoch,
            "train_seconds": round(outcome.result.seconds, 1),
        }
        if report_dir is not None:
            summary["report"] = write_report(
                outcome.report, report_dir, f"{model}, {split_kind} split"
            )
        if as_json:
            typer.echo(json.dumps(summary, indent=2))
        else:
            from amlhp.model.metrics import format_report

            typer.echo(format_report(outcome.report))
            mflops = meta["flops"] / 1e6
            typer.echo(
                f"saved {out} ({meta['version']}, {meta['params']:,} params, {mflops:.2f} MFLOPs)"
            )


def _register_evaluate(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate(
        model_path: Path = typer.Argument(
            ..., metavar="MODEL", help="Artifact (stem, .json or .safetensors)"
        ),
        captures: list[Path] = typer.Argument(
            None, metavar="[PCAP]...", help="Restrict to these captures"
        ),
        labels: Path = typer.Option(..., "--labels", "-l", help="Labels YAML"),
        side: str = typer.Option(
            "test",
            "--side",
            help="test: the training run's held-out packets (same split, seed and cap); "
            "all: every labelled packet",
        ),
        out_dir: Path | None = typer.Option(
            None, "--out-dir", help="Write metrics.json, report.txt, confusion.csv/png here"
        ),
        malicious: bool = typer.Option(
            False,
            "--malicious",
            help="Per class, the shares decided malicious, uncertain and benign",
        ),
        as_json: AsJson = False,
    ) -> None:
        """Accuracy, macro precision/recall/F1 (paper eq. 11-15), per-class report, confusion."""
        from amlhp.encoders.layout import EncoderConfig
        from amlhp.model.artifact import load_artifact
        from amlhp.model.dataset import split
        from amlhp.model.exceptions import DatasetError
        from amlhp.model.metrics import format_report
        from amlhp.model.workflow import evaluate_artifact, write_report

        if side not in ("test", "all"):
            raise DatasetError(f"--side must be test or all, got {side!r}")
        artifact = load_artifact(model_path)
        meta = artifact.meta
        training = meta.get("training", {})
        cap = training.get("max_per_class") if side == "test" else None
        benign_cap = training.get("max_benign") if side == "test" else None
        balance = bool(training.get("balance_sources")) if side == "test" else False
        seed = int(training.get("hyperparameters", {}).get("seed", 0))
        spec = _label_spec(labels, captures)
        enc = meta["encoding"]
        config = EncoderConfig(
            payload_bytes=int(enc["payload_bytes"]), mask_fields=tuple(enc["mask_fields"])
        )
        data = _capped(spec, config, cap, benign_cap, seed, balance)
        rows = None
        if side == "test":
            if data.fingerprint != training.get("data_fingerprint"):
                raise DatasetError(
                    "these labelled captures are not the model's training data (fingerprint "
                    "differs); use --side all to score every packet"
                )
            rows = split(data, str(training["split"]["kind"]), seed=seed).test
        if malicious:
            from amlhp.model.cross_source import called_malicious

            doc = called_malicious(artifact, data if rows is None else data.subset(rows))
            if as_json:
                typer.echo(json.dumps({"model": meta["version"], **doc}, indent=2))
                return
            typer.echo(f"{'class':<24} {'packets':>8}  malicious  uncertain  benign")
            for name, v in doc["classes"].items():
                typer.echo(
                    f"{name:<24} {v['packets']:8d}  {v['called_malicious']:9.3f}  "
                    f"{v['uncertain']:9.3f}  {v['called_benign']:6.3f}"
                )
            typer.echo(json.dumps(doc["binary"]))
            return
        report = evaluate_artifact(artifact, data, rows=rows)
        if out_dir is not None:
            write_report(report, out_dir, f"{meta['architecture']} ({side})")
        if as_json:
            typer.echo(
                json.dumps({"model": meta["version"], "side": side, **report.as_dict()}, indent=2)
            )
        else:
            typer.echo(format_report(report))
            typer.echo("confusion (rows true, columns predicted):")
            for name, row in zip(report.classes, report.confusion.tolist(), strict=True):
                typer.echo(f"  {name:<24} {' '.join(f'{v:6d}' for v in row)}")


def _register_model_group(app: typer.Typer) -> None:
    group = typer.Typer(
        name="model", help="Inspect models and reproduce the results table.", no_args_is_help=True
    )

    @group.command("info")
    def info(
        path: Path = typer.Argument(
            None, metavar="[PATH]", help="Artifact [the committed default model]"
        ),
        serving: bool = typer.Option(
            False,
            "--serving",
            help="Also load it as the worker would (backend auto) and say how it is served: "
            "builds the native kernel for this CPU into the home's .cache/native",
        ),
        as_json: AsJson = False,
    ) -> None:
        """Verify an artifact (sha256, metadata, weights) and print what it is."""
        from amlhp.model.artifact import load_artifact
        from amlhp.model.scorer import default_model_path, load_scorer, torch_installed

        artifact = load_artifact(path or default_model_path(), torch_module=torch_installed())
        meta = artifact.meta
        summary = {
            "path": str(artifact.json_path),
            "version": meta["version"],
            "architecture": meta["architecture"],
            "classes": meta["classes"],
            "params": meta.get("params"),
            "flops": meta.get("flops"),
            "macs": meta.get("macs"),
            "flops_convention": meta.get("flops_convention"),
            "size_bytes": meta.get("size_bytes"),
            "payload_bytes": meta["payload_bytes"],
            "encoding": meta.get("encoding"),
            "metrics": meta.get("metrics"),
            "data_fingerprint": meta.get("training", {}).get("data_fingerprint"),
            "command": meta.get("training", {}).get("command"),
            "sha256": meta["sha256"],
            "verified": True,
        }
        if serving:
            served = load_scorer(artifact.json_path).describe()
            summary["serving"] = {k: served[k] for k in ("backend", "isa", "device")}
        if as_json:
            typer.echo(json.dumps(summary, indent=2))
            return
        for key, value in summary.items():
            text = ", ".join(map(str, value)) if isinstance(value, list) else value
            if isinstance(value, dict) and key == "serving":
                text = ", ".join(f"{k} {v}" for k, v in value.items())
            typer.echo(f"{key:<18}{text}")

    @group.command("list")
    def list_models() -> None:
        """Model names `amlhp train --model` accepts, with parameter and FLOP counts."""
        from amlhp.model.flops import model_cost
        from amlhp.model.registry import MODEL_NAMES, create_model

        for name in MODEL_NAMES:
            cost = model_cost(create_model(name))
            typer.echo(f"{name:<18}{cost.params:>12,} params {cost.flops / 1e6:>10.2f} MFLOPs")

    from amlhp.model.study_cli import register_studies

    register_studies(group)
    app.add_typer(group, name="model")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the root app (heavy imports stay inside commands)."""
    _register_train(app)
    _register_evaluate(app)
    from amlhp.model.score_cli import register_score

    register_score(app)
    _register_model_group(app)
