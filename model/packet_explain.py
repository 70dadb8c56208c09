"""Per-packet explanations of IoT-AMLHP verdicts over named header fields and the payload.

The players are the protocol fields of the header vector ``h`` (the byte layout of
:mod:`amlhp.encoders.layout`; TCP's offset/flags word is split into ``tcp.offset`` and
``tcp.flags``, and the version/IHL byte is ``ip.version_ihl``) plus the payload vector as
one player. An absent field takes the value a packet has where it lacks the field: 0xff
in the header (the encoder's padding) and 0x00 in the payload (its zero padding). So a
field the packet does not have (the TCP slot of a UDP packet) is equal to its baseline and
gets exactly 0, and a field's value answers "how much does this field's content move the
probability of the verdict, compared with the field being absent".

With 26 players (25 header fields and the payload) exact Shapley values are out of
reach; Captum's ``ShapleyValueSampling`` averages marginal contributions over
``samples`` random permutations (unbiased; the attributions of one packet still sum
exactly to p(x) - p(baseline)).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from torch import Tensor, nn

from amlhp.encoders.layout import HEADER_LEN, MASKABLE_FIELDS, PAD_BYTE, mask_columns

PAYLOAD: Final = "payload"


def header_fields() -> list[tuple[str, int, int]]:
    """(name, first column, end column) of each named field of ``h``, in byte order."""
    out = [("ip.version_ihl", 0, 1)]
    for name in MASKABLE_FIELDS:
        _, lo, hi = mask_columns(name)
        if name == "tcp.offset":
            out.append(("tcp.offset", lo, lo + 1))
            out.append(("tcp.flags", lo + 1, hi))
        else:
            out.append((name, lo, hi))
    return sorted(out, key=lambda f: f[1])


FIELD_NAMES: Final = [*(f[0] for f in header_fields()), PAYLOAD]


def feature_masks(payload_bytes: int) -> tuple[Tensor, Tensor]:
    """Captum feature masks: header (1, 128) with one id per field, payload (1, P)."""
    fields = header_fields()
    header = torch.zeros(1, HEADER_LEN, dtype=torch.long)
    for i, (_, lo, hi) in enumerate(fields):
        header[0, lo:hi] = i
    payload = torch.full((1, payload_bytes), len(fields), dtype=torch.long)
    return header, payload


def explain_packets(
    model: nn.Module,
    header: np.ndarray,
    payload: np.ndarray,
    *,
    samples: int = 16,
    seed: int = 0,
    targets: np.ndarray | None = None,
    masked_fields: tuple[str, ...] | list[str] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Shapley value sampling for a packet model taking (header, payload) bytes.

    ``masked_fields`` are the fields the model's encoder zeroes (its artifact's
    ``encoding.mask_fields``): the model never saw anything else there, so they are not
    players. Their baseline is their (zeroed) value and their attribution exactly 0,
    instead of the effect of an off-distribution 0xff.

    Returns (attributions (N, F) over :data:`FIELD_NAMES` for each packet's predicted
    class, probabilities (N, K)). ``targets`` (N,) explains these classes instead: the
    streaming worker passes the verdicts' classes, which a re-parameterised scorer
    computed, so that a near-tie cannot make it explain another class than the verdict's.
    """
    from captum.attr import ShapleyValueSampling

    model.eval()
    h = torch.from_numpy(np.array(header, dtype=np.float32))
    d = torch.from_numpy(np.array(payload, dtype=np.float32))

    def forward(hh: Tensor, dd: Tensor) -> Tensor:
        return torch.softmax(model(hh, dd).float(), dim=1)

    with torch.no_grad():
        probs = forward(h, d).numpy()
    pred = torch.from_numpy(
        probs.argmax(axis=1) if targets is None else np.asarray(targets, dtype=np.int64)
    )
    hmask, dmask = feature_masks(d.shape[1])
    fields = header_fields()
    masked = set(masked_fields)
    unknown = masked - set(MASKABLE_FIELDS)
    if unknown:
        raise ValueError(f"unknown masked fields {sorted(unknown)}")
    frozen = torch.zeros(HEADER_LEN, dtype=torch.bool)
    for name in masked:
        _, lo, hi = mask_columns(name)
        frozen[lo:hi] = True
    out = np.zeros((h.shape[0], len(FIELD_NAMES)), np.float32)
    sampler = ShapleyValueSampling(forward)
    for i in range(h.shape[0]):
        torch.manual_seed(seed + i)
        base_h = torch.where(frozen, h[i], torch.full_like(h[i], float(PAD_BYTE)))
        with torch.no_grad():
            ah, ad = sampler.attribute(
                (h[i : i + 1], d[i : i + 1]),
                baselines=(base_h.unsqueeze(0), 0.0),
                target=int(pred[i]),
                feature_mask=(hmask, dmask),
                n_samples=samples,
                perturbations_per_eval=32,
            )
        for j, (name, lo, hi) in enumerate(fields):
            # a field equal to its baseline is a null player: exactly 0, whatever the
            # float noise of batched evaluation says
            absent = bool((h[i, lo:hi] == float(PAD_BYTE)).all())
            out[i, j] = 0.0 if absent or name in masked else float(ah[0, lo])
        out[i, -1] = 0.0 if bool((d[i] == 0).all()) else float(ad[0, 0])
    return out, probs


def explain_capture(
    capture: Path,
    model_path: Path | None,
    *,
    max_packets: int = 20,
    samples: int = 16,
    seed: int = 0,
    seqs: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Explain the verdicts of the first ``max_packets`` encodable packets of a capture,
    or of the packets ``seqs`` (their numbers in file order, as a tap from a fresh start
    numbers them: an incident's ``sample_seqs``)."""
    from amlhp.encoders.arrays import model_inputs
    from amlhp.encoders.capture import encode_captures
    from amlhp.encoders.layout import EncoderConfig
    from amlhp.model.artifact import load_artifact
    from amlhp.model.scorer import default_model_path

    artifact = load_artifact(model_path or default_model_path())
    meta = artifact.meta
    config = EncoderConfig(
        payload_bytes=int(meta["payload_bytes"]),
        mask_fields=tuple(meta.get("encoding", {}).get("mask_fields", ("ip.src", "ip.dst"))),
    )
    table = encode_captures([capture], config)
    header, payload, ok = model_inputs(table)
    idx = np.flatnonzero(ok)
    if seqs is not None:
        wanted = np.isin(table.column("seq").to_numpy(zero_copy_only=False), list(seqs))
        idx = idx[wanted[idx]]
    idx = idx[:max_packets]
    attr, probs = explain_packets(
        artifact.model,
        header[idx],
        payload[idx],
        samples=samples,
        seed=seed,
        masked_fields=config.mask_fields,
    )
    classes = artifact.classes
    docs = []
    for j, i in enumerate(idx):
        c = int(probs[j].argmax())
        ranked = sorted(
            ((FIELD_NAMES[f], float(attr[j, f])) for f in range(len(FIELD_NAMES))),
            key=lambda kv: -abs(kv[1]),
        )
        docs.append(
            {
                "seq": int(table.column("seq")[int(i)].as_py()),
                "src": f"{table.column('src_ip')[int(i)]}:{table.column('src_port')[int(i)]}",
                "dst": f"{table.column('dst_ip')[int(i)]}:{table.column('dst_port')[int(i)]}",
                "label": classes[c],
                "probability": float(probs[j, c]),
                "model_version": artifact.version,
                "attributions": {k: v for k, v in ranked if v != 0.0},
            }
        )
    return docs


def plot_packet_explanation(doc: dict[str, Any], path: Path, top: int = 12) -> None:
    """Bar chart of a packet's largest field attributions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = list(doc["attributions"].items())[:top][::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(items) + 1.4))
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel("Shapley value (probability of the verdict)")
    ax.set_title(
        f"{doc['src']} -> {doc['dst']}\n{doc['label']} ({doc['probability']:.2f})", fontsize=9
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
