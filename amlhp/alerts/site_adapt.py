"""Where ``amlhp model adapt`` reads its window from, and the incidents it watches for.

The profile itself is :mod:`amlhp.model.site` and the rails :mod:`amlhp.model.adapt`;
this module feeds them, which needs the stages above the model: the replay machinery
(a window of the raw topic, read by manual assignment without touching any live group,
scored by the base model exactly as the stream scores it, and kept as a replay dataset
that ``amlhp replay-diff`` compares with a replay after adapting) and the alert stage's
engine (the incidents that window would raise). Capture files go through the same
encoder and scorer as ``amlhp score``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from amlhp.alerts.engine import Engine
from amlhp.alerts.policy import AlertPolicy
from amlhp.digest import file_sha256
from amlhp.encoders.capture import expand_paths, iter_encoded
from amlhp.model.adapt import WindowStats
from amlhp.model.offline import verdict_columns
from amlhp.model.scorer import Scorer
from amlhp.pipeline.incidents import latest
from amlhp.settings import Settings


@dataclass
class WindowWatch:
    """Window statistics and the alert engine's incidents, fed batch by batch."""

    engine: Engine
    stats: WindowStats = field(default_factory=WindowStats)
    rows: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def new(cls, policy: AlertPolicy, version: str) -> WindowWatch:
        return cls(Engine(policy, model_version=version))

    def add(self, encoded: pa.RecordBatch | pa.Table, verdicts: pa.RecordBatch) -> None:
        self.stats.add(encoded, verdicts)
        self.rows += self.engine.process(verdicts, wall_s=0.0)

    def add_flush(self, encoded: list[pa.RecordBatch], verdicts: pa.RecordBatch) -> None:
        """A replay flush: its encoded batches (row for row the verdicts) and verdicts."""
        self.add(pa.Table.from_batches(encoded), verdicts)

    def finish(self) -> WindowStats:
        """Close every gateway's open incidents (end of the window) into the stats."""
        self.rows += self.engine.flush_all("end_of_input")
        self.stats.incidents = latest(self.rows)
        return self.stats


def from_captures(
    captures: list[Path], scorer: Scorer, policy: AlertPolicy, gateway: str
) -> tuple[WindowStats, dict[str, Any]]:
    """The window of capture files (one gateway, as one tap replaying them), and what
    names it: each file with its sha256."""
    watch = WindowWatch.new(policy, scorer.version)
    paths = expand_paths(captures)
    for encoded in iter_encoded(paths, scorer.encoder_config, gateway):
        watch.add(encoded, verdict_columns(encoded, scorer))
    source = {
        "kind": "captures",
        "gateway": gateway,
        "files": [{"path": str(p), "sha256": file_sha256(p)} for p in paths],
    }
    return watch.finish(), source


def from_topic(
    settings: Settings,
    scorer: Scorer,
    policy: AlertPolicy,
    *,
    gateways: tuple[str, ...],
    start: str,
    end: str,
    work: Path,
    on_progress: Callable[[Any], None] | None = None,
) -> tuple[WindowStats, dict[str, Any]]:
    """The window of the raw topic (``--from``/``--to``, its gateways), replayed into
    ``work`` with the base model; what names it: topic, window and every partition's
    offset range (the replay plan)."""
    from amlhp.streams.replay import (
        Replayer,
        finished_summary,
        identity,
        prepare_output,
        write_run_manifest,
    )
    from amlhp.streams.replay_plan import Window, iso_ns, parse_time, plan_replay

    window = Window(parse_time(start), parse_time(end), tuple(sorted(set(gateways))))
    plan = plan_replay(settings, settings.topic_raw, "raw", window)
    prepare_output(work, restart=True)
    model = {"version": scorer.version, "sha256": scorer.artifact.meta["sha256"]}
    run_id = f"adapt-{plan.planned_at_ns}"
    body = {
        "run_id": run_id,
        "identity": identity(plan, model),
        "status": "running",
        "started_at": iso_ns(plan.planned_at_ns),
        "plan": plan.as_dict(),
        "model": model,
    }
    write_run_manifest(work, body)
    watch = WindowWatch.new(policy, scorer.version)
    replayer = Replayer(
        settings, plan, work, scorer=scorer, run_id=run_id, on_scored=watch.add_flush
    )
    replayer.run(threading.Event(), on_progress)
    write_run_manifest(work, finished_summary(work, body))
    source = {"kind": "topic", "plan": plan.as_dict(), "replay": str(work)}
    return watch.finish(), source
