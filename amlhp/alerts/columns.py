"""One gateway's verdicts as the engine's hot loop reads them: Python lists per column.

Columns a verdict batch lacks (an older producer of the packet facts) read as missing
(-1 or ``None``), so the behaviour detectors see nothing rather than zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from amlhp.alerts.policy import AlertPolicy
from amlhp.alerts.state import GatewayState


@dataclass(frozen=True)
class Rows:
    """The columns of one gateway's new verdicts, in seq order, as Python lists."""

    seq: list[int]
    ts: list[int]
    window: list[int]
    malicious: list[bool]
    label: list[str]
    score: list[float]
    src: list[str | None]
    dst: list[str | None]
    sport: list[int]
    dport: list[int]
    proto: list[int]
    flags: list[int]
    icmp_type: list[int]
    qname: list[str | None]
    modbus_fc: list[int]
    arp_op: list[int]  # -1: not an ARP frame
    arp_mac: list[str | None]
    model_version: list[str]


def _ints(column: pa.ChunkedArray | pa.Array, missing: int = -1) -> np.ndarray:
    """An integer column as int64, nulls as ``missing`` (unsigned columns included)."""
    return np.asarray(
        pc.fill_null(column.cast(pa.int64()), missing).to_numpy(zero_copy_only=False), np.int64
    )


def _column(part: pa.Table, name: str, missing: int = -1) -> list[int]:
    if name not in part.column_names:
        return [missing] * part.num_rows
    return _ints(part.column(name), missing).tolist()


def verdict_rows(
    part: pa.Table, gw: GatewayState, policy: AlertPolicy, model_version: str
) -> tuple[Rows | None, int]:
    """The new verdicts of one gateway (``seq`` above its mark) in seq order, and how many
    were re-deliveries."""
    part = part.sort_by("seq")
    seq = _ints(part.column("seq"))
    new = seq > gw.hwm
    duplicates = int((~new).sum())
    if not new.any():
        return None, duplicates
    part = part.filter(pa.array(new))
    seq = seq[new]
    ts = _ints(part.column("ts_ns"), 0)
    window = np.maximum.accumulate(np.maximum(ts // policy.window_ns, gw.window))
    decision = part.column("decision").to_numpy(zero_copy_only=False)
    versions = (
        part.column("model_version").to_pylist()
        if "model_version" in part.column_names
        else [model_version] * part.num_rows
    )
    score = pc.fill_null(part.column("malicious_score"), 0.0).to_numpy(zero_copy_only=False)
    evidence = decision == "malicious"
    if policy.count_uncertain:  # see amlhp.alerts.policy
        evidence |= (decision == "uncertain") & (score >= policy.min_score)
    qname = part.column("dns_qname").to_pylist() if "dns_qname" in part.column_names else None
    rows = Rows(
        seq=seq.tolist(),
        ts=ts.tolist(),
        window=window.tolist(),
        malicious=evidence.tolist(),
        label=[str(x) for x in part.column("label").to_pylist()],
        score=score.astype(float).tolist(),
        src=part.column("src_ip").to_pylist(),
        dst=part.column("dst_ip").to_pylist(),
        sport=_ints(part.column("src_port")).tolist(),
        dport=_ints(part.column("dst_port")).tolist(),
        proto=_column(part, "proto"),
        flags=_column(part, "tcp_flags"),
        icmp_type=_column(part, "icmp_type"),
        qname=qname or [None] * part.num_rows,
        modbus_fc=_column(part, "modbus_fc"),
        arp_op=_column(part, "arp_op"),
        arp_mac=(
            part.column("arp_mac").to_pylist()
            if "arp_mac" in part.column_names
            else [None] * part.num_rows
        ),
        model_version=[v or model_version for v in versions],
    )
    return rows, duplicates
