"""Loading generator checkpoints: safetensors only (never a pickle), strictly, clearly."""

from __future__ import annotations

import os
from typing import Any

from huggingface_hub import hf_hub_download
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from .errors import CheckpointError

WEIGHTS_FILE = "model.safetensors"


def checkpoint_file(model_id: str, filename: str, layout: str, **download: Any) -> str:
    """Path of ``filename`` in a local folder or a Hub repo (``download``: hf_hub_download
    options); :class:`CheckpointError` naming the expected ``layout`` if it is missing."""
    if os.path.isdir(model_id):
        path = os.path.join(model_id, filename)
    else:
        path = hf_hub_download(repo_id=model_id, filename=filename, **download)
    if not os.path.isfile(path):
        raise CheckpointError(f"{model_id}: no {filename} (a checkpoint is {layout})")
    return path


def load_weights_strictly(model: nn.Module, path: str, model_id: str,
                          map_location: str = "cpu") -> None:
    """Load safetensors weights into ``model``; every key and shape must match, else
    :class:`CheckpointError` says which do not."""
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
            f"{model_id}: weights do not match config.json ({getattr(model, 'config', '')}): "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shapes {wrong[:3]}")
    model.load_state_dict(state, strict=True)
