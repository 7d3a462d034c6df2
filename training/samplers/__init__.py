"""Architectures to train generators on, and the held-out ones they are evaluated on.

``blocks`` holds the layers and modules the samplers assemble; ``families`` the samplers
themselves (random DeepNets-style CNNs, ResNet-, VGG-, MobileNet-, ConvNeXt-, ViT- and
GPT-like families, transformers' GPT-2), the zoo-only BatchNorm ResNets, and the training
mixtures; ``held_out`` the fixed evaluation list. Their public names are all here, as
``training.samplers.NAME``.
"""

from .blocks import SelfAttention
from .families import (
    HELD_OUT_SEED_START,
    IMAGE_SIZE,
    NUM_CLASSES,
    VOCAB_SIZE,
    BNResNet,
    CNNSampler,
    ConvNeXtLike,
    GPT2Like,
    GPTLike,
    Mixed,
    MobileNetLike,
    RandomCNN,
    ResNetLike,
    Sampler,
    VGGLike,
    ViTLike,
    image_samplers,
    mixed,
    zoo_samplers,
)
from .held_out import HeldOut, held_out

__all__ = [
    "HELD_OUT_SEED_START",
    "IMAGE_SIZE",
    "NUM_CLASSES",
    "VOCAB_SIZE",
    "BNResNet",
    "CNNSampler",
    "ConvNeXtLike",
    "GPT2Like",
    "GPTLike",
    "HeldOut",
    "Mixed",
    "MobileNetLike",
    "RandomCNN",
    "ResNetLike",
    "Sampler",
    "SelfAttention",
    "VGGLike",
    "ViTLike",
    "held_out",
    "image_samplers",
    "mixed",
    "zoo_samplers",
]
