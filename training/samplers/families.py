"""Architecture samplers: random, reproducible ``nn.Module``s to train generators on.

Image samplers build classifiers of 32x32x3 images into 10 classes; the text samplers build
char-level decoders. Each sampler is a dataclass of ranges whose ``sample(seed)`` returns
``(name, module)``; the architecture is a pure function of the sampler's config and the
seed, and the name (``"<tag>-<seed>"``) says how to rebuild it. Initial values come from
torch's global RNG, as with any freshly built module. The CNN samplers share their ranges
(widths, stages, limits, classes) through :class:`CNNSampler`.

Seeds ``0 .. HELD_OUT_SEED_START - 1`` are for training. Seeds from ``HELD_OUT_SEED_START``
on are reserved for ``held_out``, the fixed evaluation list
(:mod:`training.samplers.held_out`), and ``sample`` refuses them. As two seeds can give the
same architecture (the families' design spaces are a few thousand models), ``sample`` also
redraws any architecture whose structure (its module ``repr``) is one of its sampler's
held-out ones: a generator is never trained on a model it is evaluated on.

Sampled models stay small enough to train on a CPU: CNNs under 1M parameters, transformers
under 2M (except :class:`GPT2Like`, up to 16M, for GPU training), and image models under
150M multiply-accumulates per image (ResNet-18 on CIFAR takes 560M). A draw over its
sampler's ``max_params`` or ``max_macs`` is redrawn from the same stream.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .blocks import (
    ACTIVATIONS,
    CELL_OPS,
    GPT,
    Cell,
    ConvNeXtBlock,
    InvertedResidual,
    LayerNorm2d,
    ResBlock,
    SelfAttention,
    ViT,
    classifier,
    conv,
)

HELD_OUT_SEED_START = 1_000_000
HELD_OUT_PER_SAMPLER = {"image": 4, "text": 8}
NUM_CLASSES = 10
IMAGE_SIZE = 32
MAX_MACS = 150_000_000
VOCAB_SIZE = 65  # distinct characters of tiny-shakespeare
MAX_DRAWS = 200


def _seed(seed_or_rng: int | random.Random) -> int:
    """A training seed: the int given (checked) or one drawn from ``rng``."""
    if isinstance(seed_or_rng, random.Random):
        return seed_or_rng.randrange(HELD_OUT_SEED_START)
    if not 0 <= seed_or_rng < HELD_OUT_SEED_START:
        raise ValueError(f"training seeds are 0..{HELD_OUT_SEED_START - 1}; seed {seed_or_rng} "
                         "is reserved for held_out()")
    return seed_or_rng


class Sampler:
    """Base of the samplers: subclasses set ``tag`` and ``kind`` and implement ``draw``."""

    tag: ClassVar[str]
    kind: ClassVar[str] = "image"
    max_params: int
    max_macs: int | None  # per example; None: no limit

    def draw(self, rng: random.Random) -> nn.Module:
        """Build one random architecture, taking every choice from ``rng``."""
        raise NotImplementedError

    def example_input(self, batch_size: int = 2) -> torch.Tensor:
        """A random batch of what the sampled models take: 32x32 RGB images."""
        return torch.randn(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE)

    def sample(self, seed_or_rng: int | random.Random) -> tuple[str, nn.Module]:
        """``(name, module)`` for a training seed, or for a seed drawn from an ``rng``."""
        seed = _seed(seed_or_rng)
        return f"{self.tag}-{seed}", self.build(seed, exclude=self._held_out_structures())

    def build(self, seed: int, exclude: frozenset[str] = frozenset()) -> nn.Module:
        """The architecture of any seed, reserved ones included (see :func:`held_out`).

        Draws whose ``repr`` is in ``exclude`` are redrawn, like those over the limits.
        """
        rng = random.Random(f"{self.tag}-{seed}")
        for _ in range(MAX_DRAWS):
            state = rng.getstate()
            with torch.device("meta"):  # a probe that allocates nothing
                probe = self.draw(rng)
            if sum(p.numel() for p in probe.parameters()) > self.max_params:  # tied: once
                continue
            if self.max_macs is not None and self.macs(probe) > self.max_macs:
                continue
            if repr(probe) in exclude:
                continue
            rng.setstate(state)  # replay the same choices for the real module
            return self.draw(rng)
        raise RuntimeError(f"{self} drew nothing within its limits in {MAX_DRAWS} tries: "
                           "widen them")

    def _held_out_structures(self) -> frozenset[str]:
        """The ``repr``s of this sampler's held-out architectures, built once (on meta),
        leaving torch's global RNG as it was: a module built after ``manual_seed`` has the
        same weights whether or not this sampler built these first."""
        if not hasattr(self, "_held_out"):
            seeds = range(HELD_OUT_SEED_START,
                          HELD_OUT_SEED_START + HELD_OUT_PER_SAMPLER[self.kind])
            with torch.random.fork_rng(devices=[]), torch.device("meta"):
                self._held_out = frozenset(repr(self.build(seed)) for seed in seeds)
        return self._held_out

    def macs(self, module: nn.Module) -> int:
        """Multiply-accumulates of a forward pass on one example (convs, linears, attention).

        For a module on the CPU or ``meta``: hooks count during a CPU forward pass in eval
        mode, with zeros standing in for meta tensors (meta kernels are slower than real ones
        at this size). The module's mode and buffers are left as they were.
        """
        total = 0

        def count(layer: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            nonlocal total
            if isinstance(layer, nn.Conv2d):
                total += out.numel() * layer.in_channels // layer.groups * math.prod(
                    layer.kernel_size)
            elif isinstance(layer, nn.Linear):
                total += out.numel() * layer.in_features
            else:  # attention scores and their weighted sum: 2 x (T x T x d)
                total += 2 * out.shape[1] * out.numel()

        stand_ins = {name: torch.zeros(t.shape, dtype=t.dtype, device="cpu")
                     for name, t in (*module.named_parameters(), *module.named_buffers())
                     if t.is_meta}
        layers = [m for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear
                                                            | SelfAttention)]
        handles = [m.register_forward_hook(count) for m in layers]
        training = module.training
        try:
            with torch.no_grad(), torch.device("cpu"):
                module.eval()
                torch.func.functional_call(module, stand_ins, (self.example_input(1),))
        finally:
            module.train(training)
            for handle in handles:
                handle.remove()
        return total


@dataclass
class CNNSampler(Sampler):
    """The ranges every CNN sampler has: channel widths, number of stages, the size limits
    and the classes. Each sampler overrides the defaults it draws differently."""

    widths: tuple[int, ...] = (16, 24, 32, 48, 64)
    stages: tuple[int, int] = (2, 4)
    max_params: int = 1_000_000
    max_macs: int | None = MAX_MACS
    num_classes: int = NUM_CLASSES


# ----- (a) random DeepNets-1M-style CNNs -----------------------------------------------------
@dataclass
class RandomCNN(CNNSampler):
    """CNNs in the spirit of DeepNets-1M: one random cell genome repeated over stages.

    A conv stem, 1-3 stages of 1-3 cells (channels doubling at each downsampling, by a
    strided conv or by pooling and a 1x1 conv), then global pooling and a linear head.
    Cells draw from conv 3x3/5x5, separable 3x3/5x5, dilated 3x3, max/avg pooling and
    identity; networks draw BN, LayerNorm-style GroupNorm(1, C) or no norm.
    """

    tag: ClassVar[str] = "randcnn"
    stages: tuple[int, int] = (1, 3)
    cells: tuple[int, int] = (1, 3)
    nodes: tuple[int, int] = (2, 4)

    def draw(self, rng: random.Random) -> nn.Module:
        c = rng.choice(self.widths)
        norm = rng.choice(("bn", "ln", "none"))
        act = rng.choice(("relu", "gelu", "silu"))
        combine = rng.choice(("sum", "concat"))
        downsample = rng.choice(("conv", "max", "avg"))
        genome = [(rng.randrange(i + 1), rng.choice(CELL_OPS), rng.randrange(i + 1),
                   rng.choice(CELL_OPS)) for i in range(rng.randint(*self.nodes))]
        layers: list[nn.Module] = [conv(3, c, 3, norm, stride=rng.choice((1, 2)))]
        for stage in range(rng.randint(*self.stages)):
            if stage > 0:
                if downsample == "conv":
                    layers += [ACTIVATIONS[act](), conv(c, 2 * c, 3, norm, stride=2)]
                else:
                    pool = nn.MaxPool2d(2) if downsample == "max" else nn.AvgPool2d(2)
                    layers += [pool, conv(c, 2 * c, 1, norm)]
                c *= 2
            layers += [Cell(genome, combine, c, norm, act) for _ in range(rng.randint(*self.cells))]
        return nn.Sequential(*layers, ACTIVATIONS[act](), classifier(c, self.num_classes))


# ----- (b) families with random depth and width ----------------------------------------------
@dataclass
class ResNetLike(CNNSampler):
    """ResNets: a 3x3 stem, 2-4 stages of 1-3 basic or bottleneck blocks, width doubling;
    BatchNorm in two draws of three (``norms``), LayerNorm-style GroupNorm otherwise."""

    tag: ClassVar[str] = "resnet"
    blocks: tuple[int, int] = (1, 3)
    norms: tuple[str, ...] = ("bn", "bn", "ln")  # drawn uniformly: repeats weigh a norm
    bottleneck: float = 0.3  # probability of bottleneck blocks

    def draw(self, rng: random.Random) -> nn.Module:
        c = rng.choice(self.widths)
        norm, act = rng.choice(self.norms), rng.choice(("relu", "silu"))
        bottleneck = rng.random() < self.bottleneck
        cout = 4 * c if bottleneck else c
        layers: list[nn.Module] = [conv(3, c, 3, norm), ACTIVATIONS[act]()]
        for stage in range(rng.randint(*self.stages)):
            for block in range(rng.randint(*self.blocks)):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(ResBlock(c, cout << stage, stride, bottleneck, norm, act))
                c = cout << stage
        return nn.Sequential(*layers, classifier(c, self.num_classes))


@dataclass
class BNResNet(ResNetLike):
    """Small BatchNorm ResNets for model zoos: a 3x3 stem, 2-3 stages of 1-2 basic blocks,
    width 16-32 doubling per stage, BatchNorm everywhere (the normalization most users'
    models have, which a weight generator must meet in its zoo).

    A zoo family, not a training-mixture one (:func:`zoo_samplers`): adding it to
    :func:`mixed` would change which architecture every mixture seed names.
    """

    tag: ClassVar[str] = "bnresnet"
    widths: tuple[int, ...] = (16, 24, 32)
    stages: tuple[int, int] = (2, 3)
    blocks: tuple[int, int] = (1, 2)
    norms: tuple[str, ...] = ("bn",)
    bottleneck: float = 0.0


@dataclass
class VGGLike(CNNSampler):
    """VGGs: 2-5 stages of 1-3 conv-norm-act layers, each stage ending in a 2x2 pooling."""

    tag: ClassVar[str] = "vgg"
    stages: tuple[int, int] = (2, 5)
    convs: tuple[int, int] = (1, 3)

    def draw(self, rng: random.Random) -> nn.Module:
        width = rng.choice(self.widths)
        norm, act = rng.choice(("bn", "none")), rng.choice(("relu", "gelu"))
        pool = rng.choice((nn.MaxPool2d, nn.AvgPool2d))
        layers: list[nn.Module] = []
        c = 3
        for stage in range(rng.randint(*self.stages)):
            for _ in range(rng.randint(*self.convs)):
                layers += [conv(c, width << stage, 3, norm), ACTIVATIONS[act]()]
                c = width << stage
            layers.append(pool(2))
        if rng.random() < 0.5:  # a hidden layer in the classifier, as in VGG
            hidden = rng.choice((64, 128, 256))
            head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, hidden),
                                 ACTIVATIONS[act](), nn.Linear(hidden, self.num_classes))
        else:
            head = classifier(c, self.num_classes)
        return nn.Sequential(*layers, head)


def _round8(x: float) -> int:
    return max(8, int(x + 4) // 8 * 8)


@dataclass
class MobileNetLike(CNNSampler):
    """MobileNets: 3-5 stages of 1-3 inverted residual blocks, 2-3 of them downsampling."""

    tag: ClassVar[str] = "mobilenet"
    widths: tuple[int, ...] = (8, 16, 24)
    stages: tuple[int, int] = (3, 5)
    blocks: tuple[int, int] = (1, 3)

    def draw(self, rng: random.Random) -> nn.Module:
        c = rng.choice(self.widths)
        act, se = rng.choice(("relu6", "hardswish", "silu")), rng.random() < 0.5
        growth = rng.choice((1.5, 2.0))
        n_stages = rng.randint(*self.stages)
        downsampling = set(rng.sample(range(n_stages), rng.randint(2, 3)))
        layers: list[nn.Module] = [conv(3, c, 3, "bn", stride=rng.choice((1, 2))),
                                   ACTIVATIONS[act]()]
        for stage in range(n_stages):
            cout = _round8(c * growth) if stage > 0 else c
            expand, k = rng.choice((1, 2, 3, 4, 6)), rng.choice((3, 5))
            for block in range(rng.randint(*self.blocks)):
                stride = 2 if stage in downsampling and block == 0 else 1
                layers.append(InvertedResidual(c, cout, stride, expand, k, se, act))
                c = cout
        last = rng.choice((128, 256, 512))
        return nn.Sequential(*layers, conv(c, last, 1, "bn"), ACTIVATIONS[act](),
                             classifier(last, self.num_classes))


@dataclass
class ConvNeXtLike(CNNSampler):
    """ConvNeXts: patchify stem (2x2 or 4x4), 2-4 stages of 1-3 blocks, width doubling."""

    tag: ClassVar[str] = "convnext"
    blocks: tuple[int, int] = (1, 3)

    def draw(self, rng: random.Random) -> nn.Module:
        c, patch = rng.choice(self.widths), rng.choice((2, 4))
        mlp_ratio = rng.choice((2, 3, 4))
        layers: list[nn.Module] = [nn.Conv2d(3, c, patch, patch), LayerNorm2d(c, eps=1e-6)]
        for stage in range(rng.randint(*self.stages)):
            if stage > 0:
                layers += [LayerNorm2d(c, eps=1e-6), nn.Conv2d(c, 2 * c, 2, 2)]
                c *= 2
            layers += [ConvNeXtBlock(c, mlp_ratio) for _ in range(rng.randint(*self.blocks))]
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(c, eps=1e-6),
                             nn.Linear(c, self.num_classes))
        return nn.Sequential(*layers, head)


# ----- (c) transformers ----------------------------------------------------------------------
def _transformer_shape(rng: random.Random, depth: tuple[int, int], widths: tuple[int, ...],
                       ) -> tuple[int, int, int, int]:
    """(depth, width, heads, mlp_ratio) with heads dividing width into heads of >= 16."""
    width = rng.choice(widths)
    heads = rng.choice([h for h in (2, 4, 8) if width % h == 0 and width // h >= 16])
    return rng.randint(*depth), width, heads, rng.choice((2, 3, 4))


@dataclass
class ViTLike(Sampler):
    """ViTs for 32x32 images: patch 2 or 4, depth 2-6, width 64-256, 2-8 heads."""

    tag: ClassVar[str] = "vit"
    depth: tuple[int, int] = (2, 6)
    widths: tuple[int, ...] = (64, 96, 128, 160, 192, 224, 256)
    max_params: int = 2_000_000
    max_macs: int | None = MAX_MACS
    num_classes: int = NUM_CLASSES

    def draw(self, rng: random.Random) -> nn.Module:
        depth, width, heads, mlp_ratio = _transformer_shape(rng, self.depth, self.widths)
        return ViT(IMAGE_SIZE, rng.choice((2, 4)), depth, width, heads, mlp_ratio,
                   self.num_classes)


@dataclass
class GPTLike(Sampler):
    """Char-level GPTs: depth 2-6, width 64-256, 2-8 heads, MLP ratio 2-4, tied or not."""

    tag: ClassVar[str] = "gpt"
    kind: ClassVar[str] = "text"
    depth: tuple[int, int] = (2, 6)
    widths: tuple[int, ...] = (64, 96, 128, 160, 192, 224, 256)
    max_params: int = 2_000_000  # bounds the cost too: about max_params MACs per token
    max_macs: int | None = None
    vocab_size: int = VOCAB_SIZE
    block_size: int = 256

    def example_input(self, batch_size: int = 2) -> torch.Tensor:
        """A random batch of ``block_size`` character ids."""
        return torch.randint(self.vocab_size, (batch_size, self.block_size))

    def draw(self, rng: random.Random) -> nn.Module:
        depth, width, heads, mlp_ratio = _transformer_shape(rng, self.depth, self.widths)
        return GPT(self.vocab_size, self.block_size, depth, width, heads, mlp_ratio,
                   tie=rng.random() < 0.5)


@dataclass
class GPT2Like(GPTLike):
    """transformers' ``GPT2LMHeadModel`` over the char vocabulary: depth 1-12, width 128-768.

    The layout of the held-out ``gpt2-char`` (``Conv1D`` layers, GPT-2's init), sampled at
    its width or at its depth but never both: up to 16M parameters, so it is meant for GPU
    training (its ``example_input`` is :class:`GPTLike`'s).
    """

    tag: ClassVar[str] = "hfgpt2"
    depth: tuple[int, int] = (1, 12)
    widths: tuple[int, ...] = (128, 192, 256, 384, 512, 768)
    max_params: int = 16_000_000

    def draw(self, rng: random.Random) -> nn.Module:
        from transformers import GPT2Config, GPT2LMHeadModel

        depth, width, heads, mlp_ratio = _transformer_shape(rng, self.depth, self.widths)
        config = GPT2Config(vocab_size=self.vocab_size, n_positions=self.block_size,
                            n_embd=width, n_layer=depth, n_head=heads, n_inner=mlp_ratio * width,
                            tie_word_embeddings=rng.random() < 0.5, bos_token_id=None,
                            eos_token_id=None)
        return GPT2LMHeadModel(config)


# ----- mixtures ------------------------------------------------------------------------------
@dataclass
class Mixed:
    """Draws each seed's architecture from one of several samplers, picked by weight.

    The pick uses its own stream, and the chosen sampler gets the same seed, so a name like
    ``"resnet-42"`` is rebuilt by ``ResNetLike().sample(42)``.
    """

    parts: tuple[tuple[Sampler, float], ...]

    def __post_init__(self) -> None:
        kinds = {s.kind for s, _ in self.parts}
        if len(kinds) != 1 or any(w <= 0 for _, w in self.parts):
            raise ValueError("Mixed needs samplers of one kind with positive weights, got "
                             f"{[(type(s).__name__, w) for s, w in self.parts]}")

    @property
    def kind(self) -> str:
        return self.parts[0][0].kind

    def sample(self, seed_or_rng: int | random.Random) -> tuple[str, nn.Module]:
        """``(name, module)`` from the sampler that this seed picks."""
        seed = _seed(seed_or_rng)
        samplers, weights = zip(*self.parts, strict=True)
        return random.Random(f"mixed-{seed}").choices(samplers, weights)[0].sample(seed)


def image_samplers() -> list[Sampler]:
    """One of each image sampler, with its default ranges."""
    return [RandomCNN(), ResNetLike(), VGGLike(), MobileNetLike(), ConvNeXtLike(), ViTLike()]


def zoo_samplers() -> list[Sampler]:
    """The samplers model zoos build from: every image sampler, then the zoo-only
    families (:class:`BNResNet`)."""
    return [*image_samplers(), BNResNet()]


def mixed(kind: str = "image") -> Mixed:
    """The default training mixture: for images, random CNNs 40% and each family 12%; for
    text, :class:`GPTLike` and :class:`GPT2Like` half each."""
    if kind == "text":
        return Mixed(((GPTLike(), 0.5), (GPT2Like(), 0.5)))
    if kind != "image":
        raise ValueError(f"kind must be 'image' or 'text', got {kind!r}")
    first, *families = image_samplers()
    return Mixed(((first, 0.4), *((s, 0.12) for s in families)))
