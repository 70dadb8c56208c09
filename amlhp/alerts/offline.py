"""``amlhp alerts CAPTURE...``: the stream's incidents from capture files, without Kafka.

The captures are scored as ``amlhp score`` scores them (:func:`amlhp.model.offline.
verdict_columns`: the stream's encoder and scorer) and the verdicts go through the
stream's :class:`~amlhp.alerts.engine.Engine`; at the end of the input every open
incident is closed (reason ``end_of_input``). With ``per_file`` each file is its own
gateway (named after the file), so that captures of different networks and clocks do not
share windows; otherwise the files are one gateway, as one tap replaying them would be.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from amlhp.alerts.engine import Engine
from amlhp.alerts.policy import AlertPolicy
from amlhp.alerts.suppression import Suppressions
from amlhp.encoders.capture import expand_paths, iter_encoded
from amlhp.model.offline import verdict_columns
from amlhp.model.scorer import Scorer
from amlhp.pipeline.incidents import latest


@dataclass
class OfflineAlerts:
    """What one offline run raised: every alert row, and the input it saw."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    packets: int = 0
    #: per gateway: (first, last) capture timestamp in ns
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def incidents(self) -> list[dict[str, Any]]:
        return latest(self.rows)


def alerts_from_captures(
    captures: Iterable[str | Path],
    scorer: Scorer,
    policy: AlertPolicy,
    *,
    gateway: str = "offline",
    per_file: bool = False,
    batch_size: int = 1000,
    devices: Mapping[tuple[str, str], tuple[str, float]] | None = None,
    suppressions: Suppressions | None = None,
    flows: Mapping[str, pa.Table] | None = None,
) -> OfflineAlerts:
    """Score the captures and run the alert engine over the verdicts (module docstring);
    ``devices`` is the device inventory the incidents name their hosts from,
    ``suppressions`` the allow-list that marks them, ``flows`` each gateway's flow
    verdicts (evidence, :mod:`amlhp.alerts.flow_evidence`)."""
    return alerts_from_verdicts(
        scored_captures(
            captures, scorer, gateway=gateway, per_file=per_file, batch_size=batch_size
        ),
        policy,
        scorer.version,
        devices,
        suppressions,
        flows,
    )


def scored_captures(
    captures: Iterable[str | Path],
    scorer: Scorer,
    *,
    gateway: str = "offline",
    per_file: bool = False,
    batch_size: int = 1000,
) -> Iterator[tuple[str, Iterator[pa.RecordBatch]]]:
    """(gateway, its verdict batches) per gateway: the files one by one (``per_file``,
    named after each file) or all as one gateway."""
    paths = expand_paths(captures)
    groups = [(p.name, [p]) for p in paths] if per_file else [(gateway, paths)]
    for name, files in groups:
        batches = iter_encoded(files, scorer.encoder_config, name, batch_size=batch_size)
        yield name, (verdict_columns(batch, scorer) for batch in batches)


def alerts_from_verdicts(
    gateways: Iterable[tuple[str, Iterable[pa.RecordBatch]]],
    policy: AlertPolicy,
    version: str,
    devices: Mapping[tuple[str, str], tuple[str, float]] | None = None,
    suppressions: Suppressions | None = None,
    flows: Mapping[str, pa.Table] | None = None,
) -> OfflineAlerts:
    """The engine over each gateway's verdicts, closing its incidents at their end; a
    gateway's flow verdicts are all known up front (each applied at its end of life)."""
    engine = Engine(policy, model_version=version)
    engine.devices.update(devices or {})
    engine.suppressions = suppressions
    run = OfflineAlerts()
    for name, batches in gateways:
        # as the stream's flow worker tells them: a gateway's flows ending by a batch's
        # last packet before the batch (the engine applies them per window either way)
        pending = flows[name].sort_by("due_ns") if flows and name in flows else None
        due = pending.column("due_ns").to_numpy() if pending is not None else None
        told = 0
        for verdicts in batches:
            run.packets += verdicts.num_rows
            if verdicts.num_rows:
                span = pc.min_max(verdicts.column("ts_ns")).as_py()
                lo, hi = int(span["min"]), int(span["max"])
                first, last = run.spans.get(name, (lo, hi))
                run.spans[name] = (min(first, lo), max(last, hi))
                if pending is not None and due is not None:
                    upto = int(np.searchsorted(due, hi, side="right"))
                    if upto > told:
                        part = pending.slice(told, upto - told).sort_by("flow_seq")
                        engine.flows(name, part, hi)
                        told = upto
            run.rows += engine.process(verdicts, wall_s=0.0)
        run.rows += engine.flush(name, "end_of_input")
    return run
