"""Building blocks of the sampled architectures: the layers and modules that the samplers
(:mod:`training.samplers.families`) assemble into CNNs and transformers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

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


def conv(cin: int, cout: int, k: int, norm: str, stride: int = 1, dilation: int = 1,
         groups: int = 1) -> nn.Sequential:
    """Conv (bias only without a norm, which would cancel it) followed by a norm."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, padding=dilation * (k - 1) // 2, dilation=dilation,
                  groups=groups, bias=norm == "none"),
        _norm(norm, cout))


def classifier(channels: int, num_classes: int) -> nn.Sequential:
    """Global average pooling, then a linear layer to the classes."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def _sum(xs: list[torch.Tensor]) -> torch.Tensor:
    """Sum without Python's ``sum`` (its ``0 + x`` would trace as an extra add)."""
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


CELL_OPS = ("conv3", "conv5", "sep3", "sep5", "dil3", "max3", "avg3", "skip")


def _cell_op(op: str, c: int, norm: str, act: str) -> nn.Module:
    """One candidate op of a cell, keeping ``c`` channels and the spatial size."""
    if op in ("conv3", "conv5"):
        return nn.Sequential(ACTIVATIONS[act](), conv(c, c, int(op[-1]), norm))
    if op in ("sep3", "sep5"):  # depthwise, then pointwise
        k = int(op[-1])
        return nn.Sequential(ACTIVATIONS[act](), nn.Conv2d(c, c, k, padding=k // 2, groups=c,
                                                           bias=False), conv(c, c, 1, norm))
    if op == "dil3":
        return nn.Sequential(ACTIVATIONS[act](), conv(c, c, 3, norm, dilation=2))
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
        self.reduce = conv(c * len(self.leaves), c, 1, norm) if concat else None

    def extra_repr(self) -> str:  # the wiring, so that repr tells cells apart
        return f"inputs={self.inputs}, leaves={self.leaves}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x]
        for (a, b), (op_a, op_b) in zip(self.inputs, self.ops, strict=True):
            states.append(op_a(states[a]) + op_b(states[b]))
        leaves = [states[i] for i in self.leaves]
        return self.reduce(torch.cat(leaves, 1)) if self.reduce is not None else _sum(leaves)


class ResBlock(nn.Module):
    """A ResNet basic block (two 3x3 convs) or bottleneck (1x1, 3x3, 1x1 at a quarter width)."""

    def __init__(self, cin: int, cout: int, stride: int, bottleneck: bool, norm: str,
                 act: str) -> None:
        super().__init__()
        if bottleneck:
            mid = max(cout // 4, 8)
            self.body = nn.Sequential(
                conv(cin, mid, 1, norm), ACTIVATIONS[act](), conv(mid, mid, 3, norm, stride),
                ACTIVATIONS[act](), conv(mid, cout, 1, norm))
        else:
            self.body = nn.Sequential(
                conv(cin, cout, 3, norm, stride), ACTIVATIONS[act](), conv(cout, cout, 3, norm))
        same = stride == 1 and cin == cout
        self.shortcut = nn.Identity() if same else conv(cin, cout, 1, norm, stride)
        self.act = ACTIVATIONS[act]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


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
            layers += [conv(cin, mid, 1, "bn"), ACTIVATIONS[act]()]
        layers += [conv(mid, mid, k, "bn", stride, groups=mid), ACTIVATIONS[act]()]
        if se:
            layers.append(SqueezeExcite(mid))
        layers.append(conv(mid, cout, 1, "bn"))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


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
