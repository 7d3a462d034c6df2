"""Training the generators: data, architecture samplers, trainers and evaluation.

``data`` loads CIFAR-10 and tiny-shakespeare (from ``$HYPERINIT_DATA``, a checkout's
``../shared/data``, or a path) into tensors and serves reproducible, resumable batches;
``samplers`` draws the architectures a generator is trained on and lists the held-out ones
it is evaluated on; ``recipe`` is how ``hyperinit eval`` and the model zoo train and measure
a model.
"""

from .data import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CharText,
    ImageBatches,
    TextBatches,
    eval_batches,
    load_cifar10,
    load_text,
    normalize,
    random_crop_flip,
    text_eval_batches,
)
from .samplers import (
    HELD_OUT_SEED_START,
    BNResNet,
    ConvNeXtLike,
    GPTLike,
    HeldOut,
    Mixed,
    MobileNetLike,
    RandomCNN,
    ResNetLike,
    Sampler,
    VGGLike,
    ViTLike,
    held_out,
    image_samplers,
    mixed,
    zoo_samplers,
)

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "HELD_OUT_SEED_START",
    "CharText",
    "BNResNet",
    "ConvNeXtLike",
    "GPTLike",
    "HeldOut",
    "ImageBatches",
    "Mixed",
    "MobileNetLike",
    "RandomCNN",
    "ResNetLike",
    "Sampler",
    "TextBatches",
    "VGGLike",
    "ViTLike",
    "eval_batches",
    "held_out",
    "image_samplers",
    "load_cifar10",
    "load_text",
    "mixed",
    "normalize",
    "random_crop_flip",
    "text_eval_batches",
    "zoo_samplers",
]
