"""``amlhp flows train`` and ``amlhp flows loso``: the flow models' training commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from amlhp.flows.artifact import DEFAULT_MODEL
from amlhp.flows.cli import DEFAULT_DATA, echo_json
from amlhp.progress import progress_bar


def register(flows: typer.Typer) -> None:
    """Add the training commands to ``amlhp flows``."""

    @flows.command("train")
    def train_cmd(
        data: Path = typer.Option(DEFAULT_DATA, "--data", help="Flow dataset from `flows build`"),
        out: Path = typer.Option(DEFAULT_MODEL, "--out", "-o", help="Artifact folder"),
        split: str = typer.Option(
            "file",
            "--split",
            help="file (by capture), time, or mixed (file where a class has 3 captures, else time)",
        ),
        epochs: int = typer.Option(12, "--epochs", min=1),
        max_per_class: int = typer.Option(600, "--max-per-class", min=1),
        lr: float = typer.Option(2e-3, "--lr"),
        seed: int = typer.Option(0, "--seed"),
        threads: int | None = typer.Option(None, "--threads", help="torch threads"),
        alarm_from: Path | None = typer.Option(
            None,
            "--alarm-from",
            help="An attack model's alarm: the cross_source_alarm of this `flows loso` "
            "result (default: fitted on the validation split)",
        ),
    ) -> None:
        """Train the flow CNN, fit temperature, profiles and threshold; save the artifact."""
        from amlhp.flows.artifact import save_flow_model
        from amlhp.flows.attacks import BENIGN, validation_alarm
        from amlhp.flows.dataset import FlowDataset, split_flows
        from amlhp.flows.evaluate import fit_flow_model
        from amlhp.flows.train import FlowTrainConfig

        ds = FlowDataset.load(data)
        sp = split_flows(ds, split, seed)
        cfg = FlowTrainConfig(
            epochs=epochs, max_per_class=max_per_class, lr=lr, seed=seed, threads=threads
        )
        with progress_bar() as bar:
            task = bar.add_task("train", total=epochs, status="")

            def on_progress(epoch: int, step: int, steps: int, loss: float) -> None:
                bar.update(task, completed=epoch - 1 + step / steps, status=f"loss {loss:.4f}")

            def on_status(msg: str) -> None:
                bar.update(task, status=msg)

            model, summary = fit_flow_model(
                ds, sp, cfg, on_progress=on_progress, on_status=on_status
            )
        extra: dict[str, Any] = {
            "data": {"path": str(data), "flows": len(ds), "split": split, "seed": seed},
            "training": {k: v for k, v in summary.items() if k != "split"},
        }
        if BENIGN in ds.classes:  # an attack model: its alarm
            extra["validation_alarm"] = validation_alarm(model, ds, sp.val)
            extra["alarm"] = extra["validation_alarm"]
            if alarm_from is not None:  # what the alarm is worth on unseen networks
                extra["alarm"] = float(json.loads(alarm_from.read_text())["cross_source_alarm"])
                extra["alarm_from"] = str(alarm_from)
        save_flow_model(out, model.torch_network(), model.classes, ds.config, model.refiner, extra)
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str))
        echo_json(
            {
                "out": str(out),
                "best_epoch": summary["best_epoch"],
                "val_macro_f1": max(
                    (h.get("val_macro_f1", 0.0) for h in summary["history"]), default=0.0
                ),
                "temperature": summary["temperature"],
                "threshold": summary["threshold"],
                "alarm": extra.get("alarm"),
                "parameters": summary["parameters"],
            }
        )

    @flows.command("loso")
    def loso_cmd(
        data: Path = typer.Option(..., "--data", help="Attack flow dataset (a benign class)"),
        out: Path = typer.Option(..., "--out", "-o", help="Figures (JSON)"),
        source: list[str] = typer.Option([], "--source", help="Hold out only these sources"),
        save_models: Path | None = typer.Option(
            None, "--save-models", help="Save each fold's model in DIR/<held-out source>"
        ),
        reuse: bool = typer.Option(
            False, "--reuse", help="Load the folds already saved in --save-models DIR"
        ),
        epochs: int = typer.Option(10, "--epochs", min=1),
        max_per_class: int = typer.Option(2000, "--max-per-class", min=1),
        seed: int = typer.Option(0, "--seed"),
        threads: int | None = typer.Option(None, "--threads", help="torch threads"),
    ) -> None:
        """Leave one source out: per held-out source, the share of its attack flows and
        of its benign flows that raise the alarm (docs/flows.md "Attack flows")."""
        from amlhp.flows.attacks import leave_one_source_out
        from amlhp.flows.dataset import FlowDataset
        from amlhp.flows.train import FlowTrainConfig

        ds = FlowDataset.load(data)
        cfg = FlowTrainConfig(
            epochs=epochs, max_per_class=max_per_class, seed=seed, threads=threads
        )
        doc = leave_one_source_out(
            ds,
            cfg,
            sources=source or None,
            save_dir=save_models,
            reuse=reuse,
            on_status=lambda m: typer.echo(m, err=True),
        )
        doc["command"] = f"amlhp flows loso --data {data} --epochs {epochs} " + (
            f"--max-per-class {max_per_class} --seed {seed}"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2))
        echo_json(
            {
                "cross_source_alarm": doc["cross_source_alarm"],
                "folds": {
                    k: {"own": v["held_out"]["all_attacks"], "cross": v["held_out_cross"]}
                    for k, v in doc["folds"].items()
                },
            }
        )
