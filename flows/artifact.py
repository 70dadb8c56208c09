"""The flow model artifact: weights (safetensors) + metadata (JSON) in one folder.

``<dir>/flow_model.safetensors`` holds the weights; ``<dir>/flow_model.json`` everything
needed to rebuild and trust them: class names, network sizes, the flow configuration
(local subnets, lifetime, context depth), the refinement parameters (temperature,
threshold, attribution profiles), training settings and the weights' sha256, which is
checked on load so a swapped or damaged file is refused rather than served.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from amlhp.digest import file_sha256
from amlhp.flows.exceptions import FlowArtifactError
from amlhp.flows.numpy_net import NumpyFlowCNN
from amlhp.flows.record import FlowConfig
from amlhp.flows.refine import Refiner

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from amlhp.flows.network import FlowCNN

WEIGHTS: Final = "flow_model.safetensors"
META: Final = "flow_model.json"
FORMAT: Final = "amlhp-flow-model/1"
#: the committed device identity model (package data, built by ``make flow-models``)
DEFAULT_MODEL: Final = Path(str(resources.files("amlhp.flows").joinpath("artifacts", "devices")))
#: the committed attack flow model (same recipe; classes: benign + the incident kinds)
ATTACK_MODEL: Final = Path(str(resources.files("amlhp.flows").joinpath("artifacts", "attacks")))


@dataclass
class FlowModel:
    """A flow model with what it needs to make trustworthy verdicts.

    ``network`` is the numpy network when loaded from an artifact (serving needs no
    torch) and the torch network right after training; :meth:`numpy_network` and
    :meth:`torch_network` give either from the same weights.
    """

    network: NumpyFlowCNN | FlowCNN
    classes: list[str]
    config: FlowConfig
    refiner: Refiner
    meta: dict[str, Any]
    _other: Any = field(default=None, repr=False)

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "unknown"))

    @property
    def alarm(self) -> float | None:
        """An attack model's alarm threshold on ``1 - P(benign)`` (:mod:`amlhp.flows.
        attacks`); None for a model of devices."""
        value = self.meta.get("alarm")
        return None if value is None else float(value)

    def numpy_network(self) -> NumpyFlowCNN:
        """What the worker and ``amlhp flows score`` run: the same path, no torch."""
        if isinstance(self.network, NumpyFlowCNN):
            return self.network
        if self._other is None:
            state = self.network.state_dict()
            self._other = NumpyFlowCNN({k: v.detach().numpy() for k, v in state.items()})
        return self._other

    def torch_network(self) -> FlowCNN:
        """The torch network (evaluation, Captum, FLOP counts); needs the train extra."""
        if not isinstance(self.network, NumpyFlowCNN):
            return self.network
        if self._other is None:
            import torch

            from amlhp.flows.network import FlowCNN

            net = FlowCNN(
                num_classes=self.network.num_classes,
                rows=int(self.meta["network"]["rows"]),
                width=self.network.width,
            )
            net.load_state_dict({k: torch.from_numpy(v) for k, v in self.network.weights.items()})
            self._other = net.eval()
        return self._other


def save_flow_model(
    out_dir: Path,
    network: FlowCNN,
    classes: list[str],
    config: FlowConfig,
    refiner: Refiner,
    extra: dict[str, Any] | None = None,
) -> Path:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS
    state = {k: v.detach().contiguous() for k, v in network.state_dict().items()}
    save_file(state, str(weights))
    digest = file_sha256(weights)
    meta = {
        "format": FORMAT,
        "version": f"flowcnn-{digest[:12]}",
        "weights_sha256": digest,
        "classes": classes,
        "network": {"rows": network.rows, "width": network.row.out_channels},
        "flow_config": config.as_dict(),
        "refiner": refiner.as_dict(),
        **(extra or {}),
    }
    (out_dir / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return out_dir


def load_flow_model(path: Path) -> FlowModel:
    """Load and verify an artifact folder (or the path of its JSON or weights file).

    Weights are read with ``safetensors.numpy``: no pickle, and no torch."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not path.exists():
        raise FlowArtifactError(f"no flow model at {path}")
    folder = path if path.is_dir() else path.parent
    meta_path, weights = folder / META, folder / WEIGHTS
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise FlowArtifactError(f"cannot read flow model metadata {meta_path}: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise FlowArtifactError(f"{meta_path} is not a {FORMAT} artifact")
    if not weights.is_file() or file_sha256(weights) != meta.get("weights_sha256"):
        raise FlowArtifactError(f"{weights} is missing or does not match its sha256")
    config = FlowConfig.from_dict(meta["flow_config"])
    try:
        net = NumpyFlowCNN(load_file(str(weights)))
    except (SafetensorError, ValueError) as exc:
        raise FlowArtifactError(f"{weights} cannot be read: {exc}") from exc
    if net.num_classes != len(meta["classes"]) or net.width != int(meta["network"]["width"]):
        raise FlowArtifactError(f"{weights} does not fit the network {meta_path} describes")
    return FlowModel(net, list(meta["classes"]), config, Refiner.from_dict(meta["refiner"]), meta)


def load_attack_model(option: str | None, like: FlowConfig | None = None) -> FlowModel | None:
    """The attack model a command runs beside the device model: ``None`` (the option not
    given) is the committed one where the install has it and it assembles flows as the
    device model does (``like``: a device model of other subnets runs alone, logged),
    ``"none"`` none, else the artifact at that path (which must hold an attack model)."""
    if option is not None and option.lower() == "none":
        return None
    path = ATTACK_MODEL if option is None else Path(option)
    if option is None and not (path / META).is_file():
        return None
    model = load_flow_model(path)
    if option is None and like is not None and model.config != like:
        log.warning("the committed attack model assembles flows differently: not run")
        return None
    if model.alarm is None:
        raise FlowArtifactError(f"{path} is a flow model without an alarm: not an attack model")
    return model
