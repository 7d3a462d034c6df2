"""Loading generator weights: safetensors only (never a pickle), strictly, clearly."""

from __future__ import annotations

import os

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from .errors import CheckpointError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"


def load_weights_strictly(model: nn.Module, path: str | os.PathLike, model_id: str,
                          map_location: str = "cpu") -> None:
    """Load safetensors weights into ``model``; every key and shape must match, else
    :class:`CheckpointError` says which do not."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{model_id}: no {os.path.basename(path)} (a generator "
                              f"checkpoint is {CONFIG_FILE} + {WEIGHTS_FILE})")
    try:
        state = load_file(path, device=map_location)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{model_id}: weights do not match {CONFIG_FILE} ({getattr(model, 'config', '')}): "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shapes {wrong[:3]}")
    model.load_state_dict(state, strict=True)
