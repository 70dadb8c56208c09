"""Markdown tables from the result JSON (``amlhp bench table FILE...``).

The README and docs/benchmarks.md show these tables; generating them from the committed
JSON keeps the published numbers and the measured ones the same.
"""

from __future__ import annotations

from typing import Any


def _n(value: Any, fmt: str = ",.0f") -> str:
    if value is None:
        return "–"
    return format(value, fmt)


def machine_line(doc: dict[str, Any]) -> str:
    m = doc.get("machine", {})
    parts = [
        str(m.get("cpu", "?")),
        f"{m.get('cores_usable', '?')} cores",
        f"{m.get('memory_gib', '?')} GiB",
        f"Python {m.get('python', '?')}",
        f"torch {m.get('torch', '?')}",
        f"Kafka {m.get('kafka_broker', '?')}",
        f"librdkafka {m.get('librdkafka', '?')}",
    ]
    if m.get("native_isas"):
        parts.insert(1, f"native kernel {m['native_isas'][0]}")
    if m.get("gpu"):
        parts.append(f"GPU {m['gpu']}")
    return "Machine: " + ", ".join(parts)


def e2e_table(doc: dict[str, Any]) -> str:
    """One row per offered load, then the headline figures and the goals."""
    head = (
        "| load | offered (packets/s) | achieved (packets/s) | latency p50 / p99 / max (ms) "
        "| max lag (records / s) | lag growth (s/s) | drain (s) | packets | exact |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    rows = []
    loads = ([("full speed", doc["capacity"])] if doc.get("capacity") else []) + [
        (f"{ld['fraction_of_capacity']:.0%} of capacity", ld) for ld in doc["loads"]
    ]
    for name, ld in loads:
        lat = ld.get("latency_ms") or {}
        acc = ld["accounting"]
        rows.append(
            f"| {name} | {_n(ld['offered_pps'])} | {_n(ld['achieved_pps'])} | "
            f"{_n(lat.get('p50'))} / {_n(lat.get('p99'))} / {_n(lat.get('max'))} | "
            f"{_n(ld['max_lag_records'])} / {_n(ld['max_lag_seconds'], '.1f')} | "
            f"{_n(ld['lag_growth_s_per_s'], '.3f')} | {_n(ld['drain_s'], '.1f')} | "
            f"{_n(acc['packets_in'])} | "
            f"{'yes' if acc['exact'] else 'NO'} "
            f"({acc['duplicates']} dup, {acc['missing']} missing) |"
        )
    goals = doc.get("goals", {})
    sustained = goals.get("sustained_pps", {})
    p99 = goals.get("p99_ms_at_half_capacity", {})
    lines = [
        head,
        *rows,
        "",
        f"End to end (full-speed tap, first capture to last verdict): "
        f"**{_n(doc.get('end_to_end_packets_per_second'))} packets/s**; highest sustained "
        f"with bounded lag: {_n(doc.get('sustained_packets_per_second'))} packets/s "
        f"(goal {_n(sustained.get('goal'))}: {'met' if sustained.get('met') else 'not met'}); "
        f"p99 at {_n((p99.get('fraction') or 0) * 100)}% of capacity: "
        f"{_n(p99.get('measured'))} ms (goal {_n(p99.get('goal'))} ms: "
        f"{'met' if p99.get('met') else 'not met'}).",
        "",
        cpu_table(doc),
        "",
        machine_line(doc),
    ]
    return "\n".join(lines)


def cpu_table(doc: dict[str, Any]) -> str:
    """Cores used by each process during each load (1.00 = one full core)."""
    loads = doc["loads"]
    names = sorted({k for ld in loads for k in ld.get("cpu_cores", {})})
    order = [
        n for n in ("broker", "tap", "worker", "worker1", "worker2", "sink", "bench") if n in names
    ]
    order += [n for n in names if n not in order and n not in ("machine", "other")]
    order += [n for n in ("other", "machine") if n in names]
    head = "| load | " + " | ".join(order) + " |\n|---|" + "---|" * len(order)
    rows = [
        f"| {ld['fraction_of_capacity']:.0%} | "
        + " | ".join(_n(ld.get("cpu_cores", {}).get(n), ".2f") for n in order)
        + " |"
        for ld in loads
    ]
    return "Cores used during each load:\n\n" + "\n".join([head, *rows])


def stages_table(doc: dict[str, Any]) -> str:
    """Stage by stage: tap to Kafka, encoder, scorer (Fig. 10) and Parquet sink."""
    lines = ["| stage | figure |", "|---|---|"]
    tap = doc.get("tap")
    if tap:
        lines.append(
            f"| tap -> Kafka (full speed, acks=all, lz4) | {_n(tap['packets_per_second'])} "
            f"packets/s, {_n(tap['mb_per_second'], '.1f')} MB/s sent "
            f"({_n(tap['captured_mb_per_second'], '.1f')} MB/s captured) |"
        )
    enc = doc.get("encoder")
    if enc:
        lines.append(
            f"| encoder (one core, batches of {enc['batch_size']}) | {_n(enc['fast_pps'])} "
            f"packets/s (reference dpkt encoder {_n(enc['reference_pps'])}) |"
        )
    fig10 = doc.get("fig10")
    if fig10:
        for row in fig10["rows"]:
            mem = row.get("peak_memory_mb")
            lines.append(
                f"| scorer, batch {row['batch_size']:,} ({fig10['threads']} threads) | "
                f"{_n(row['packets_per_second'])} packets/s, {row['ms_per_packet']:.4f} ms/packet"
                + (f", peak {mem:.1f} MB" if mem is not None else "")
                + " |"
            )
    sink = doc.get("sink")
    if sink:
        lines.append(
            f"| Parquet sink (Kafka -> zstd Parquet, fsync) | {_n(sink['rows_per_second'])} "
            f"rows/s |"
        )
    lines += ["", machine_line(doc)]
    return "\n".join(lines)


def backends_table(doc: dict[str, Any]) -> str:
    """packets/s of each scorer backend (rows) at each batch size (columns), per thread
    count: :func:`amlhp.benchmarks.score_bench.compare_backends`."""
    rows = doc["rows"]
    sizes = sorted({r["batch_size"] for r in rows})
    keys = sorted({(r["threads"], r["backend"]) for r in rows})
    pps = {(r["threads"], r["backend"], r["batch_size"]): r["packets_per_second"] for r in rows}
    lines = [
        "| backend | threads | " + " | ".join(f"batch {s:,}" for s in sizes) + " |",
        "|---|---:|" + "---:|" * len(sizes),
    ]
    lines += [
        f"| {b} | {t} | " + " | ".join(_n(pps.get((t, b, s))) for s in sizes) + " |"
        for t, b in keys
    ]
    return "\n".join([*lines, "", machine_line(doc)])


def scaleout_table(doc: dict[str, Any]) -> str:
    lines = [
        "| workers | partitions | capacity (packets/s) | latency p50 / p99 (ms) | exact |",
        "|---|---|---|---|---|",
    ]
    for row in doc["rows"]:
        lat = row.get("latency_ms") or {}
        lines.append(
            f"| {row['workers']} | {doc['partitions']} | {_n(row['capacity_pps'])} | "
            f"{_n(lat.get('p50'))} / {_n(lat.get('p99'))} | "
            f"{'yes' if row['exact'] else 'NO'} |"
        )
    lines += ["", machine_line(doc)]
    return "\n".join(lines)


def render(doc: dict[str, Any]) -> str:
    """The table for any result document this package writes."""
    kind = doc.get("kind")
    if kind == "e2e":
        return e2e_table(doc)
    if kind == "stages":
        return stages_table(doc)
    if kind == "scaleout":
        return scaleout_table(doc)
    if kind == "score_backends":
        return backends_table(doc)
    if kind == "replay":
        from amlhp.benchmarks.replay_bench import replay_table

        return replay_table(doc)
    if kind == "fleet":
        from amlhp.benchmarks.fleet import fleet_table

        return fleet_table(doc)
    if "rows" in doc and "paper" in doc:  # fig10.json of `amlhp bench score --fig10`
        return stages_table({"fig10": doc, "machine": doc.get("machine", {})})
    from amlhp.benchmarks.exceptions import BenchmarksError

    raise BenchmarksError(f"not a result document this command knows (kind={kind!r})")
