"""The held-out architectures: the fixed list a generator is evaluated on and never trained
on. Reserved-seed samples of every sampler (:data:`HELD_OUT_SEED_START` on), then real
models adapted to 32x32 images and 10 classes (or to the char vocabulary)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torchvision
from torch import nn

from .families import (
    HELD_OUT_PER_SAMPLER,
    HELD_OUT_SEED_START,
    IMAGE_SIZE,
    NUM_CLASSES,
    VOCAB_SIZE,
    GPTLike,
    image_samplers,
)


@dataclass(frozen=True)
class HeldOut:
    """An evaluation architecture: a name and a zero-argument constructor (built lazily)."""

    name: str
    build: Callable[[], nn.Module]
    kind: str


def _cifar_resnet(name: str) -> nn.Module:
    """torchvision ResNet with the usual CIFAR stem: 3x3 stride-1 conv, no max pooling."""
    model = getattr(torchvision.models, name)(num_classes=NUM_CLASSES)
    model.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _cifar_mobilenet_v3_small() -> nn.Module:
    """MobileNetV3-Small with a stride-1 stem (a 2x2 map before the head, not 1x1)."""
    model = torchvision.models.mobilenet_v3_small(num_classes=NUM_CLASSES)
    model.features[0][0].stride = (1, 1)
    return model


def _cifar_convnext_tiny() -> nn.Module:
    """ConvNeXt-T with a 2x2 patchify stem instead of 4x4 (a 2x2 map before the head)."""
    model = torchvision.models.convnext_tiny(num_classes=NUM_CLASSES)
    model.features[0][0] = nn.Conv2d(3, 96, 2, 2)
    return model


def _cifar_vit_b() -> nn.Module:
    """ViT-B/16's depth and width on 32x32 images with 4x4 patches (64 tokens).

    ``vit_b_16`` fixes its patch size, so the class is built directly.
    """
    return torchvision.models.VisionTransformer(
        image_size=IMAGE_SIZE, patch_size=4, num_layers=12, num_heads=12, hidden_dim=768,
        mlp_dim=3072, num_classes=NUM_CLASSES)


def _char_gpt2_small() -> nn.Module:
    """GPT-2 small (12 layers, width 768) over the char vocabulary, 256 positions."""
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB_SIZE, n_positions=256,
                                      bos_token_id=None, eos_token_id=None))


REAL_ARCHITECTURES: dict[str, dict[str, Callable[[], nn.Module]]] = {
    "image": {
        "resnet18-cifar": partial(_cifar_resnet, "resnet18"),
        "resnet50-cifar": partial(_cifar_resnet, "resnet50"),
        "mobilenet_v3_small-cifar": _cifar_mobilenet_v3_small,
        "convnext_tiny-cifar": _cifar_convnext_tiny,
        "vit_b_16-cifar": _cifar_vit_b,
    },
    "text": {"gpt2-char": _char_gpt2_small},
}


def held_out(kind: str = "image") -> list[HeldOut]:
    """The fixed evaluation list: reserved-seed samples of every sampler, then real models.

    Real models are adapted to 32x32 images and 10 classes (or to the char vocabulary);
    they are full size, so build them under ``graphs.meta_init()`` when only the graph is
    needed. ``GPT2LMHeadModel`` returns a ``ModelOutput``: its logits are ``.logits``.
    """
    if kind not in REAL_ARCHITECTURES:
        raise ValueError(f"kind must be 'image' or 'text', got {kind!r}")
    samplers = image_samplers() if kind == "image" else [GPTLike()]
    seeds = range(HELD_OUT_SEED_START, HELD_OUT_SEED_START + HELD_OUT_PER_SAMPLER[kind])
    entries = [HeldOut(f"{s.tag}-{seed}", partial(s.build, seed), kind)
               for s in samplers for seed in seeds]
    return entries + [HeldOut(name, build, kind)
                      for name, build in REAL_ARCHITECTURES[kind].items()]
