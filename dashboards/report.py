"""``amlhp report``: one self-contained HTML page about a run, from its Parquet verdicts.

For data engineers looking at a run afterwards. The page holds its plots as inline PNG
(data URIs), so it can be mailed or archived as one file: verdict mix over time,
malicious share per gateway, the latency distribution (from the tap's publish time where
the verdicts carry it), the top services per attack class, when true labels are known the
confusion matrix, and when an alert dataset is there the incidents the alerts stage
raised (:mod:`.report_incidents`).

True labels come from ``--truth FILE`` (Parquet or CSV with ``seq``, ``label`` and
optionally ``gateway`` columns, joined on (gateway, seq) or on seq alone), or from a
``true_label`` column already in the dataset.

A small script marks ``<body data-plots-rendered="N">`` once the browser has decoded
every plot; the report test reads it back from headless Chromium.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from amlhp.dashboards.exceptions import DashboardsError
from amlhp.dashboards.report_incidents import IncidentSection, load_incidents

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TOP_DESTINATIONS = 8
TIME_BINS = 60
MAX_CLASSES_SHOWN = 12


@dataclass(frozen=True)
class Plot:
    """One figure of the report."""

    key: str
    title: str
    caption: str
    png: bytes
    #: the figure's numbers as text (header row first), shown under it
    rows: tuple[tuple[str, ...], ...] = ()


def load_verdicts(
    root: Path, since: datetime | None = None, until: datetime | None = None
) -> pa.Table:
    """The run's verdicts (a sink's dataset folder, or the Parquet file of ``amlhp score``),
    optionally limited to capture times in [since, until)."""
    from amlhp.pipeline.dataset import read_verdicts

    if root.is_file():  # `amlhp score --out FILE`: one Parquet file of verdicts
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(root)
        except (OSError, pa.ArrowInvalid) as exc:
            raise DashboardsError(f"{root} is not a Parquet file of verdicts: {exc}") from exc
        missing = {"ts_ns", "label", "decision", "gateway"} - set(table.column_names)
        if missing:
            raise DashboardsError(f"{root} has no {', '.join(sorted(missing))} column")
    elif root.is_dir():
        table = read_verdicts(root)
    else:
        raise DashboardsError(f"no verdict dataset at {root}")
    if table.num_rows == 0:
        raise DashboardsError(f"{root} holds no verdicts (no part-*.parquet under date=*/)")
    ts = table.column("ts_ns")
    if since is not None:
        table = table.filter(pc.greater_equal(ts, _ns(since)))
        ts = table.column("ts_ns")
    if until is not None:
        table = table.filter(pc.less(ts, _ns(until)))
    if table.num_rows == 0:
        raise DashboardsError(f"no verdicts of {root} fall in the time range given")
    return table.sort_by([("ts_ns", "ascending")])


def _ns(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1e9)


def attach_truth(table: pa.Table, truth_path: Path) -> pa.Table:
    """Add a ``true_label`` column from a Parquet/CSV file of (gateway?, seq, label)."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    try:
        truth = (
            pcsv.read_csv(truth_path)
            if truth_path.suffix.lower() == ".csv"
            else pq.read_table(truth_path)
        )
    except (OSError, pa.ArrowInvalid) as exc:
        raise DashboardsError(f"cannot read the labels file {truth_path}: {exc}") from exc
    missing = {"seq", "label"} - set(truth.column_names)
    if missing:
        raise DashboardsError(f"{truth_path} lacks the column(s) {sorted(missing)}")
    keys = ["gateway", "seq"] if "gateway" in truth.column_names else ["seq"]
    truth = truth.select([*keys, "label"]).rename_columns([*keys, "true_label"])
    truth = truth.cast(
        pa.schema(
            [
                *([pa.field("gateway", pa.string())] if "gateway" in keys else []),
                pa.field("seq", pa.uint64()),
                pa.field("true_label", pa.string()),
            ]
        )
    )
    # Acero joins no list columns: the report does not use the probabilities anyway.
    dropped = [c for c in ("true_label", "probs") if c in table.column_names]
    base = table.drop_columns(dropped)
    if "gateway" in keys:
        base = base.set_column(
            base.schema.get_field_index("gateway"),
            "gateway",
            base.column("gateway").cast(pa.string()),
        )
    return base.join(truth, keys=keys, join_type="left outer").sort_by([("ts_ns", "ascending")])


# -- figures ----------------------------------------------------------------------------
def _figure(width: float = 9.0, height: float = 4.0) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _classes(table: pa.Table) -> list[str]:
    counts = pc.value_counts(table.column("label")).to_pylist()
    ordered = sorted(counts, key=lambda c: (-c["counts"], str(c["values"])))
    return [str(c["values"]) for c in ordered]


def _colors(classes: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return {cls: cmap(i % 20) for i, cls in enumerate(sorted(classes))}


def verdict_mix_plot(table: pa.Table) -> Plot:
    ts = table.column("ts_ns").to_numpy(zero_copy_only=False).astype(np.int64)
    labels = table.column("label").to_numpy(zero_copy_only=False).astype(str)
    classes = _classes(table)[:MAX_CLASSES_SHOWN]
    lo, hi = int(ts.min()), int(ts.max())
    edges = np.linspace(lo, hi + 1, TIME_BINS + 1)
    centers = ((edges[:-1] + edges[1:]) / 2).astype(np.int64).astype("datetime64[ns]")
    stacks = [np.histogram(ts[labels == cls], bins=edges)[0] for cls in classes]
    colors = _colors(classes)
    fig = _figure()
    ax = fig.add_subplot()
    ax.stackplot(centers, stacks, labels=classes, colors=[colors[c] for c in classes])
    ax.set_ylabel(f"verdicts per bin ({(hi - lo) / 1e9 / TIME_BINS:.2f} s)")
    ax.set_xlabel("capture time (UTC)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    ax.grid(alpha=0.3)
    return Plot(
        "verdict-mix",
        "Verdict mix over time",
        "Verdicts per predicted class, by capture time, stacked.",
        _png(fig),
    )


def decision_shares(table: pa.Table) -> dict[str, dict[str, float]]:
    """Per gateway, the share of its verdicts with each decision (malicious first)."""
    gateways = table.column("gateway").to_numpy(zero_copy_only=False).astype(str)
    decisions = table.column("decision").to_numpy(zero_copy_only=False).astype(str)
    out: dict[str, dict[str, float]] = {}
    for gw in sorted(set(gateways)):
        mine = decisions[gateways == gw]
        out[gw] = {d: float(np.mean(mine == d)) for d in ("malicious", "uncertain", "benign")}
    return out


def malicious_share_plot(table: pa.Table) -> Plot:
    shares = decision_shares(table)
    names = list(shares)
    gateways = table.column("gateway").to_numpy(zero_copy_only=False).astype(str)
    totals = [int((gateways == g).sum()) for g in names]
    fig = _figure(9.0, max(2.0, 0.5 * len(names) + 1.2))
    ax = fig.add_subplot()
    mal = [shares[g]["malicious"] for g in names]
    unc = [shares[g]["uncertain"] for g in names]
    bars = ax.barh(names, mal, color="#c0392b", label="malicious")
    ax.barh(names, unc, left=mal, color="#f39c12", label="uncertain")
    for bar, m, u, total in zip(bars, mal, unc, totals, strict=True):
        ax.text(
            min(m + u, 0.98), bar.get_y() + bar.get_height() / 2,
            f" {m:.1%} malicious, {u:.1%} uncertain of {total}", va="center",
            ha="left" if m + u < 0.6 else "right",
        )  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of verdicts by decision")
    ax.legend(loc="lower right")
    ax.invert_yaxis()
    return Plot(
        "malicious-share",
        "Malicious and uncertain share per gateway",
        "Share of each gateway's verdicts whose decision is malicious, and uncertain "
        "(low confidence or unlike the training data), from the model's calibrated score.",
        _png(fig),
    )


def latency(table: pa.Table) -> tuple[np.ndarray, str]:
    """Per packet, milliseconds to its verdict, and from when: the tap's publish time
    (``ingested_at_ns``) where the verdicts carry it, as the pipeline's do; capture time
    otherwise (offline scoring). A replayed capture's capture times are days old, so
    capture -> verdict would measure the capture's age, not the pipeline."""
    scored = table.column("scored_at_ns").to_numpy(zero_copy_only=False).astype(np.float64)
    since, name = table.column("ts_ns"), "capture"
    if "ingested_at_ns" in table.column_names and table.column("ingested_at_ns").null_count < (
        table.num_rows
    ):
        since, name = table.column("ingested_at_ns"), "tap publish"
    start = np.array(since.to_pylist(), dtype=np.float64)  # None -> nan
    ms = (scored - start) / 1e6
    return ms[np.isfinite(ms)], name


def latency_plot(table: pa.Table) -> Plot | None:
    """None for verdicts scored offline (``amlhp score``: no verdict time)."""
    if "scored_at_ns" not in table.column_names:
        return None
    lat, since = latency(table)
    fig = _figure()
    ax = fig.add_subplot()
    if lat.size == 0:
        lat = np.array([0.0])
    positive = np.clip(lat, 1e-3, None)
    bins = np.logspace(np.log10(positive.min()), np.log10(positive.max() * 1.01 + 1e-3), 50)
    ax.hist(positive, bins=[float(b) for b in bins], color="#2c7fb8")
    ax.set_xscale("log")
    p50, p99 = (float(np.percentile(lat, p)) for p in (50, 99))
    for value, name, style in ((p50, "p50", "--"), (p99, "p99", ":")):
        ax.axvline(max(value, 1e-3), color="black", linestyle=style, label=f"{name} {value:.1f} ms")
    ax.set_xlabel(f"{since} -> verdict latency (ms, log scale)")
    ax.set_ylabel("packets")
    ax.legend()
    return Plot(
        "latency",
        "Latency distribution",
        f"{since.capitalize()} time to verdict, per packet: p50 {p50:.1f} ms, p99 {p99:.1f} ms.",
        _png(fig),
        (("measured from", "p50 (ms)", "p99 (ms)"), (since, f"{p50:.1f}", f"{p99:.1f}")),
    )


def _port(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def service_sides(part: pa.Table) -> list[str]:
    """Per packet, ``address:port`` of its service side: the end with the lower port (the
    other is the client's ephemeral port), so a scan's replies count for the port they
    answer for rather than as the scanner's own ports; ``address`` without a port for
    portless protocols, ``(no IP)`` for non-IP frames."""
    out = []
    columns = ("src_ip", "src_port", "dst_ip", "dst_port")
    for src, sport, dst, dport in zip(*(part.column(c).to_pylist() for c in columns), strict=True):
        sport, dport = _port(sport), _port(dport)
        if dst is None:
            out.append("(no IP)")
        elif sport is not None and dport is not None and sport < dport:
            out.append(f"{src}:{sport}")
        else:
            out.append(f"{dst}:{dport}" if dport is not None else str(dst))
    return out


def top_destinations_plot(table: pa.Table) -> Plot | None:
    table = table.filter(pc.equal(table.column("decision"), "malicious"))
    attack = _classes(table)[:MAX_CLASSES_SHOWN]
    if not attack:
        return None
    cols = 2
    rows = (len(attack) + cols - 1) // cols
    fig = _figure(11.0, 2.4 * rows + 0.6)
    listed: list[tuple[str, ...]] = [("class", "service", "packets")]
    for i, cls in enumerate(attack):
        part = table.filter(pc.equal(table.column("label"), cls))
        names, counts = np.unique(np.array(service_sides(part)), return_counts=True)
        order = np.argsort(-counts, kind="stable")[:TOP_DESTINATIONS]
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.barh(names[order][::-1], counts[order][::-1], color="#d95f0e")
        ax.set_title(f"{cls} ({part.num_rows} packets)", fontsize="medium")
        ax.tick_params(axis="y", labelsize="small")
        listed += [(cls, str(names[k]), f"{int(counts[k]):,}") for k in order]
    return Plot(
        "top-destinations",
        "Top services per attack class",
        f"The {TOP_DESTINATIONS} address:port pairs most often on the service side (the end "
        "with the lower port) of packets decided malicious, per predicted class.",
        _png(fig),
        tuple(listed),
    )


def confusion_plot(table: pa.Table) -> Plot | None:
    if "true_label" not in table.column_names:
        return None
    known = table.filter(pc.is_valid(table.column("true_label")))
    if known.num_rows == 0:
        return None
    truth = known.column("true_label").to_numpy(zero_copy_only=False).astype(str)
    pred = known.column("label").to_numpy(zero_copy_only=False).astype(str)
    classes = sorted(set(truth) | set(pred))
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(matrix, ([index[t] for t in truth], [index[p] for p in pred]), 1)
    size = 3.0 + 0.55 * len(classes)
    fig = _figure(size + 2.0, size)
    ax = fig.add_subplot()
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (r, c), n in np.ndenumerate(matrix):
        if n:
            ax.text(c, r, str(n), ha="center", va="center", fontsize="x-small",
                    color="white" if shares[r, c] > 0.5 else "black")  # fmt: skip
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize="small")
    ax.set_yticks(range(len(classes)), classes, fontsize="small")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(image, ax=ax, label="share of the true class")
    accuracy = float(np.trace(matrix) / matrix.sum())
    return Plot(
        "confusion",
        "Confusion matrix",
        f"{known.num_rows} packets with a true label; accuracy {accuracy:.1%}. Cells count "
        "packets, colours are shares of the row.",
        _png(fig),
    )


# -- page -------------------------------------------------------------------------------
def _summary(table: pa.Table, root: Path) -> list[tuple[str, str]]:
    ts = table.column("ts_ns").to_numpy(zero_copy_only=False).astype(np.int64)
    first, last = (datetime.fromtimestamp(x / 1e9, UTC) for x in (ts.min(), ts.max()))
    versions = (
        sorted({str(v) for v in table.column("model_version").to_pylist()})
        if "model_version" in table.column_names
        else ["not recorded (offline scoring)"]
    )
    gateways = sorted({str(v) for v in table.column("gateway").to_pylist()})
    return [
        ("Dataset", str(root)),
        ("Verdicts", f"{table.num_rows:,}"),
        ("Capture time (UTC)", f"{first:%Y-%m-%d %H:%M:%S} - {last:%Y-%m-%d %H:%M:%S}"),
        ("Gateways", ", ".join(gateways)),
        ("Model versions", ", ".join(versions)),
        ("Decisions", ", ".join(f"{d} ({n:,})" for d, n in _counts(table, "decision"))),
        ("Classes", ", ".join(f"{c} ({n:,})" for c, n in _counts(table, "label"))),
    ]


def _counts(table: pa.Table, column: str) -> list[tuple[str, int]]:
    counts = pc.value_counts(table.column(column)).to_pylist()
    return sorted(((str(c["values"]), int(c["counts"])) for c in counts), key=lambda x: -x[1])


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table.summary td { padding: 2px 12px 2px 0; vertical-align: top; }
table.summary td:first-child { font-weight: 600; white-space: nowrap; }
table.incidents { border-collapse: collapse; font-size: 0.85em; }
table.incidents th, table.incidents td { border: 1px solid #ddd; padding: 2px 6px; }
figure { margin: 0 0 1.5em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('img.plot');
  var ok = 0;
  imgs.forEach(function (img) { if (img.complete && img.naturalWidth > 0) { ok += 1; } });
  document.body.setAttribute('data-plots-rendered', String(ok));
});
"""


def render_report(
    table: pa.Table,
    root: Path,
    *,
    title: str | None = None,
    incidents: IncidentSection | None = None,
) -> tuple[str, list[Plot]]:
    """The HTML page and its plots (and the incidents section when given)."""
    plots = [verdict_mix_plot(table), malicious_share_plot(table)]
    for optional in (latency_plot(table), top_destinations_plot(table), confusion_plot(table)):
        if optional is not None:
            plots.append(optional)
    heading = title or f"amlhp run report: {root.name}"
    summary = _summary(table, root)
    if incidents is not None:
        summary.append(("Incidents", incidents.summary()))
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in summary
    )
    figures = "".join(
        f'<h2 id="{p.key}">{html.escape(p.title)}</h2><figure>'
        f'<img class="plot" id="plot-{p.key}" alt="{html.escape(p.title)}" '
        f'src="data:image/png;base64,{base64.b64encode(p.png).decode()}">'
        f"<figcaption>{html.escape(p.caption)}</figcaption></figure>{_rows_table(p)}"
        for p in plots
    )
    section = incidents.html() if incidents is not None else ""
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(heading)}</title><style>{_STYLE}</style>"
        f"<script>{_SCRIPT}</script></head>"
        f'<body data-plots-expected="{len(plots)}"><h1>{html.escape(heading)}</h1>'
        f'<table class="summary">{rows}</table>{section}{figures}'
        f"<p><small>Generated by amlhp report at "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC.</small></p></body></html>\n"
    )
    return page, plots


def _rows_table(plot: Plot) -> str:
    """A plot's numbers as an HTML table (readable, searchable, checked by the tests)."""
    if not plot.rows:
        return ""
    head, *body = plot.rows
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    lines = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body
    )
    return f'<table class="numbers" id="numbers-{plot.key}"><tr>{cells}</tr>{lines}</table>'


def write_report(
    root: Path,
    out: Path,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    truth: Path | None = None,
    title: str | None = None,
    alerts: Path | None = None,
) -> dict[str, Any]:
    """Render the report of the dataset at ``root`` into ``out``; returns a summary.

    ``alerts`` is the alert dataset (the alerts sink's ``--out``) whose incidents get a
    section of their own; without it the sibling ``alerts`` folder of ``root`` is used
    when there is one (``out/verdicts`` -> ``out/alerts``, the demo's layout).
    """
    table = load_verdicts(root, since, until)
    if truth is not None:
        table = attach_truth(table, truth)
    if alerts is None and (root.parent / "alerts").is_dir():
        alerts = root.parent / "alerts"
    section = None
    if alerts is not None:
        section = load_incidents(
            alerts, _ns(since) if since else None, _ns(until) if until else None
        )
    page, plots = render_report(table, root, title=title, incidents=section)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return {
        "report": str(out),
        "verdicts": table.num_rows,
        "plots": [p.key for p in plots],
        "bytes": out.stat().st_size,
        "incidents": None if section is None else len(section.incidents),
    }
