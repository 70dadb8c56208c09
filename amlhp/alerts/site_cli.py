"""``amlhp model adapt``: the command (registered on the model group by ``amlhp.cli``, since
it needs the replay machinery and the alert engine, which the model layer cannot import)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from amlhp.context import settings_of


def register(group: typer.Typer) -> None:
    """Add ``adapt`` to the ``amlhp model`` group."""

    @group.command("adapt")
    def adapt_cmd(
        ctx: typer.Context,
        captures: list[Path] = typer.Argument(
            None, help="Capture files of normal traffic (or give --from/--to: the raw topic)"
        ),
        gateways: list[str] = typer.Option(
            ..., "--gateway", "-g", help="Gateway the profile is for (repeatable)"
        ),
        start: str | None = typer.Option(None, "--from", help="Window start on the raw topic"),
        end: str | None = typer.Option(None, "--to", help="Window end on the raw topic"),
        model: Path | None = typer.Option(
            None, "--model", help="Base model the profile is learnt over (default: bundled)"
        ),
        sites: Path | None = typer.Option(
            None,
            "--sites",
            help="Folder of site profiles to write to (default: AMLHP_SITES_DIR, else "
            "HOME/var/sites)",
        ),
        name: str | None = typer.Option(
            None, "--name", help="Profile file name (default: the gateways joined by '+')"
        ),
        work: Path | None = typer.Option(
            None,
            "--work",
            help="Where the topic window's base replay is kept (default: HOME/out/adapt/NAME): "
            "compare it with `amlhp replay --sites` through `amlhp replay-diff`",
        ),
        force: bool = typer.Option(
            False, "--force", help="Adapt although the window raised incidents or is malicious"
        ),
        min_count: int = typer.Option(2, "--min-count", min=1, help="Times a kind must be seen"),
        max_malicious: float = typer.Option(
            0.5,
            "--max-malicious",
            min=0.0,
            max=1.0,
            help="Refuse a window the base model calls malicious on more than this share",
        ),
        reference: Path | None = typer.Option(
            None, "--reference", help="Known attacks to guard with (default: bundled)"
        ),
        as_json: bool = typer.Option(False, "--json", help="The result as one JSON object"),
    ) -> None:
        """Learn a site: the traffic of a window the operator declares normal becomes a
        profile that judges those gateways' packets over the base model. Refuses a window
        that raised incidents or is mostly malicious (unless --force), and any profile that
        would let a known attack class through. docs/model.md#learning-a-site."""
        from amlhp.alerts.policy import AlertPolicy
        from amlhp.alerts.site_adapt import from_captures, from_topic
        from amlhp.model.adapt import AdaptRefused, decide
        from amlhp.model.attack_reference import AttackReference
        from amlhp.model.scorer import default_model_path, load_scorer

        settings = settings_of(ctx)
        on_topic = start is not None or end is not None
        if on_topic == bool(captures):
            raise typer.BadParameter("give capture files or --from and --to, not both")
        if on_topic and (start is None or end is None):
            raise typer.BadParameter("a topic window needs both --from and --to")
        if not on_topic and len(set(gateways)) != 1:
            raise typer.BadParameter("capture files are one gateway's traffic: one --gateway")
        stem = name or "+".join(sorted(set(gateways)))
        base_path = model or default_model_path()
        scorer = load_scorer(base_path)
        ref = AttackReference.load(reference)
        ref.check_encoding(scorer.encoder_config.mask_fields, scorer.payload_bytes)
        policy = AlertPolicy.from_settings(settings)
        if start is not None and end is not None:
            stats, source = from_topic(
                settings, scorer, policy, gateways=tuple(gateways), start=start, end=end,
                work=work or settings.home / "out" / "adapt" / stem,
            )  # fmt: skip
        else:
            stats, source = from_captures(captures, scorer, policy, gateways[0])
        source["base_model"] = {"path": str(base_path), "version": scorer.version,
                                "sha256": scorer.artifact.meta["sha256"]}  # fmt: skip
        try:
            adapted = decide(
                stats, base_version=scorer.version, gateways=tuple(sorted(set(gateways))),
                assess=scorer.assess, reference=ref, adapted_on=source,
                min_count=min_count, max_malicious=max_malicious, force=force,
            )  # fmt: skip
        except AdaptRefused as exc:
            for reason in exc.reasons:
                typer.echo(f"refused: {reason}", err=True)
            raise typer.Exit(2) from exc
        folder = sites or settings.sites_dir or settings.home / "var" / "sites"
        meta = adapted.profile.save(folder / stem, adapted.record)
        summary = {
            "profile": str(folder / f"{stem}.json"),
            "version": meta["version"],
            "gateways": meta["gateways"],
            "kinds": meta["kinds"],
            "window": adapted.record["window"],
            "forced": adapted.record["forced"],
            "refusals_overridden": adapted.record["refusals_overridden"],
            "guard": {k: v for k, v in adapted.record["guard"].items() if k != "per_class"},
        }
        if as_json:
            typer.echo(json.dumps(summary))
            return
        typer.echo(json.dumps(summary, indent=1))

    @group.command("adapt-incidents")
    def adapt_incidents_cmd(
        ctx: typer.Context,
        models_dir: Path = typer.Option(
            Path("out/adapt/models"),
            "--models-dir",
            help="Fold models of `amlhp model cross-source --models-dir`",
        ),
        public: Path = typer.Option(
            Path("../shared/data/public"), "--public", help="The shared public captures"
        ),
        out: Path = typer.Option(
            Path("model/results/adapt/incidents.json"), "--out", "-o", help="Result JSON"
        ),
    ) -> None:
        """Learning a site, measured on incidents: each benign source learnt whole by the
        fold model that never saw it, then the public attack captures' incidents without
        and with that profile (docs/model.md#learning-a-site)."""
        from amlhp.alerts.policy import AlertPolicy
        from amlhp.alerts.site_study import incident_markdown, run_site_incident_study
        from amlhp.progress import console

        log = console()
        doc = run_site_incident_study(
            public, models_dir, out, AlertPolicy.from_settings(settings_of(ctx)),
            on_event=lambda m: log.log(m),
        )  # fmt: skip
        table = incident_markdown(doc)
        out.with_suffix(".md").write_text(table)
        typer.echo(table)
