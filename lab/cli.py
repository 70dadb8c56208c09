"""``amlhp lab ...``: run the attack lab, list its scenarios, merge and verify its captures."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import typer

from amlhp.progress import echo_result

DEFAULT_WORKDIR = Path("var/lab/work")


def _echo_manifest(manifest: dict[str, Any], out: Path, as_json: bool) -> None:
    """What a run or a merge wrote: packets and classes (or the whole manifest as JSON)."""
    echo_result(
        manifest,
        as_json=as_json,
        headline=f"wrote {manifest['total_packets']} packets to {out}",
        counts=manifest["classes"],
    )


def register(app: typer.Typer) -> None:
    """Add the ``lab`` sub-app to the root app (heavy imports stay inside commands)."""
    lab = typer.Typer(
        help="Attack lab: labelled IoT traffic from real servers and real attack tools, "
        "on loopback addresses only (127.0.0.0/8).",
        no_args_is_help=True,
    )
    app.add_typer(lab, name="lab")

    @lab.command("scenarios")
    def scenarios_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON")) -> None:
        """List the scenarios: name, class label, tool, marker address."""
        from amlhp.lab.scenarios import SCENARIOS
        from amlhp.lab.topology import Topology

        topology = Topology()
        rows = [
            {
                "name": s.name,
                "label": s.label,
                "tool": s.tool,
                "marker": str(s.marker_address(topology) or ""),
                "description": s.description,
            }
            for s in SCENARIOS
        ]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        for row in rows:
            typer.echo(
                f"{row['name']:<16}{row['label']:<17}{row['marker']:<13}{row['tool']:<30}"
                f"{row['description']}"
            )

    @lab.command("check")
    def check_cmd() -> None:
        """Say which of the lab's programs are missing (exit 1 if any)."""
        from amlhp.lab.tools import SERVER_PROGRAMS, TOOLS, missing_tools

        missing = missing_tools()
        for name in missing:
            effect = "the lab cannot run" if name in SERVER_PROGRAMS else "its scenarios skip"
            typer.echo(f"missing: {name} (Debian package {TOOLS[name]}): {effect}")
        if missing:
            typer.echo("run `make lab-setup` (as root)", err=True)
            raise typer.Exit(1)
        typer.echo(f"all {len(TOOLS)} programs found")

    @lab.command("run")
    def run_cmd(
        ctx: typer.Context,
        out: Path = typer.Option(Path("var/lab/run"), "--out", "-o", help="Output folder"),
        scenarios: list[str] = typer.Option(
            [], "--scenario", "-s", help="Scenario to run (repeatable; default: all)"
        ),
        profile: str = typer.Option("ci", "--profile", help="Budget preset: ci, demo or full"),
        packets: int | None = typer.Option(
            None, "--packets", min=1, help="Packets wanted per attack scenario"
        ),
        benign_packets: int | None = typer.Option(
            None, "--benign-packets", min=1, help="Packets wanted in the benign scenario"
        ),
        time_limit_s: float | None = typer.Option(
            None, "--duration", min=1, help="Time limit of each scenario, seconds"
        ),
        seed: int = typer.Option(1, "--seed", help="Seed of timing, values and word lists"),
        background: bool = typer.Option(
            True, "--background/--no-background", help="Benign devices run during attacks"
        ),
        benign_rate: float | None = typer.Option(
            None, "--benign-rate", min=0.01, help="Benign traffic rate factor (profile's)"
        ),
        ports: str = typer.Option("standard", "--ports", help="standard or alternate ports"),
        workdir: Path = typer.Option(DEFAULT_WORKDIR, "--workdir", help="Configs, logs, pids"),
        as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON"),
    ) -> None:
        """Run the lab: real servers, benign devices, bounded attacks, one pcap per scenario.

        Writes SCENARIO.pcap files, labels.yaml and manifest.json into --out.
        """
        from amlhp.lab.runner import LabRun, RunOptions
        from amlhp.lab.status import StatusDisplay

        # every option but --json is a field of RunOptions, under the same name
        fields = {k: v for k, v in ctx.params.items() if k != "as_json"}
        fields["scenarios"] = tuple(scenarios)
        options = RunOptions(**fields, command=shlex.join(["amlhp", *sys.argv[1:]]))
        with StatusDisplay() as display:
            manifest = LabRun(options, on_status=display.update).run()
        _echo_manifest(manifest, out, as_json)

    @lab.command("slow")
    def slow_cmd(
        out: Path = typer.Option(Path("var/lab/slow"), "--out", "-o", help="Output folder"),
        minutes: float = typer.Option(
            20.0, "--minutes", min=0.1, help="Length of the guessing, scan and DNS scenarios"
        ),
        hour_minutes: float = typer.Option(
            60.0, "--hour-minutes", min=0.1, help="Length of the beacon and benign scenarios"
        ),
        seed: int = typer.Option(1, "--seed", help="Seed of timing, values and word lists"),
        workdir: Path = typer.Option(
            Path("var/lab/work-slow"), "--workdir", help="Configs, logs, pids"
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON"),
    ) -> None:
        """Record the low-and-slow attacks at their real pace, side by side, beside the
        benign devices (about an hour by default).

        Writes SCENARIO.pcap files, labels.yaml and manifest.json into --out.
        """
        from amlhp.lab.runner import RunOptions
        from amlhp.lab.slow import SlowLabRun
        from amlhp.lab.status import StatusDisplay

        options = RunOptions(out=out, workdir=workdir, scenarios=("benign",), seed=seed,
                             command=shlex.join(["amlhp", *sys.argv[1:]]))  # fmt: skip
        with StatusDisplay() as display:
            run = SlowLabRun(options, minutes, hour_minutes, on_status=display.update)
            manifest = run.run()
        _echo_manifest(manifest, out, as_json)

    @lab.command("arp")
    def arp_cmd(
        out: Path = typer.Option(Path("var/lab/arp"), "--out", "-o", help="Output folder"),
        seconds: float = typer.Option(24.0, "--seconds", min=18.0, help="Length of the run"),
        as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON"),
    ) -> None:
        """ARP cache poisoning (arpspoof) and an ARP sweep (nmap -sn) on an Ethernet LAN of
        network namespaces (removed at the end); needs root.

        Writes arp.pcap and manifest.json into --out; `amlhp alerts OUT/arp.pcap` judges it.
        """
        from amlhp.lab.arp_lan import run_arp_lan

        _echo_manifest(run_arp_lan(out, seconds=seconds), out, as_json)

    @lab.command("twins")
    def twins_cmd(
        out: Path = typer.Option(Path("var/lab/twins"), "--out", "-o", help="Output folder"),
        scale: float = typer.Option(
            1.0, "--scale", min=0.01, max=10.0, help="Attack sizes, times the defaults"
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON"),
    ) -> None:
        """The same attacks over IPv4 and over IPv6 (nmap, hydra, nping) on an Ethernet LAN
        of network namespaces (removed at the end); needs root.

        Writes twins.pcap and manifest.json into --out; `amlhp lab twins-quality OUT`
        compares how the model judges the two families.
        """
        from amlhp.lab.twins import run_twins

        _echo_manifest(run_twins(out, scale=scale), out, as_json)

    @lab.command("twins-quality")
    def twins_quality_cmd(
        run_dir: Path = typer.Argument(Path("var/lab/twins"), help="Folder of `amlhp lab twins`"),
        model: Path | None = typer.Option(None, "--model", help="Model (default: the committed)"),
        out: Path | None = typer.Option(None, "--out", "-o", help="Also write JSON + Markdown"),
        as_json: bool = typer.Option(False, "--json", help="Print JSON"),
    ) -> None:
        """Per class and binary, IPv4 beside IPv6: recall, flagged, the gap (goal 2 points)."""
        from amlhp.lab.twins_quality import compare, judged_rows, lines
        from amlhp.model.scorer import default_model_path, load_scorer

        scorer = load_scorer(model or default_model_path())
        result = compare(judged_rows(run_dir, scorer))
        result["model"] = scorer.version
        result["capture"] = str(run_dir)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
            out.with_suffix(".md").write_text("\n".join(lines(result)) + "\n")
        typer.echo(json.dumps(result, indent=2) if as_json else "\n".join(lines(result)))

    @lab.command("merge")
    def merge_cmd(
        run_dir: Path = typer.Argument(..., help="Folder written by `amlhp lab run`"),
        out: Path = typer.Option(..., "--out", "-o", help="Merged pcap to write"),
        snaplen: int | None = typer.Option(
            None, "--snaplen", min=64, help="Keep at most this many bytes of each packet"
        ),
    ) -> None:
        """Merge a run's captures into one pcap (time order), with labels and a manifest."""
        from amlhp.lab.merge import merge_run

        manifest = merge_run(
            run_dir, out, command=shlex.join(["amlhp", *sys.argv[1:]]), snaplen=snaplen
        )
        _echo_manifest(manifest, out, as_json=False)

    @lab.command("verify")
    def verify_cmd(
        run_dir: Path = typer.Argument(..., help="Folder with captures, labels and manifest"),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON"),
    ) -> None:
        """Re-count every capture by its labels file and check it against the manifest."""
        from amlhp.lab.verify import verify_run

        report = verify_run(run_dir)
        if as_json:
            typer.echo(json.dumps(report.as_dict(), indent=2))
        else:
            for line in report.lines():
                typer.echo(line)
        if not report.ok:
            raise typer.Exit(1)

    @lab.command("clean")
    def clean_cmd(
        workdir: Path = typer.Option(DEFAULT_WORKDIR, "--workdir", help="The run's work folder"),
    ) -> None:
        """Stop processes an interrupted lab run left behind (exact command-line match)."""
        from amlhp.lab.procs import reap_stale

        stopped = reap_stale(workdir / "processes.json")
        typer.echo(f"stopped {len(stopped)} leftover process(es)")
