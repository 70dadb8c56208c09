"""``amlhp flows ...`` (flow records, flow CNN, flow worker), ``amlhp devices`` and
``amlhp bench flows``. (``amlhp explain`` is the alert stage's: it explains incidents too.)

Heavy imports (torch, faust, pyarrow) happen inside the commands.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import typer

from amlhp.context import settings_of
from amlhp.flows.artifact import DEFAULT_MODEL
from amlhp.flows.online import DEFAULT_EXPLAIN_EVERY
from amlhp.metrics.stage_cli import metrics_option, start_metrics
from amlhp.progress import console, progress_bar

DEFAULT_DATA = Path("out/flows/flows.npz")


ATTACK_OPTION = typer.Option(
    None,
    "--attack-model",
    help="Attack flow model beside the device model (default: the committed one; none: off)",
)


def echo_json(doc: Any) -> None:
    typer.echo(json.dumps(doc, sort_keys=True, default=str))


def _flow_config(local_nets: list[str], lifetime: float, context: int, payload_bytes: int) -> Any:
    from amlhp.flows.record import DEFAULT_LOCAL_NETS, FlowConfig

    payload = payload_bytes if payload_bytes >= 0 else None
    return FlowConfig(tuple(local_nets) or DEFAULT_LOCAL_NETS, lifetime, context, payload)


def _build(
    captures: list[Path],
    labels: Path | None,
    by_folder: bool,
    config: Any,
    main_device_only: bool,
    out: Path,
    max_flows_per_class: int | None = None,
    device_nets: list[str] | None = None,
) -> dict[str, Any]:
    from amlhp.encoders.capture import expand_paths
    from amlhp.flows.dataset import FileLabel, build_dataset, folder_classes, per_class_counts
    from amlhp.flows.exceptions import FlowDatasetError

    if by_folder == (labels is not None):
        raise FlowDatasetError("give exactly one of --by-folder and --labels FILE")
    file_labels: list[FileLabel]
    if by_folder:
        files = expand_paths(captures)
        if not files:
            raise FlowDatasetError("no capture file found under the given paths")
        classes, ids = folder_classes(files)
        file_labels = list(ids)
    else:
        import pyarrow as pa

        from amlhp.model.labels import assign_labels, load_labels

        assert labels is not None
        spec = load_labels(labels)
        wanted = {p.resolve() for p in expand_paths(captures)} if captures else None
        files = sorted(p for p in spec.files if wanted is None or p.resolve() in wanted)
        if not files:
            raise FlowDatasetError(f"{labels} labels none of the given captures")
        classes = list(spec.classes)
        file_labels = []
        for path in files:
            entries = spec.files[path]

            def labeler(batch: pa.RecordBatch, entries: Any = entries) -> Any:
                return assign_labels(pa.Table.from_batches([batch]), entries)

            file_labels.append(labeler)
    with progress_bar() as bar:
        task = bar.add_task("flows", total=len(files), status="")

        def on_file(path: Path) -> None:
            bar.update(task, advance=1, status=path.name)

        ds = build_dataset(
            files,
            file_labels,
            classes,
            config,
            main_device_only=main_device_only,
            device_nets=device_nets or (),
            max_flows_per_class=max_flows_per_class,
            on_file=on_file,
        )
    ds.save(out)
    return {
        "out": str(out),
        "flows": len(ds),
        "files": len(files),
        "classes": len(classes),
        "per_class": per_class_counts(ds),
        **ds.stats,
    }


def _register_bench(bench: typer.Typer) -> None:
    @bench.command("flows")
    def bench_flows_cmd(
        capture: Path | None = typer.Argument(None, help="Capture (default: the demo's)"),
        model: Path = typer.Option(DEFAULT_MODEL, "--model", help="Flow model artifact"),
        batch_size: int = typer.Option(500, "--batch-size", min=1, help="Packets per message"),
        repeat: int = typer.Option(2, "--repeat", min=1, help="Runs; the best one counts"),
        out: Path | None = typer.Option(None, "--out", "-o", help="Write the result (JSON) here"),
        attack_model: str | None = ATTACK_OPTION,
    ) -> None:
        """One flow worker's capacity (packets/s on one core, no Kafka) and its memory per
        tracked device, on the raw messages a tap would publish."""
        from amlhp.data import DEMO_CAPTURE
        from amlhp.flows.bench import bench_flows, cpu_model

        doc = bench_flows(
            capture or DEMO_CAPTURE,
            model,
            batch_size=batch_size,
            repeat=repeat,
            attack_model=attack_model,
        )
        doc["machine"] = cpu_model()
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(doc, indent=2, sort_keys=True))
        echo_json({k: v for k, v in doc.items() if k != "runs"})


def register(app: typer.Typer) -> None:
    """Add ``amlhp flows ...``, ``amlhp devices`` and ``amlhp bench flows`` to the root app."""
    flows = typer.Typer(
        help="Flow context: flow records, the flow CNN, confidence and Shapley explanations.",
        no_args_is_help=True,
    )
    app.add_typer(flows, name="flows")
    from amlhp.flows import inventory_cli, train_cli

    inventory_cli.register(app)
    train_cli.register(flows)
    bench = next((g.typer_instance for g in app.registered_groups if g.name == "bench"), None)
    if bench is not None:
        _register_bench(bench)

    @flows.command("build")
    def build_cmd(
        captures: list[Path] = typer.Argument(..., help="Capture files or folders"),
        labels: Path | None = typer.Option(
            None, "--labels", help="Labels file in the packet model's format (per packet)"
        ),
        by_folder: bool = typer.Option(
            False, "--by-folder", help="Class = the capture's folder (device identification)"
        ),
        local_net: list[str] = typer.Option(
            [], "--local-net", help="Local subnet of the devices (repeatable; default RFC 1918)"
        ),
        lifetime: float = typer.Option(60.0, "--lifetime", help="Flow record lifetime (s)"),
        context: int = typer.Option(5, "--context", help="Preceding flows per matrix"),
        payload_bytes: int = typer.Option(
            64,
            "--payload-bytes",
            help="Payload bytes per packet, as the product's taps keep them "
            "(AMLHP_PAYLOAD_BYTES; -1: all, for studies of captures only)",
        ),
        main_device_only: bool = typer.Option(
            False, "--main-device-only", help="Keep only each capture's most active device"
        ),
        max_flows_per_class: int | None = typer.Option(
            None, "--max-flows-per-class", help="At most this many flows per class per file"
        ),
        device_net: list[str] = typer.Option(
            [], "--device-net", help="Keep only the flows of devices in this subnet (repeatable)"
        ),
        out: Path = typer.Option(DEFAULT_DATA, "--out", "-o", help="Flow dataset (.npz)"),
    ) -> None:
        """Assemble labelled flow records from captures into a flow dataset."""
        config = _flow_config(local_net, lifetime, context, payload_bytes)
        doc = _build(
            captures,
            labels,
            by_folder,
            config,
            main_device_only,
            out,
            max_flows_per_class,
            device_net,
        )
        echo_json(doc)

    @flows.command("merge")
    def merge_cmd(
        parts: list[Path] = typer.Argument(..., help="Flow datasets from `flows build`"),
        out: Path = typer.Option(DEFAULT_DATA, "--out", "-o", help="Merged flow dataset"),
    ) -> None:
        """Merge flow datasets built apart (classes united by name, contexts kept apart)."""
        from amlhp.flows.dataset import FlowDataset, concat_datasets, per_class_counts

        ds = concat_datasets([FlowDataset.load(p) for p in parts])
        ds.save(out)
        echo_json({"out": str(out), "flows": len(ds), "per_class": per_class_counts(ds)})

    @flows.command("fit-profiles")
    def fit_profiles_cmd(
        data: Path = typer.Option(DEFAULT_DATA, "--data", help="The model's flow dataset"),
        model: Path = typer.Option(DEFAULT_MODEL, "--model", help="Artifact folder (updated)"),
    ) -> None:
        """Fit the hidden-layer class profiles on the validation split and store them in the
        model's metadata (a flow out of its class's profile is uncertain); prints what the
        product's decision keeps of the test split."""
        from amlhp.flows.artifact import META, load_flow_model
        from amlhp.flows.dataset import FlowDataset, split_flows
        from amlhp.flows.hidden_profile import fit_and_measure

        fm = load_flow_model(model)
        ds = FlowDataset.load(data)
        info = fm.meta.get("data", {})
        sp = split_flows(ds, str(info.get("split", "file")), int(info.get("seed", 0)))
        doc, figures = fit_and_measure(fm, ds, sp)
        folder = model if model.is_dir() else model.parent
        meta = json.loads((folder / META).read_text())
        meta["hidden_profile"] = doc
        meta["hidden_profile_test"] = figures
        (folder / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        echo_json(figures)

    @flows.command("evaluate")
    def evaluate_cmd(
        data: Path = typer.Option(DEFAULT_DATA, "--data", help="Flow dataset from `flows build`"),
        model: Path = typer.Option(DEFAULT_MODEL, "--model", help="Artifact folder"),
        out: Path = typer.Option(Path("out/flows/eval"), "--out", "-o", help="Results folder"),
        window: float = typer.Option(60.0, "--window", help="device_window strategy window (s)"),
        threads: int = typer.Option(1, "--threads", help="torch threads"),
    ) -> None:
        """Test-split figures: macro F1 and high-confidence errors before/after refinement,
        calibration, and the three inference strategies."""
        import torch

        from amlhp.flows.artifact import load_flow_model
        from amlhp.flows.dataset import FlowDataset, split_flows
        from amlhp.flows.evaluate import evaluate_flow_model
        from amlhp.model.metrics import plot_confusion

        torch.set_num_threads(threads)
        fm = load_flow_model(model)
        ds = FlowDataset.load(data)
        info = fm.meta.get("data", {})
        sp = split_flows(ds, str(info.get("split", "file")), int(info.get("seed", 0)))
        with console().status("evaluating") as status:
            figures, reports = evaluate_flow_model(
                fm, ds, sp.test, window_s=window, on_status=lambda m: status.update(m)
            )
        out.mkdir(parents=True, exist_ok=True)
        figures["model_version"] = fm.version
        figures["data"] = str(data)
        (out / "results.json").write_text(json.dumps(figures, indent=2, default=str))
        for name, report in reports.items():
            (out / f"report_{name}.json").write_text(json.dumps(report.as_dict(), indent=2))
            plot_confusion(report, out / f"confusion_{name}.png", title=f"flows, {name} refinement")
        echo_json({k: v for k, v in figures.items() if k != "strategies"})

    @flows.command("explain")
    def explain_cmd(
        data: Path = typer.Option(DEFAULT_DATA, "--data", help="Flow dataset from `flows build`"),
        model: Path = typer.Option(DEFAULT_MODEL, "--model", help="Artifact folder"),
        flow: int | None = typer.Option(None, "--flow", help="Flow index (default: a test flow)"),
        png: Path | None = typer.Option(None, "--png", help="Write the explained verdict here"),
        captum: bool = typer.Option(False, "--captum", help="Also compute with Captum and compare"),
    ) -> None:
        """Explain one flow verdict: calibrated confidence, refinement and group Shapley values."""
        from amlhp.flows.artifact import load_flow_model
        from amlhp.flows.dataset import FlowDataset, split_flows
        from amlhp.flows.explain import explain_flow, plot_flow_explanation

        fm = load_flow_model(model)
        ds = FlowDataset.load(data)
        if flow is None:
            info = fm.meta.get("data", {})
            sp = split_flows(ds, str(info.get("split", "file")), int(info.get("seed", 0)))
            flow = int(sp.test[len(sp.test) // 2])
        doc = explain_flow(fm, ds, flow, with_captum=captum)
        if png is not None:
            plot_flow_explanation(doc, ds, flow, png)
            doc["png"] = str(png)
        echo_json(doc)

    @flows.command("score")
    def score_cmd(
        captures: list[Path] = typer.Argument(..., help="Capture files or folders"),
        model: Path = typer.Option(DEFAULT_MODEL, "--model", help="Artifact folder"),
        out: Path = typer.Option(Path("out/flows/verdicts.parquet"), "--out", "-o"),
        explain: bool = typer.Option(False, "--explain", help="Add Shapley attributions"),
        gateway: str | None = typer.Option(
            None, "--gateway", "-g", help="Gateway id of every file (default: its path)"
        ),
        attack_model: str | None = ATTACK_OPTION,
    ) -> None:
        """Flow verdicts of captures, offline, in the flow verdict schema (Parquet).

        The flow worker's path without Kafka: the same assembler, scorer and device
        context, each file from a fresh start (its open flows closed at its end)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from amlhp.encoders.capture import expand_paths
        from amlhp.flows.artifact import load_attack_model, load_flow_model
        from amlhp.flows.online import FlowScorer, score_capture

        fm = load_flow_model(model)
        attacks = load_attack_model(attack_model, fm.config)
        scorer = FlowScorer(fm, attack=attacks, explain_every=1 if explain else 0)
        batches = []
        files = expand_paths(captures)
        with progress_bar() as bar:
            task = bar.add_task("score", total=len(files), status="")
            for path in files:
                batches.append(score_capture(path, scorer, gateway))
                bar.update(task, advance=1, status=f"{path.name}: {batches[-1].num_rows} flows")
        table = pa.Table.from_batches([b for b in batches if b.num_rows], schema=scorer.schema)
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out)
        counts = table.group_by("label").aggregate([("label", "count")]).to_pylist()
        alarms = table.filter(pa.compute.equal(table["attack_alarm"], True))
        raised = alarms.group_by("attack_kind").aggregate([("attack_kind", "count")])
        echo_json(
            {
                "out": str(out),
                "flows": table.num_rows,
                "labels": counts,
                "model": fm.version,
                "attack_model": attacks.version if attacks else None,
                "attack_alarms": raised.to_pylist(),
            }
        )

    @flows.command("worker")
    def worker_cmd(
        ctx: typer.Context,
        model: Path = typer.Option(DEFAULT_MODEL, "--model", help="Flow model artifact folder"),
        app_id: str | None = typer.Option(
            None,
            "--group",
            "--app-id",
            help="Consumer group, the Faust app id (default <group>-flows)",
        ),
        idle_close: float = typer.Option(
            10.0, "--idle-close", help="Close a gateway's flows after this long without packets"
        ),
        explain_every: int = typer.Option(
            DEFAULT_EXPLAIN_EVERY,
            "--explain-every",
            help="Shapley attributions for about one flow in N, chosen by flow id (0: none)",
        ),
        attack_model: str | None = ATTACK_OPTION,
        metrics_port: int = metrics_option(),
    ) -> None:
        """Run the Faust flow worker: raw topic -> flow state table -> flow verdicts and
        the device inventory."""
        from amlhp.flows.worker import FlowWorkerOptions, run_flow_worker
        from amlhp.pipeline.access import check_access
        from amlhp.pipeline.children import log_settings

        settings = settings_of(ctx)
        log_settings("flows", settings)
        check_access(settings, "flows", group=app_id)
        start_metrics(
            "flows",
            metrics_port,
            settings,
            lag_group=app_id or f"{settings.consumer_group}-flows",
            lag_topics=[settings.topic_raw],
        )
        options = FlowWorkerOptions(
            model_path=model,
            attack_model=attack_model,
            app_id=app_id,
            idle_close_s=idle_close,
            explain_every=explain_every,
        )
        run_flow_worker(settings, options)

    @flows.command("sink")
    def sink_cmd(
        ctx: typer.Context,
        out: Path = typer.Option(
            Path("out/flow-verdicts"), "--out", "-o", help="Dataset root (relative: under the home)"
        ),
        roll_seconds: float = typer.Option(5.0, "--roll-seconds"),
        group: str | None = typer.Option(None, "--group", help="Consumer group"),
        metrics_port: int = metrics_option(),
    ) -> None:
        """Write flow verdicts to a hive-partitioned Parquet dataset (exactly once per file)."""
        from amlhp.flows.sink import FlowVerdictSink
        from amlhp.pipeline.access import check_access
        from amlhp.pipeline.children import log_settings
        from amlhp.pipeline.signals import install_stop_signals

        stop = threading.Event()
        install_stop_signals(stop)
        settings = settings_of(ctx)
        log_settings("flow-sink", settings)
        group_id = group or f"{settings.consumer_group}-flows-sink"
        check_access(settings, "flow-sink", group=group_id)
        start_metrics(
            "flow-sink",
            metrics_port,
            settings,
            lag_group=group_id,
            lag_topics=[settings.topic_flow_verdicts],
        )
        sink = FlowVerdictSink(
            settings,
            settings.under_home(out),
            group_id=group_id,
            roll_seconds=roll_seconds,
        )
        with console().status("flow sink starting") as status:
            stats = sink.run(
                stop,
                on_progress=lambda s: status.update(
                    f"flow sink: {s.rows} verdicts, {s.files} files"
                ),
            )
        echo_json(stats.as_dict())
