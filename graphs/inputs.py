"""Example inputs that a model's own library declares, so that no input has to be guessed.

Guessing from the first layer finds the channels but not the image size, and many models
accept one size only (a ViT's position embedding, a MaxViT's attention windows): timm
models say theirs in ``pretrained_cfg["input_size"]``. Nor does a guess know that a
transformers encoder-decoder (T5, BART) needs decoder inputs too: its config says so. The
``hf:`` and ``timm:`` specs and modules passed as they are get their inputs from here alike.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

IMAGE_SIZE = (3, 224, 224)  # what a timm model without an input size is traced at
TEXT_LENGTH = 16


def hf_inputs(config: Any, main_input_name: str) -> dict[str, torch.Tensor]:
    """A batch of two for a transformers model whose forward's first input is
    ``main_input_name``: images at the config's size, or token ids, plus decoder token ids
    when the config is an encoder-decoder's."""
    if main_input_name == "pixel_values":
        size = getattr(config, "image_size", 224)
        channels = getattr(config, "num_channels", 3)
        return {"pixel_values": torch.zeros(2, channels, size, size)}
    ids = torch.zeros(2, TEXT_LENGTH, dtype=torch.long)
    inputs = {"input_ids": ids}
    if getattr(config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = ids
    return inputs


def timm_input_size(model: nn.Module) -> tuple[int, ...] | None:
    """The ``(channels, height, width)`` a timm model declares in its ``pretrained_cfg``
    (``default_cfg`` in older timm), or None for a model that declares none."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(cfg, Mapping) and cfg.get("input_size"):
        return tuple(cfg["input_size"])
    return None


def timm_inputs(model: nn.Module, options: Mapping[str, Any] | None = None) -> torch.Tensor:
    """A batch of two images at a timm model's declared input size, where ``options`` (its
    constructor's) set the size with ``img_size`` or the channels with ``in_chans``: timm
    keeps the pretrained size in the cfg when those are given, so they take precedence."""
    channels, *size = timm_input_size(model) or IMAGE_SIZE
    options = options or {}
    channels = options.get("in_chans", channels)
    img_size = options.get("img_size")
    if img_size is not None:
        size = [img_size, img_size] if isinstance(img_size, int) else list(img_size)
    return torch.zeros(2, channels, *size)


def declared_inputs(model: nn.Module) -> Any:
    """The input a model's library says its forward takes, or None if it says nothing."""
    transformers = sys.modules.get("transformers")  # no transformers model without it
    if transformers is not None and isinstance(model, transformers.PreTrainedModel):
        return hf_inputs(model.config, model.main_input_name)
    if timm_input_size(model) is not None:
        return timm_inputs(model)
    return None
