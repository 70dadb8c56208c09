"""One flow verdict explained: confidence, the attribution check and group Shapley values,
as a JSON document and as a picture (the flow matrix beside the attributions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from amlhp.flows.artifact import FlowModel
from amlhp.flows.calibration import softmax
from amlhp.flows.dataset import FlowDataset, matrices
from amlhp.flows.record import (
    HEAD_LEN,
    SLOT_DEVICE_PORT,
    SLOT_PROTO,
    SLOT_REMOTE_IP,
    SLOT_REMOTE_PORT,
)
from amlhp.flows.shapley import GROUPS, captum_shapley, exact_shapley


def explain_flow(
    model: FlowModel, ds: FlowDataset, index: int, *, with_captum: bool = False
) -> dict[str, Any]:
    """Everything about one flow's verdict (flow ``index`` of ``ds``)."""
    x = torch.from_numpy(matrices(ds, np.asarray([index])))
    net, refiner = model.torch_network(), model.refiner
    with torch.inference_mode():
        logits = net(x).float().numpy()
    raw = softmax(logits)[0]
    phi, cal = exact_shapley(net, x, temperature=refiner.temperature)
    pred = int(cal[0].argmax())
    top = [int(c) for c in np.argsort(-cal[0])[:3]]
    dist = float(refiner.distance(phi, np.asarray([pred]))[0])
    head = ds.head[index]
    remote = ".".join(str(int(v)) for v in head[SLOT_REMOTE_IP : SLOT_REMOTE_IP + 4])
    doc: dict[str, Any] = {
        "flow": int(index),
        "device": ds.devices[int(ds.device[index])],
        "remote": f"{remote}:{int(head[SLOT_REMOTE_PORT])}",
        "device_port": int(head[SLOT_DEVICE_PORT]),
        "proto": int(head[SLOT_PROTO]),
        "packets": int(ds.packets[index]),
        "bytes": int(ds.bytes[index]),
        "context_flows": int((ds.context[index] >= 0).sum()),
        "true_label": ds.classes[int(ds.label[index])],
        "label": model.classes[pred],
        "raw_confidence": float(raw[pred]),
        "confidence": float(cal[0, pred]),
        "threshold": refiner.threshold,
        "profile_distance": dist,
        "consistent": dist <= 1.0,
        "uncertain": bool(cal[0, pred] < refiner.threshold or dist > 1.0),
        "top3": {model.classes[c]: float(cal[0, c]) for c in top},
        "attributions": {g: float(phi[0, i, pred]) for i, g in enumerate(GROUPS)},
        "attributions_runner_up": {g: float(phi[0, i, top[1]]) for i, g in enumerate(GROUPS)}
        if len(top) > 1
        else {},
        "p_nothing": float(cal[0, pred] - phi[0, :, pred].sum()),
    }
    if with_captum:
        cap = captum_shapley(net, x, pred, temperature=refiner.temperature)
        doc["attributions_captum"] = {g: float(v) for g, v in zip(GROUPS, cap, strict=True)}
    return doc


def plot_flow_explanation(doc: dict[str, Any], ds: FlowDataset, index: int, path: Path) -> None:
    """The matrix (head slots and the first 400 payload slots of each row) and the group
    attributions for the predicted class and the runner-up."""
    from amlhp.plots import pyplot, save_figure

    plt = pyplot()

    mat = matrices(ds, np.asarray([index]))[0]
    view = np.concatenate([mat[:, :HEAD_LEN], mat[:, HEAD_LEN : HEAD_LEN + 400]], axis=1)
    shown = np.where(view >= 0, np.log1p(np.maximum(view, 0)), view)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [2.2, 1]})
    im = ax1.imshow(shown, aspect="auto", cmap="viridis", interpolation="nearest")
    ax1.axvline(10.5, color="white", lw=0.8)
    ax1.axvline(HEAD_LEN - 0.5, color="white", lw=0.8)
    ax1.set_yticks(range(mat.shape[0]), ["current"] + [f"prev {i}" for i in range(1, mat.shape[0])])
    ax1.set_xlabel("slot (metadata | 10 packets x time, size, dir | first 400 payload slots)")
    gateway, _, ip = str(doc["device"]).rpartition("|")
    where = "/".join(Path(gateway).parts[-2:])
    ax1.set_title(
        f"{where}: {ip}:{doc['device_port']} -> {doc['remote']} proto {doc['proto']}, "
        f"{doc['packets']} packets",
        fontsize=9,
    )
    fig.colorbar(im, ax=ax1, fraction=0.03, label="log(1+value); -1 pad, -4/-8 markers")
    groups = list(doc["attributions"])
    y = np.arange(len(groups))
    ax2.barh(y + 0.2, [doc["attributions"][g] for g in groups], 0.4, label=doc["label"])
    if doc.get("attributions_runner_up"):
        runner = next(k for k in doc["top3"] if k != doc["label"])
        ax2.barh(y - 0.2, [doc["attributions_runner_up"][g] for g in groups], 0.4, label=runner)
    ax2.set_yticks(y, groups)
    ax2.axvline(0, color="black", lw=0.6)
    ax2.set_xlabel("Shapley value (calibrated probability)")
    ax2.legend(fontsize=8, loc="lower right")
    state = "UNCERTAIN" if doc["uncertain"] else "confident"
    ax2.set_title(
        f"verdict {doc['label']} ({doc['confidence']:.2f}, {state}); true {doc['true_label']}",
        fontsize=9,
    )
    save_figure(fig, path)
