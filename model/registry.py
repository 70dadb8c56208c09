"""``create_model(name, **kwargs)``: one builder for IoT-AMLHP, its ablations and baselines.

Names (the rows of the results table):

=======================  ==========================================================
``amlhp``                IoT-AMLHP as described in the paper (our chosen sizes, bytes as bits)
``amlhp-value``          the same with bytes fed as scaled values, literally as the paper
``amlhp-no-header``      Table 4 Variant 1: header bytes replaced by zeros
``amlhp-no-payload``     Table 4 Variant 2: payload bytes replaced by zeros
``amlhp-fc-fusion``      Table 4 Variant 3: fusion replaced by a fully connected layer
``deeppacket``           Deep Packet at its published width (200 filters)
``deeppacket-s``         Deep Packet with 32 filters, as trained for the results table
``sam``                  SAM, first 50 bytes, self-attention + two 1-D convs
=======================  ==========================================================

Keyword arguments override the defaults of that name (e.g. ``num_classes``); artifacts
store the name and the full keyword set, so a saved model is rebuilt exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from amlhp.model.baselines import SAM, DeepPacket
from amlhp.model.exceptions import UnknownModelError
from amlhp.model.network import AMLHPNet

#: The sizes we chose for the paper's unstated ones (see README-model / network.py).
AMLHP_DEFAULTS: dict[str, Any] = {
    "channels": 30,
    "tokens": 16,
    "feature_dim": 32,
    "num_layers": 2,
    "num_heads": 8,
    "ffn_dim": 32,
    "hidden": 32,
    "dropout": 0.1,
    "byte_encoding": "bits",
}

_BUILDERS: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {
    "amlhp": (AMLHPNet, {**AMLHP_DEFAULTS}),
    "amlhp-value": (AMLHPNet, {**AMLHP_DEFAULTS, "byte_encoding": "value"}),
    "amlhp-no-header": (AMLHPNet, {**AMLHP_DEFAULTS, "mask_header": True}),
    "amlhp-no-payload": (AMLHPNet, {**AMLHP_DEFAULTS, "mask_payload": True}),
    "amlhp-fc-fusion": (AMLHPNet, {**AMLHP_DEFAULTS, "fusion": "fc"}),
    "deeppacket": (DeepPacket, {"input_bytes": 1500, "channels": 200}),
    "deeppacket-s": (DeepPacket, {"input_bytes": 1500, "channels": 32}),
    "sam": (SAM, {"input_bytes": 50}),
}

MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)

#: Adam learning rate when none is given: the paper's 1e-2 for IoT-AMLHP and its variants;
#: 1e-3 for the baselines, which do not train at 1e-2 (Deep Packet stays at chance level).
_DEFAULT_LR: dict[str, float] = {"deeppacket": 1e-3, "deeppacket-s": 1e-3, "sam": 1e-3}


def default_lr(name: str) -> float:
    return _DEFAULT_LR.get(name, 1e-2)


def model_kwargs(name: str, **overrides: Any) -> dict[str, Any]:
    """The full keyword set ``create_model(name, **overrides)`` would use."""
    if name not in _BUILDERS:
        raise UnknownModelError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    _, defaults = _BUILDERS[name]
    return {**defaults, **overrides}


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the named model; unknown names raise :class:`UnknownModelError`."""
    builder, _ = _BUILDERS.get(name, (None, {}))
    if builder is None:
        raise UnknownModelError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    try:
        return builder(**model_kwargs(name, **kwargs))
    except TypeError as exc:
        raise UnknownModelError(f"bad arguments for model {name!r}: {exc}") from exc


def input_kind(model: nn.Module) -> str:
    """``header_payload`` (IoT-AMLHP family) or ``packet_bytes`` (baselines)."""
    return str(getattr(model, "input_kind", "header_payload"))


def input_bytes(model: nn.Module) -> int:
    """How many packet bytes a ``packet_bytes`` model reads (0 for IoT-AMLHP)."""
    return int(getattr(model, "input_bytes", 0))
