"""Architecture samplers: random, reproducible ``nn.Module``s to train generators on.

Image samplers build classifiers of 32x32x3 images into 10 classes; the text sampler builds
char-level decoders. Each sampler is a dataclass of ranges whose ``sample(seed)`` returns
``(name, module)``; the architecture is a pure function of the sampler's config and the
seed, and the name (``"<tag>-<seed>"``) says how to rebuild it. Initial values come from
torch's global RNG, as with any freshly built module.

Seeds ``0 .. HELD_OUT_SEED_START - 1`` are for training. Seeds from ``HELD_OUT_SEED_START``
on are reserved for :func:`held_out`, the fixed evaluation list, and ``sample`` refuses
them. As two seeds can give the same architecture (the families' design spaces are a few
thousand models), ``sample`` also redraws any architecture whose structure (its module
``repr``) is one of its sampler's held-out ones: a generator is never trained on a model
it is evaluated on.

Sampled models stay small enough to train on a CPU: CNNs under 1M parameters, transformers
under 2M (except :class:`GPT2Like`, up to 16M, for GPU training), and image models under
150M multiply-accumulates per image (ResNet-18 on CIFAR takes 560M). A draw over its
sampler's ``max_params`` or ``max_macs`` is redrawn from the same stream.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

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
        """The ``repr``s of this sampler's held-out architectures, built once (on meta)."""
        if not hasattr(self, "_held_out"):
            seeds = range(HELD_OUT_SEED_START,
                          HELD_OUT_SEED_START + HELD_OUT_PER_SAMPLER[self.kind])
            with torch.device("meta"):
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


# ----- building blocks ---------------------------------------------------------------------
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
}


def _norm(kind: str, channels: int) -> nn.Module:
    """``bn``: BatchNorm; ``ln``: GroupNorm(1, C), a LayerNorm over (C, H, W); ``none``."""
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "ln":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


def _conv(cin: int, cout: int, k: int, norm: str, stride: int = 1, dilation: int = 1,
          groups: int = 1) -> nn.Sequential:
    """Conv (bias only without a norm, which would cancel it) followed by a norm."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, padding=dilation * (k - 1) // 2, dilation=dilation,
                  groups=groups, bias=norm == "none"),
        _norm(norm, cout))


def _head(channels: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def _sum(xs: list[torch.Tensor]) -> torch.Tensor:
    """Sum without Python's ``sum`` (its ``0 + x`` would trace as an extra add)."""
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


# ----- (a) random DeepNets-1M-style CNNs -----------------------------------------------------
CELL_OPS = ("conv3", "conv5", "sep3", "sep5", "dil3", "max3", "avg3", "skip")


def _cell_op(op: str, c: int, norm: str, act: str) -> nn.Module:
    """One candidate op of a cell, keeping ``c`` channels and the spatial size."""
    if op in ("conv3", "conv5"):
        return nn.Sequential(ACTIVATIONS[act](), _conv(c, c, int(op[-1]), norm))
    if op in ("sep3", "sep5"):  # depthwise, then pointwise
        k = int(op[-1])
        return nn.Sequential(ACTIVATIONS[act](), nn.Conv2d(c, c, k, padding=k // 2, groups=c,
                                                           bias=False), _conv(c, c, 1, norm))
    if op == "dil3":
        return nn.Sequential(ACTIVATIONS[act](), _conv(c, c, 3, norm, dilation=2))
    if op == "max3":
        return nn.MaxPool2d(3, 1, 1)
    if op == "avg3":
        return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    return nn.Identity()


class Cell(nn.Module):
    """A DAG cell: node ``i`` adds two ops applied to earlier states (state 0 is the input).

    The cell's output combines the nodes no other node reads ("leaves"): their sum, or
    their concatenation brought back to ``c`` channels by a 1x1 conv.
    """

    def __init__(self, genome: list[tuple[int, str, int, str]], combine: str, c: int,
                 norm: str, act: str) -> None:
        super().__init__()
        self.inputs = [(a, b) for a, _, b, _ in genome]
        self.ops = nn.ModuleList(
            nn.ModuleList([_cell_op(op_a, c, norm, act), _cell_op(op_b, c, norm, act)])
            for _, op_a, _, op_b in genome)
        read = {i for pair in self.inputs for i in pair}
        self.leaves = [i for i in range(1, len(genome) + 1) if i not in read]
        concat = combine == "concat" and len(self.leaves) > 1
        self.reduce = _conv(c * len(self.leaves), c, 1, norm) if concat else None

    def extra_repr(self) -> str:  # the wiring, so that repr tells cells apart
        return f"inputs={self.inputs}, leaves={self.leaves}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x]
        for (a, b), (op_a, op_b) in zip(self.inputs, self.ops, strict=True):
            states.append(op_a(states[a]) + op_b(states[b]))
        leaves = [states[i] for i in self.leaves]
        return self.reduce(torch.cat(leaves, 1)) if self.reduce is not None else _sum(leaves)


@dataclass
class RandomCNN(Sampler):
    """CNNs in the spirit of DeepNets-1M: one random cell genome repeated over stages.

    A conv stem, 1-3 stages of 1-3 cells (channels doubling at each downsampling, by a
    strided conv or by pooling and a 1x1 conv), then global pooling and a linear head.
    Cells draw from conv 3x3/5x5, separable 3x3/5x5, dilated 3x3, max/avg pooling and
    identity; networks draw BN, LayerNorm-style GroupNorm(1, C) or no norm.
    """

    tag: ClassVar[str] = "randcnn"
    widths: tuple[int, ...] = (16, 24, 32, 48, 64)
    stages: tuple[int, int] = (1, 3)
    cells: tuple[int, int] = (1, 3)
    nodes: tuple[int, int] = (2, 4)
    max_params: int = 1_000_000
    max_macs: int | None = MAX_MACS
    num_classes: int = NUM_CLASSES

    def draw(self, rng: random.Random) -> nn.Module:
        c = rng.choice(self.widths)
        norm = rng.choice(("bn", "ln", "none"))
        act = rng.choice(("relu", "gelu", "silu"))
        combine = rng.choice(("sum", "concat"))
        downsample = rng.choice(("conv", "max", "avg"))
        genome = [(rng.randrange(i + 1), rng.choice(CELL_OPS), rng.randrange(i + 1),
                   rng.choice(CELL_OPS)) for i in range(rng.randint(*self.nodes))]
        layers: list[nn.Module] = [_conv(3, c, 3, norm, stride=rng.choice((1, 2)))]
        for stage in range(rng.randint(*self.stages)):
            if stage > 0:
                if downsample == "conv":
                    layers += [ACTIVATIONS[act](), _conv(c, 2 * c, 3, norm, stride=2)]
                else:
                    pool = nn.MaxPool2d(2) if downsample == "max" else nn.AvgPool2d(2)
                    layers += [pool, _conv(c, 2 * c, 1, norm)]
                c *= 2
            layers += [Cell(genome, combine, c, norm, act) for _ in range(rng.randint(*self.cells))]
        return nn.Sequential(*layers, ACTIVATIONS[act](), _head(c, self.num_classes))


# ----- (b) families with random depth and width ----------------------------------------------
class ResBlock(nn.Module):
    """A ResNet basic block (two 3x3 convs) or bottleneck (1x1, 3x3, 1x1 at a quarter width)."""

    def __init__(self, cin: int, cout: int, stride: int, bottleneck: bool, norm: str,
                 act: str) -> None:
        super().__init__()
        if bottleneck:
            mid = max(cout // 4, 8)
            self.body = nn.Sequential(
                _conv(cin, mid, 1, norm), ACTIVATIONS[act](), _conv(mid, mid, 3, norm, stride),
                ACTIVATIONS[act](), _conv(mid, cout, 1, norm))
        else:
            self.body = nn.Sequential(
                _conv(cin, cout, 3, norm, stride), ACTIVATIONS[act](), _conv(cout, cout, 3, norm))
        same = stride == 1 and cin == cout
        self.shortcut = nn.Identity() if same else _conv(cin, cout, 1, norm, stride)
        self.act = ACTIVATIONS[act]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


@dataclass
class ResNetLike(Sampler):
    """ResNets: a 3x3 stem, 2-4 stages of 1-3 basic or bottleneck blocks, width doubling."""

    tag: ClassVar[str] = "resnet"
    widths: tuple[int, ...] = (16, 24, 32, 48, 64)
    stages: tuple[int, int] = (2, 4)
    blocks: tuple[int, int] = (1, 3)
    max_params: int = 1_000_000
    max_macs: int | None = MAX_MACS
    num_classes: int = NUM_CLASSES

    def draw(self, rng: random.Random) -> nn.Module:
        c = rng.choice(self.widths)
        norm, act = rng.choice(("bn", "bn", "ln")), rng.choice(("relu", "silu"))
        bottleneck = rng.random() < 0.3
        cout = 4 * c if bottleneck else c
        layers: list[nn.Module] = [_conv(3, c, 3, norm), ACTIVATIONS[act]()]
        for stage in range(rng.randint(*self.stages)):
            for block in range(rng.randint(*self.blocks)):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(ResBlock(c, cout << stage, stride, bottleneck, norm, act))
                c = cout << stage
        return nn.Sequential(*layers, _head(c, self.num_classes))


@dataclass
class VGGLike(Sampler):
    """VGGs: 2-5 stages of 1-3 conv-norm-act layers, each stage ending in a 2x2 pooling."""

    tag: ClassVar[str] = "vgg"
    widths: tuple[int, ...] = (16, 24, 32, 48, 64)
    stages: tuple[int, int] = (2, 5)
    convs: tuple[int, int] = (1, 3)
    max_params: int = 1_000_000
    max_macs: int | None = MAX_MACS
    num_classes: int = NUM_CLASSES

    def draw(self, rng: random.Random) -> nn.Module:
        width = rng.choice(self.widths)
        norm, act = rng.choice(("bn", "none")), rng.choice(("relu", "gelu"))
        pool = rng.choice((nn.MaxPool2d, nn.AvgPool2d))
        layers: list[nn.Module] = []
        c = 3
        for stage in range(rng.randint(*self.stages)):
            for _ in range(rng.randint(*self.convs)):
                layers += [_conv(c, width << stage, 3, norm), ACTIVATIONS[act]()]
                c = width << stage
            layers.append(pool(2))
        if rng.random() < 0.5:  # a hidden layer in the classifier, as in VGG
            hidden = rng.choice((64, 128, 256))
            head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, hidden),
                                 ACTIVATIONS[act](), nn.Linear(hidden, self.num_classes))
        else:
            head = _head(c, self.num_classes)
        return nn.Sequential(*layers, head)


class SqueezeExcite(nn.Module):
    """Channel attention: global pool, bottleneck MLP (1x1 convs), gate multiplying ``x``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        hidden = max(c // 4, 8)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, hidden, 1), nn.ReLU(),
                                  nn.Conv2d(hidden, c, 1), nn.Hardsigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 block: 1x1 expand, depthwise kxk, optional SE, linear 1x1 project."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, k: int, se: bool,
                 act: str) -> None:
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [_conv(cin, mid, 1, "bn"), ACTIVATIONS[act]()]
        layers += [_conv(mid, mid, k, "bn", stride, groups=mid), ACTIVATIONS[act]()]
        if se:
            layers.append(SqueezeExcite(mid))
        layers.append(_conv(mid, cout, 1, "bn"))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


def _round8(x: float) -> int:
    return max(8, int(x + 4) // 8 * 8)


@dataclass
class MobileNetLike(Sampler):
    """MobileNets: 3-5 stages of 1-3 inverted residual blocks, 2-3 of them downsampling."""

    tag: ClassVar[str] = "mobilenet"
    widths: tuple[int, ...] = (8, 16, 24)
    stages: tuple[int, int] = (3, 5)
    blocks: tuple[int, int] = (1, 3)
    max_params: int = 1_000_000
    max_macs: int | None = MAX_MACS
    num_classes: int = NUM_CLASSES

    def draw(self, rng: random.Random) -> nn.Module:
        c = rng.choice(self.widths)
        act, se = rng.choice(("relu6", "hardswish", "silu")), rng.random() < 0.5
        growth = rng.choice((1.5, 2.0))
        n_stages = rng.randint(*self.stages)
        downsampling = set(rng.sample(range(n_stages), rng.randint(2, 3)))
        layers: list[nn.Module] = [_conv(3, c, 3, "bn", stride=rng.choice((1, 2))),
                                   ACTIVATIONS[act]()]
        for stage in range(n_stages):
            cout = _round8(c * growth) if stage > 0 else c
            expand, k = rng.choice((1, 2, 3, 4, 6)), rng.choice((3, 5))
            for block in range(rng.randint(*self.blocks)):
                stride = 2 if stage in downsampling and block == 0 else 1
                layers.append(InvertedResidual(c, cout, stride, expand, k, se, act))
                c = cout
        last = rng.choice((128, 256, 512))
        return nn.Sequential(*layers, _conv(c, last, 1, "bn"), ACTIVATIONS[act](),
                             _head(last, self.num_classes))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an ``(N, C, H, W)`` tensor, as ConvNeXt uses."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, LayerNorm, MLP with GELU, layer scale, residual (channels-last MLP)."""

    def __init__(self, c: int, mlp_ratio: int, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(c, mlp_ratio * c), nn.GELU(),
                                 nn.Linear(mlp_ratio * c, c))
        self.gamma = nn.Parameter(torch.full((c,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        return x + (self.gamma * self.mlp(y)).permute(0, 3, 1, 2)


@dataclass
class ConvNeXtLike(Sampler):
    """ConvNeXts: patchify stem (2x2 or 4x4), 2-4 stages of 1-3 blocks, width doubling."""

    tag: ClassVar[str] = "convnext"
    widths: tuple[int, ...] = (16, 24, 32, 48, 64)
    stages: tuple[int, int] = (2, 4)
    blocks: tuple[int, int] = (1, 3)
    max_params: int = 1_000_000
    max_macs: int | None = MAX_MACS
    num_classes: int = NUM_CLASSES

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
class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused qkv projection and PyTorch's SDPA kernel."""

    def __init__(self, dim: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, causal: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, causal)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(),
                                 nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


def _transformer_shape(rng: random.Random, depth: tuple[int, int], widths: tuple[int, ...],
                       ) -> tuple[int, int, int, int]:
    """(depth, width, heads, mlp_ratio) with heads dividing width into heads of >= 16."""
    width = rng.choice(widths)
    heads = rng.choice([h for h in (2, 4, 8) if width % h == 0 and width // h >= 16])
    return rng.randint(*depth), width, heads, rng.choice((2, 3, 4))


class ViT(nn.Module):
    """Vision transformer: patch embedding, class token, learned positions, pre-LN blocks."""

    def __init__(self, image_size: int, patch: int, depth: int, dim: int, heads: int,
                 mlp_ratio: int, num_classes: int) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (image_size // patch) ** 2 + 1, dim) * .02)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio, causal=False)
                                      for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


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


class GPT(nn.Module):
    """Char-level decoder (nanoGPT layout): token + position embeddings, causal pre-LN blocks.

    ``forward(idx)`` maps ``(B, T)`` ids to ``(B, T, vocab)`` logits. With ``tie`` the head
    shares the token embedding's weight. Weights start as GPT-2 does: N(0, 0.02), with the
    residual projections scaled by 1/sqrt(2 * depth).
    """

    def __init__(self, vocab_size: int, block_size: int, depth: int, dim: int, heads: int,
                 mlp_ratio: int, tie: bool) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, dim)
        self.wpe = nn.Embedding(block_size, dim)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio, causal=True)
                                      for _ in range(depth)))
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        if tie:
            self.lm_head.weight = self.wte.weight
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, 0.0, 0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(proj.weight, 0.0, 0.02 / math.sqrt(2 * depth))

    def extra_repr(self) -> str:
        return f"tied={self.lm_head.weight is self.wte.weight}"

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.blocks(self.wte(idx) + self.wpe(pos))
        return self.lm_head(self.ln_f(x))


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


# ----- mixtures and the held-out list --------------------------------------------------------
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


def mixed(kind: str = "image") -> Mixed:
    """The default training mixture: for images, random CNNs 40% and each family 12%; for
    text, :class:`GPTLike` and :class:`GPT2Like` half each."""
    if kind == "text":
        return Mixed(((GPTLike(), 0.5), (GPT2Like(), 0.5)))
    if kind != "image":
        raise ValueError(f"kind must be 'image' or 'text', got {kind!r}")
    first, *families = image_samplers()
    return Mixed(((first, 0.4), *((s, 0.12) for s in families)))


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
