"""Scoring throughput and the paper's Fig. 10: time and memory per packet vs. batch size.

The scorer alone is timed on encoded records: real packets from the public captures are
encoded once (not timed), cut into Arrow batches of ``batch_size`` and each batch goes
through :meth:`Scorer.score_batch` (Arrow -> arrays -> model -> ids and probabilities).
A run scores at least ``min_packets`` packets; the best of ``repeat`` runs counts, because
on a shared machine the slower runs measure the neighbours.

Peak memory (Fig. 10, right axis) is the peak of live tensor memory while one batch is
scored: replayed from the torch profiler's allocation records on CPU, and
``max_memory_allocated`` on CUDA.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from amlhp.benchmarks.encode_bench import DEFAULT_DATA, machine_info
from amlhp.benchmarks.exceptions import BenchmarksError
from amlhp.benchmarks.machine import machine_facts
from amlhp.model.scorer import TORCH_FREE

FIG10_SIZES: tuple[int, ...] = (1, 10, 100, 1000, 10000)
#: The paper's Fig. 10 figures (RTX 3090 GPU), for the plot and the README.
PAPER_MS_PER_PACKET = {1: 2.3342, 100: 0.0834, 10000: 0.0046}
PAPER_MEMORY_MB = {1: 0.6, 100: 7.5, 10000: 702.0}


@dataclass
class ScoreBenchResult:
    batch_size: int
    packets_per_second: float
    ms_per_packet: float
    runs_pps: list[float]
    packets_per_run: int
    repeat: int
    backend: str
    device: str
    threads: int
    chunk: int
    model_version: str
    machine: dict[str, Any] = field(default_factory=dict)
    workers: int = 1
    #: the native kernel's variant (``None`` for the other backends)
    isa: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def encoded_records(
    data: Path, packets: int, payload_bytes: int, mask_fields: tuple[str, ...]
) -> pa.Table:
    """``packets`` ok records, drawn round-robin from every capture under ``data``."""
    from amlhp.encoders.capture import expand_paths, iter_encoded
    from amlhp.encoders.layout import EncoderConfig

    if not data.is_dir():
        raise BenchmarksError(f"no capture folder at {data} (pass --data)")
    config = EncoderConfig(payload_bytes=payload_bytes, mask_fields=mask_fields)
    files = expand_paths([data])
    per_file = max(1, packets // max(1, len(files)) + 1)
    tables: list[pa.Table] = []
    for path in files:
        got = 0
        for batch in iter_encoded([path], config, batch_size=min(per_file, 5000)):
            ok = batch.filter(pc.equal(batch.column("status"), "ok"))
            tables.append(pa.Table.from_batches([ok]))
            got += ok.num_rows
            if got >= per_file:
                break
    table = pa.concat_tables(tables).combine_chunks()
    if table.num_rows == 0:
        raise BenchmarksError(f"no encodable packet under {data}")
    reps = -(-packets // table.num_rows)
    return pa.concat_tables([table] * reps).slice(0, packets).combine_chunks()


def _batches(table: pa.Table, batch_size: int) -> list[pa.RecordBatch]:
    out: list[pa.RecordBatch] = []
    for lo in range(0, table.num_rows - batch_size + 1, batch_size):
        out.extend(table.slice(lo, batch_size).combine_chunks().to_batches())
    return out


def time_scorer(
    scorer: Any, table: pa.Table, batch_size: int, *, repeat: int, min_packets: int
) -> list[float]:
    """Packets/s of each run of ``score_batch`` over full batches."""
    batches = _batches(table, batch_size)
    if not batches:
        raise BenchmarksError(f"{table.num_rows} records cannot fill a batch of {batch_size}")
    per_run = max(1, -(-min_packets // (batch_size * len(batches))))
    scorer.score_batch(batches[0])  # warm-up: lazy init, allocator, caches
    runs: list[float] = []
    for _ in range(repeat):
        n = 0
        started = time.perf_counter()
        for _ in range(per_run):
            for batch in batches:
                scorer.score_batch(batch)
                n += batch.num_rows
        runs.append(n / (time.perf_counter() - started))
    return runs


@dataclass(frozen=True)
class ScorerChoice:
    """Which scorer a benchmark times: the arguments of :func:`load_scorer` that the
    worker uses too, and the torch threads, in one place for every benchmark."""

    model: Path | None = None
    backend: str = "auto"
    device: str = "cpu"
    threads: int | None = None
    chunk: int | None = None
    workers: int = 1
    isa: str = "auto"

    def load(self) -> Any:
        from amlhp.model.scorer import load_scorer, torch_installed

        if self.threads and torch_installed():
            import torch

            torch.set_num_threads(self.threads)
        return load_scorer(
            self.model,
            backend=self.backend,
            device=self.device,
            chunk=self.chunk,
            workers=self.workers,
            isa=self.isa,
        )


def run_score_bench(
    *,
    choice: ScorerChoice | None = None,
    data: Path = DEFAULT_DATA,
    batch_size: int = 1000,
    repeat: int = 5,
    min_packets: int = 20_000,
) -> ScoreBenchResult:
    scorer = (choice or ScorerChoice()).load()
    table = encoded_records(
        data,
        max(batch_size, min(min_packets, 20_000)),
        scorer.payload_bytes,
        scorer.encoder_config.mask_fields,
    )
    runs = time_scorer(scorer, table, batch_size, repeat=repeat, min_packets=min_packets)
    best = max(runs)
    return ScoreBenchResult(
        batch_size=batch_size,
        packets_per_second=round(best, 1),
        ms_per_packet=round(1000.0 / best, 5),
        runs_pps=[round(r, 1) for r in runs],
        packets_per_run=max(batch_size, min_packets),
        repeat=repeat,
        backend=scorer.backend,
        device=str(scorer.device),
        threads=int(scorer.describe()["threads"]),
        chunk=scorer.chunk,
        model_version=scorer.version,
        machine=machine_info(),
        workers=scorer.workers,
        isa=scorer.isa,
    )


def peak_tensor_memory_mb(scorer: Any, batch: pa.RecordBatch) -> float:
    """Peak memory of the tensors live while one batch is scored, in MB.

    CUDA: ``max_memory_allocated`` over the call. CPU: the torch profiler's per-operator
    allocations (``profile_memory``), replayed in start order; the running sum's maximum is
    the peak of live tensor memory (numpy/Arrow buffers are not included). The torch-free
    backends (native, numpy): tracemalloc's peak, which numpy's arrays report to (the
    native kernel's per-packet stack is not included).
    """
    scorer.score_batch(batch)  # warm-up outside the measure
    if scorer.backend in TORCH_FREE:
        tracemalloc.start()
        try:
            scorer.score_batch(batch)
            return tracemalloc.get_traced_memory()[1] / 2**20
        finally:
            tracemalloc.stop()
    import torch
    from torch.profiler import ProfilerActivity, profile

    if str(scorer.device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        scorer.score_batch(batch)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        scorer.score_batch(batch)
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    live = peak = 0
    for event in events:
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak / 2**20


def run_fig10(
    *,
    choice: ScorerChoice | None = None,
    data: Path = DEFAULT_DATA,
    sizes: tuple[int, ...] = FIG10_SIZES,
    repeat: int = 3,
    min_packets: int = 20_000,
    out_json: Path | None = None,
    out_png: Path | None = None,
    with_memory: bool = True,
) -> dict[str, Any]:
    """Per-packet time and peak memory for each batch size (paper Fig. 10)."""
    choice = choice or ScorerChoice()
    scorer = choice.load()
    table = encoded_records(
        data, max(sizes), scorer.payload_bytes, scorer.encoder_config.mask_fields
    )
    rows: list[dict[str, Any]] = []
    last: ScoreBenchResult | None = None
    for size in sizes:
        # Small batches are slow per packet: fewer packets keep batch 1 under a minute.
        packets = min(min_packets, max(size, 2000 if size < 10 else min_packets))
        last = run_score_bench(
            choice=choice, data=data, batch_size=size, repeat=repeat, min_packets=packets
        )
        row: dict[str, Any] = {
            "batch_size": size,
            "ms_per_packet": last.ms_per_packet,
            "packets_per_second": last.packets_per_second,
            "runs_pps": last.runs_pps,
        }
        if with_memory:
            row["peak_memory_mb"] = round(
                peak_tensor_memory_mb(scorer, _batches(table, size)[0]), 3
            )
        rows.append(row)
    assert last is not None
    doc: dict[str, Any] = {
        "what": "IoT-AMLHP scorer: per-packet time and peak memory vs batch size (paper Fig. 10)",
        "backend": last.backend,
        "device": last.device,
        "threads": last.threads,
        "chunk": last.chunk,
        "model_version": last.model_version,
        "machine": last.machine,
        "memory_method": "peak live memory while scoring one batch: torch profiler "
        "allocations (torch on CPU) / max_memory_allocated (CUDA) / tracemalloc (native, "
        "numpy)",
        "rows": rows,
        "paper": {
            "ms_per_packet": PAPER_MS_PER_PACKET,
            "memory_mb": PAPER_MEMORY_MB,
            "device": "NVIDIA RTX 3090",
        },
    }
    if out_json is not None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(doc, indent=2) + "\n")
    if out_png is not None:
        plot_fig10(doc, out_png)
    return doc


def _plot_with_paper(
    ax: Any,
    sizes: list[int],
    values: list[float],
    paper: dict[str, float],
    styles: tuple[str, str],
    color: str,
    labels: tuple[str, str],
) -> None:
    """This machine's curve and the paper's figures (keyed by batch size) beside it."""
    ax.plot(sizes, values, styles[0], color=color, label=labels[0])
    points = sorted((int(k), v) for k, v in paper.items())
    ax.plot(
        [p[0] for p in points],
        [p[1] for p in points],
        styles[1],
        color=color,
        alpha=0.5,
        label=labels[1],
    )


def plot_fig10(doc: dict[str, Any], path: Path) -> None:
    from amlhp.plots import pyplot, save_figure

    plt = pyplot()

    rows = doc["rows"]
    sizes = [r["batch_size"] for r in rows]
    ms = [r["ms_per_packet"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    _plot_with_paper(
        ax,
        sizes,
        ms,
        doc["paper"]["ms_per_packet"],
        ("o-", "x--"),
        "tab:blue",
        ("time per packet (this machine)", "time per packet (paper, RTX 3090)"),
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("packets per batch")
    ax.set_ylabel("ms per packet")
    if all("peak_memory_mb" in r for r in rows):
        ax2 = ax.twinx()
        _plot_with_paper(
            ax2,
            sizes,
            [max(r["peak_memory_mb"], 1e-2) for r in rows],
            doc["paper"]["memory_mb"],
            ("s-", "+--"),
            "tab:red",
            ("peak memory (this machine)", "memory (paper)"),
        )
        ax2.set_yscale("log")
        ax2.set_ylabel("peak memory (MB)")
        lines = ax.get_lines() + ax2.get_lines()
    else:
        lines = ax.get_lines()
    ax.legend(lines, [str(line.get_label()) for line in lines], fontsize=7, loc="upper center")
    cpu = doc["machine"].get("cpu", "?")
    ax.set_title(
        f"Scoring time and memory vs batch size\n{cpu}, {doc['threads']} threads, {doc['backend']}",
        fontsize=9,
    )
    save_figure(fig, path)


def compare_backends(
    *,
    model: Path | None = None,
    data: Path = DEFAULT_DATA,
    sizes: tuple[int, ...] = (1, 10, 100, 1000, 10_000),
    backends: tuple[str, ...] = ("torch", "fast", "onnx", "numpy", "native"),
    thread_counts: tuple[int, ...] = (1, 2),
    repeat: int = 3,
    min_packets: int = 20_000,
) -> dict[str, Any]:
    """packets/s of every backend and thread count at the given batch sizes (batches of 1
    and 10 are timed on fewer packets: 200 per packet of batch, so that torch's batch 1
    takes seconds, not minutes)."""
    rows: list[dict[str, Any]] = []
    for threads in thread_counts:
        for backend in backends:
            for size in sizes:
                # numpy and native have no intra-op threads: their threads score shares of
                # a batch side by side (the worker's --score-threads)
                choice = (
                    ScorerChoice(model=model, backend=backend, threads=1, workers=threads)
                    if backend in ("numpy", "native")
                    else ScorerChoice(model=model, backend=backend, threads=threads)
                )
                r = run_score_bench(
                    choice=choice,
                    data=data,
                    batch_size=size,
                    repeat=repeat,
                    min_packets=min(min_packets, 200 * size),
                )
                rows.append(
                    {
                        "backend": backend,
                        "threads": threads,
                        "batch_size": size,
                        "packets_per_second": r.packets_per_second,
                        "runs_pps": r.runs_pps,
                    }
                )
    return {
        "kind": "score_backends",
        "what": "packets/s of every scorer backend by threads and batch size",
        "rows": rows,
        "machine": machine_facts(),
    }


#: IoT-AMLHP sizes compared by ``--sweep``: ours, and wider token counts that approach the
#: paper's 7 MFLOPs within 25,000 parameters (the attention's cost grows with tokens^2).
SWEEP_CONFIGS: tuple[dict[str, int], ...] = (
    {"channels": 30, "tokens": 16, "ffn_dim": 32},
    {"channels": 16, "tokens": 24, "ffn_dim": 64},
    {"channels": 16, "tokens": 32, "ffn_dim": 64},
    {"channels": 16, "tokens": 48, "ffn_dim": 64},
)


def size_sweep(
    *,
    configs: tuple[dict[str, int], ...] = SWEEP_CONFIGS,
    batch_size: int = 1000,
    repeat: int = 5,
    threads: int | None = None,
) -> dict[str, Any]:
    """Params, FLOPs and fast-path packets/s of untrained IoT-AMLHP sizes (model only)."""
    import torch

    from amlhp.model.flops import model_cost
    from amlhp.model.registry import create_model
    from amlhp.model.reparam import FastAMLHP
    from amlhp.model.scorer import DEFAULT_CHUNK

    if threads:
        torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    header = torch.randint(0, 256, (batch_size, 128), dtype=torch.uint8, generator=g)
    payload = torch.randint(0, 256, (batch_size, 64), dtype=torch.uint8, generator=g)
    rows: list[dict[str, Any]] = []
    for config in configs:
        net = create_model("amlhp", num_classes=9, **config)
        cost = model_cost(net)
        fast = FastAMLHP(net)  # type: ignore[arg-type]
        best = 0.0
        with torch.inference_mode():
            for lo in range(0, batch_size, DEFAULT_CHUNK):
                fast(header[lo : lo + DEFAULT_CHUNK], payload[lo : lo + DEFAULT_CHUNK])
            for _ in range(repeat):
                started = time.perf_counter()
                for lo in range(0, batch_size, DEFAULT_CHUNK):
                    fast(header[lo : lo + DEFAULT_CHUNK], payload[lo : lo + DEFAULT_CHUNK])
                best = max(best, batch_size / (time.perf_counter() - started))
        rows.append(
            {
                **config,
                "attention_tokens": 2 * config["tokens"],
                "params": cost.params,
                "flops": cost.flops,
                "packets_per_second": round(best, 1),
            }
        )
    return {
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "rows": rows,
        "machine": machine_info(),
    }


def pps_at(doc: dict[str, Any], size: int) -> float | None:
    for row in doc["rows"]:
        if row["batch_size"] == size:
            return float(row["packets_per_second"])
    return None
