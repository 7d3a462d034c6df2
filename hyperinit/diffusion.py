"""Graph-conditioned weight diffusion: sample diverse inits for any architecture graph.

Parameters are cut into fixed-size tokens (:class:`WeightTokenizer`); a small transformer
(:class:`WeightDiffusion`) denoises the token sequence of one architecture. Each token knows
its tensor's node in the graph (through the node embedding of a graph encoder the model
owns, so one model serves many architectures), the tensor's role and size, and its position
in the tensor. Noise schedules come from ``diffusers``: DDPM (linear betas 1e-4..2e-2, 1000
steps, epsilon or clean-sample prediction) for training and DDIM for sampling.

Attention is local: the token sequence is cut into windows of ``window`` tokens and each
window attends only within itself, so a model of any size costs time linear in its
parameter count, and sampling runs a batch of windows at a time with memory bounded by the
batch, not the model; training learns a few random windows of each model per step.
Checkpoints from before windows (no ``window`` in their config.json) attend over the whole
sequence, as they were trained to, and so still take at most :data:`MAX_TOKENS` tokens.

A model may be conditioned on a task (``DiffusionConfig.task_dim``): every token's input
holds a learned "no task" vector plus a linear projection of the task's descriptor, a
fixed-length vector that any task has, seen in training or not (``training.tasks.Task.
descriptor``: which CIFAR-10 classes it holds). Training drops the task with probability
``cond_drop``, so the same model also samples without one, and classifier-free guidance
mixes the two.

Tokens hold the raw parameter values, so decoding is exact by construction. The model
works on per-tensor normalized tokens ``(x - mean) / std``; the stats of an unseen
architecture are unknown at sampling time, so a small head predicts each tensor's mean and
log-std from its node embedding and is trained alongside the denoiser.
"""

from __future__ import annotations

import inspect
import math
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

from graphs import ROLES, ArchGraph
from graphs.graph import ROLE_INDEX

from .catalog import load_generator
from .checkpoint import CONFIG_FILE, WEIGHTS_FILE
from .encoder import BUCKETS, GraphEncoder, log_bucket
from .errors import CheckpointError, GeneratorLimitError
from .generator import Generator, PredictDefaults, TaskLike
from .target import Arch, parse_dtype, reset_buffers, resolve_target

SCHEDULER_FILE = "scheduler_config.json"
_MIN_STD = 1e-4  # constant tensors (LayerNorm weights at init) get this std
# Options added to DiffusionConfig on by default: a config.json written before them has
# them off, as its model was trained.
ADDED_OFF = {"ranked_task": False, "class_rows": False, "group": 1, "snr_boost": 0.0}
# A full-attention model (window None) attends over all of an architecture's tokens at once:
# its memory grows with their square, so it refuses more.
MAX_TOKENS = 8192


# ----- tokenization ------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenMeta:
    """Where each token of an architecture's parameters comes from, and per-tensor stats.

    Per token: ``layer`` (index into ``graph.params``), ``node`` (the param's graph node),
    ``role`` (index into :data:`graphs.ROLES`), ``position`` (chunk index within its
    tensor) and ``valid`` (how many of its ``chunk`` values are real; the rest is padding).
    Per tensor: ``mean`` and ``std`` (float64) for the model's normalization, and the
    ``dtypes`` decoding restores.
    """

    graph: ArchGraph
    chunk: int
    layer: torch.Tensor
    node: torch.Tensor
    role: torch.Tensor
    position: torch.Tensor
    valid: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    dtypes: tuple[torch.dtype, ...]

    @property
    def mask(self) -> torch.Tensor:
        """``(tokens, chunk)`` bool: True where a value is real, False on padding."""
        return torch.arange(self.chunk) < self.valid[:, None]

    def normalize(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-tensor standardized float32 tokens, padding kept at zero."""
        mean, std = self.mean[self.layer, None], self.std[self.layer, None]
        out = ((tokens.double() - mean) / std).float()
        return out.masked_fill(~self.mask, 0.0)

    def denormalize(self, tokens: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize` (up to float rounding), in float64."""
        return tokens.double() * self.std[self.layer, None] + self.mean[self.layer, None]


class WeightTokenizer:
    """Flatten each parameter tensor (graph order) into zero-padded ``chunk``-sized tokens."""

    def __init__(self, chunk: int = 64) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be positive, got {chunk}")
        self.chunk = chunk

    def layout(self, graph: ArchGraph) -> TokenMeta:
        """The token layout of ``graph``: it depends on shapes only. Stats are placeholders
        (mean 0, std 1) and dtypes the graph's, for :func:`dataclasses.replace` to fill in."""
        if not graph.params:
            raise ValueError(f"{graph.name or 'the graph'} has no parameters to tokenize")
        counts = [math.ceil(p.numel / self.chunk) for p in graph.params]
        n = len(graph.params)
        layer = torch.repeat_interleave(torch.arange(n), torch.tensor(counts, dtype=torch.long))
        position = torch.cat([torch.arange(c) for c in counts])
        valid = torch.cat([
            torch.tensor([self.chunk] * (c - 1) + [p.numel - (c - 1) * self.chunk])
            for p, c in zip(graph.params, counts, strict=True)])
        return TokenMeta(
            graph=graph, chunk=self.chunk, layer=layer,
            node=torch.tensor([p.node for p in graph.params], dtype=torch.long)[layer],
            role=torch.tensor([ROLE_INDEX[p.role] for p in graph.params],
                              dtype=torch.long)[layer],
            position=position, valid=valid,
            mean=torch.zeros(n, dtype=torch.float64), std=torch.ones(n, dtype=torch.float64),
            dtypes=tuple(getattr(torch, p.dtype) for p in graph.params))

    def encode(self, state: dict[str, torch.Tensor], graph: ArchGraph,
               ) -> tuple[torch.Tensor, TokenMeta]:
        """Raw-valued tokens ``(T, chunk)`` of every parameter of ``graph`` in ``state``.

        Buffers and other extra keys of ``state`` are ignored. Tokens are float32, or float64
        when a parameter is, so :meth:`decode` gives back exactly the same values.
        """
        meta = self.layout(graph)
        tensors = []
        for p in graph.params:
            if p.name not in state:
                raise ValueError(f"state dict has no parameter {p.name!r} of "
                                 f"{graph.name or 'the graph'}")
            value = state[p.name]
            if tuple(value.shape) != tuple(p.shape):
                raise ValueError(f"{p.name} has shape {tuple(value.shape)} but "
                                 f"{graph.name or 'the graph'} expects {tuple(p.shape)}: is "
                                 "this the state dict of another architecture?")
            if not value.is_floating_point():
                raise ValueError(f"{p.name} has dtype {value.dtype}: only float parameters "
                                 "can be tokenized")
            tensors.append(value.detach().cpu().reshape(-1))
        dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else \
            torch.float32
        mean = torch.stack([t.double().mean() for t in tensors])
        std = torch.stack([t.double().std(correction=0) for t in tensors]).clamp(min=_MIN_STD)
        pieces = [F.pad(t.to(dtype), (0, -t.numel() % self.chunk)).view(-1, self.chunk)
                  for t in tensors]
        return torch.cat(pieces), replace(meta, mean=mean, std=std,
                                          dtypes=tuple(t.dtype for t in tensors))

    def decode(self, tokens: torch.Tensor, meta: TokenMeta) -> dict[str, torch.Tensor]:
        """Parameters by name (tied aliases share the tensor), padding dropped."""
        if tokens.shape != (len(meta.layer), meta.chunk):
            raise ValueError(f"expected tokens of shape {(len(meta.layer), meta.chunk)} for "
                             f"{meta.graph.name or 'this graph'}, got {tuple(tokens.shape)}")
        out: dict[str, torch.Tensor] = {}
        counts = torch.bincount(meta.layer, minlength=len(meta.graph.params)).tolist()
        for p, rows, dtype in zip(meta.graph.params, tokens.split(counts), meta.dtypes,
                                  strict=True):
            tensor = rows.reshape(-1)[:p.numel].reshape(p.shape).to(dtype)
            out.update(dict.fromkeys((p.name, *p.tied), tensor))
        return out


# ----- checkpoint files (same rules as the GHN's) ------------------------------------------
PREDICTION_TYPES = ("epsilon", "sample")


Scheduler = TypeVar("Scheduler", DDPMScheduler, DDIMScheduler)


def scheduler_from_config(cls: type[Scheduler], config: Mapping[str, Any],
                          **overrides: Any) -> Scheduler:
    """``cls`` built from the arguments it takes in a diffusers scheduler ``config`` and from
    ``overrides``: what ``cls.from_config`` makes, without first importing every scheduler
    it lists as compatible (scipy among them: seconds of a fresh process)."""
    names = inspect.signature(cls.__init__).parameters
    return cls(**{**{k: v for k, v in config.items() if k in names}, **overrides})


def default_scheduler(prediction_type: str = "epsilon") -> DDPMScheduler:
    """The training schedule of ARCHITECTURE.md: DDPM, linear betas 1e-4..2e-2, T=1000.

    ``prediction_type`` is what the denoiser outputs: the noise (``"epsilon"``) or the clean
    tokens (``"sample"``, as G.pt does for weights).
    """
    return DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=2e-2,
                         beta_schedule="linear", prediction_type=prediction_type,
                         clip_sample=False)


# ----- the denoiser ------------------------------------------------------------------------
@dataclass
class DiffusionConfig:
    """Size of a weight-diffusion generator.

    ``chunk`` is the token size; ``positions`` the number of position-in-tensor embeddings
    (later chunks share the last one); ``graph_layers`` the depth of the graph encoder;
    ``task_dim`` the length of the task descriptors the model is conditioned on (0:
    unconditional), ``task_classes`` what each position stands for (the zoo's class names,
    so a task may be named; None: unnamed) and ``cond_drop`` the probability of dropping the
    task in training (classifier-free guidance); ``stats_weight``
    weighs the per-tensor stats loss against the denoising loss; ``prediction_type`` is
    what the denoiser outputs (:func:`default_scheduler`).

    ``snr_boost`` (gamma) weighs each training sample's denoising loss by
    ``(1 + min(SNR(t), gamma)) / (1 + gamma)`` (:func:`snr_weights`): 0 weighs every timestep
    alike; gamma > 0 weighs the least noisy ones up to ``1 + gamma`` times more than the
    noisiest, as Min-SNR weighting does. A zoo's checkpoints differ from each other by a few
    percent of each tensor's spread, so with plain weights a clean-weight predictor gains
    little from the noisy values it is given and learns the zoo's mean instead: its samples
    of a task were one model whatever the seed (0.6% apart,
    ``docs/results/diffusion-diversity.md``).

    ``ranked_task`` adds a second view of the descriptor to the task's input: which class
    holds each rank among its nonzero entries (:func:`ranked_descriptor`), the order in which
    a task's head rows follow its classes, so the rows can be told apart without decoding
    ranks from the set. On a zoo of fine-tunes of one parent it lifted zero-shot accuracy on
    one of two held-out five-way tasks from 22.8% to 41.8% and left the other level
    (``docs/results/parent-zoo-eval.md``).

    ``class_rows`` tells the classifier's values which class they belong to: in the tensors
    of the graph's last node whose leading dimension is the task's number of classes, row
    ``r`` belongs to the task's ``r``-th class (:func:`row_classes`), and a token's input
    gets a projection of the class of each of its values. A class's row is then the same
    thing to learn whatever its rank, and composes into tasks whose ranks no training task
    had. On the zoo of fine-tunes it lifted zero-shot accuracy on two held-out five-way
    tasks from 47.3% to 60.3%, and after 200 steps from 75.3% to 76.1% (the closest task's
    checkpoint: 61.8% and 75.1%; ``docs/results/parent-zoo-eval.md``).

    ``window`` is how many consecutive positions (tokens, or groups of ``group`` tokens)
    attend to each other (None: the whole sequence, as checkpoints from before windows do);
    ``sinusoidal_positions`` adds a fixed sinusoidal code of the position in the tensor to
    the learned one, so chunks past ``positions`` stay apart; ``train_windows`` is how many
    consecutive windows of a model one training sample denoises (a random run of them when
    the model has more).

    ``group`` merges that many consecutive tokens into one position of the transformer (1:
    each token is one, as before groups). A token then keeps a vector of its own,
    ``token_hidden`` wide (None: ``chunk``, a number per value; its noisy values, tensor and
    position), that the merged positions are projected from and that the transformer's
    output (``hidden`` wide) is split back onto; a per-token MLP refines it before the
    output layer. The transformer, most of a
    step's cost, then runs ``group`` times fewer positions, while each token's output comes
    from ``token_hidden`` numbers of its own rather than from a share of ``hidden``: a
    token size that makes sampling cheap without squeezing ``group * chunk`` values through
    ``hidden`` numbers. ``window`` and ``train_windows`` count merged positions. The default,
    32 tokens of 64 values per position in windows of 64, took a ResNet-18 init in 11-14 s with
    10 DDIM steps on the 2-core CPU where ungrouped tokens took 25-30 s per step, and learned
    held-out tasks as well (docs/results/parent-zoo-eval.md).
    """

    chunk: int = 64
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    graph_layers: int = 2
    positions: int = 1024
    task_dim: int = 0
    task_classes: tuple[str, ...] | None = None
    cond_drop: float = 0.1
    ranked_task: bool = True
    class_rows: bool = True
    stats_weight: float = 0.1
    snr_boost: float = 0.0
    prediction_type: str = "epsilon"
    window: int | None = 64
    sinusoidal_positions: bool = True
    train_windows: int = 8
    group: int = 32
    token_hidden: int | None = None

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, "
                             f"got {self.prediction_type!r}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be positive or None (full attention), got "
                             f"{self.window}")
        for name in ("train_windows", "group", "token_hidden"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.group > 1 and self.window is None:
            raise ValueError(f"group={self.group} merges tokens for windowed attention: give a "
                             "window, or group=1 for full attention (window None, as "
                             "checkpoints from before windows have)")
        self.snr_boost = float(self.snr_boost)  # the command line may give an int
        if self.snr_boost < 0:
            raise ValueError(f"snr_boost must be at least 0 (0: every timestep weighs alike), "
                             f"got {self.snr_boost}")
        if self.task_dim < 0 or not 0 <= self.cond_drop <= 1:
            raise ValueError(f"task_dim must be at least 0 (0: unconditional) and cond_drop in "
                             f"0..1, got task_dim={self.task_dim}, cond_drop={self.cond_drop}")
        if self.task_classes is not None:
            self.task_classes = tuple(self.task_classes)  # config.json has a list
            names = self.task_classes
            if (len(names) != self.task_dim or len(set(names)) != len(names)
                    or not all(isinstance(n, str) and n and "," not in n and "-" not in n
                               for n in names)):
                raise ValueError(f"task_classes must be {self.task_dim} distinct names (one per "
                                 "task_dim position, without commas or dashes) or None, got "
                                 f"{list(names)}")

    @property
    def window_tokens(self) -> int | None:
        """Tokens per attention window (None: full attention)."""
        return None if self.window is None else self.window * self.group

    @property
    def train_tokens(self) -> int | None:
        """Most tokens of one model a training sample holds (None: all of them)."""
        return None if self.window is None else self.window_tokens * self.train_windows


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding ``(B, dim)`` of integers (diffusion timesteps, positions)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def ranked_descriptor(tasks: torch.Tensor) -> torch.Tensor:
    """``(n, D * D)`` for descriptors ``(n, D)``: entry ``[r, c]`` (flattened) holds the
    descriptor's value at class ``c`` when ``c`` is its ``r``-th nonzero entry, else 0. A
    task's head row ``r`` belongs to its ``r``-th class, so this names each row's class."""
    present = tasks != 0
    rank = (present.long().cumsum(1) - 1).clamp(min=0)
    by_class = F.one_hot(rank, tasks.shape[1]).to(tasks.dtype) * (tasks * present)[..., None]
    return by_class.transpose(1, 2).flatten(1)


def row_classes(meta: TokenMeta, descriptor: torch.Tensor, rows: slice = slice(None),
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The classifier's tokens among ``rows`` of ``meta`` and the class of each of their
    values for a task ``descriptor``: ``(index, classes)``, ``index`` the positions within
    ``rows`` of the tokens of the graph's last node's tensors whose leading dimension is
    the task's number of classes (its nonzero entries), ``classes`` ``(len(index), chunk)``
    the task's ``r``-th class for a value of row ``r``, -1 on padding."""
    classes = descriptor.nonzero().flatten().cpu()
    params = meta.graph.params
    head = [i for i, p in enumerate(params)
            if p.node == params[-1].node and p.shape and p.shape[0] == len(classes)]
    layer, position = meta.layer[rows], meta.position[rows]
    index = torch.isin(layer, torch.tensor(head, dtype=torch.long)).nonzero().flatten()
    numel = torch.tensor([p.numel for p in params])[layer[index]]
    value = position[index, None] * meta.chunk + torch.arange(meta.chunk)
    row = torch.div(value, (numel // max(len(classes), 1))[:, None], rounding_mode="floor")
    real = value < numel[:, None]
    return index, torch.where(real, classes[row.clamp(max=max(len(classes) - 1, 0))], -1)


class TaskConditioning(nn.Module):
    """The task's part of every token's input: a learned "no task" vector, plus a linear
    projection of the task's descriptor when there is one (and, if ``ranked``, one of its
    :func:`ranked_descriptor`).

    ``weight`` ``(1, hidden)`` is the "no task" vector, the unconditional branch of
    classifier-free guidance; it is named and shaped as the one row of the task-id table of
    earlier checkpoints, so they load and sample as before. ``proj`` (``task_dim`` ->
    ``hidden``, no bias; none when ``task_dim`` is 0) starts at zero: a new conditional model
    starts as an unconditional one and learns what each descriptor shifts.
    """

    def __init__(self, task_dim: int, hidden: int, ranked: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, hidden))
        nn.init.normal_(self.weight)  # as nn.Embedding does: same draws as before
        self.proj = nn.Linear(task_dim, hidden, bias=False) if task_dim else None
        self.ranks = (nn.Linear(task_dim * task_dim, hidden, bias=False)
                      if task_dim and ranked else None)
        for proj in (self.proj, self.ranks):
            if proj is not None:
                nn.init.zeros_(proj.weight)

    def forward(self, n: int, tasks: torch.Tensor | None = None,
                dropped: torch.Tensor | None = None) -> torch.Tensor:
        """``(n, hidden)``: for descriptors ``tasks`` ``(n, task_dim)`` (None: no task), with
        the rows where ``dropped`` is True left at "no task"."""
        none = self.weight.expand(n, -1)
        if tasks is None:
            return none
        if self.proj is None:
            raise ValueError("this weight-diffusion generator is unconditional (task_dim 0): "
                             "it takes no task")
        shift = self.proj(tasks)
        if self.ranks is not None:
            shift = shift + self.ranks(ranked_descriptor(tasks))
        if dropped is not None:
            shift = shift.masked_fill(dropped[:, None], 0.0)
        return none + shift


class WeightDiffusion(Generator):
    """Transformer denoiser over the weight tokens of one architecture, graph-conditioned.

    A token's input is ``linear(noisy chunk) + position + role + size + node embedding +
    timestep + task`` (:class:`TaskConditioning`); its output is the predicted noise or clean tokens
    (``prediction_type``). Tokens attend within their window of ``config.window``.
    ``self.scheduler`` is the DDPM training schedule, saved beside the weights as
    ``scheduler_config.json``.
    """

    kind = "weight-diffusion"
    config_class = DiffusionConfig
    untasked = "a weight-diffusion generator that is unconditional (task_dim 0)"

    def __init__(self, config: DiffusionConfig | None = None,
                 defaults: PredictDefaults | None = None) -> None:
        super().__init__(config, defaults)
        config = self.config
        self.tokenizer = WeightTokenizer(config.chunk)
        self.scheduler = default_scheduler(config.prediction_type)
        d = config.hidden
        grouped = config.group > 1
        w = (config.token_hidden or config.chunk) if grouped else d  # a token's own width
        self.encoder = GraphEncoder(d, config.graph_layers, config.heads)
        self.inp = nn.Linear(config.chunk, w)
        self.position = nn.Embedding(config.positions, w)
        self.role = nn.Embedding(len(ROLES) + 8, d)  # spare rows: roles are append-only
        self.numel = nn.Embedding(BUCKETS, d)  # log2 buckets of the tensor size
        self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.task = TaskConditioning(config.task_dim, d, config.ranked_task)
        self.row_class = (nn.Linear(config.chunk * config.task_dim, w, bias=False)
                          if config.class_rows and config.task_dim else None)
        if self.row_class is not None:
            nn.init.zeros_(self.row_class.weight)
        layer = nn.TransformerEncoderLayer(d, config.heads, 4 * d, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        # group > 1: tensor features to token width, merge and split of positions, token MLP
        self.token_tensor = nn.Linear(d, w) if grouped else None
        self.merge = nn.Linear(config.group * w, d) if grouped else None
        self.split = (nn.Sequential(nn.LayerNorm(d), nn.Linear(d, config.group * w))
                      if grouped else None)
        self.token_mlp = (nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 2 * w), nn.GELU(),
                                        nn.Linear(2 * w, w)) if grouped else None)
        self.norm = nn.LayerNorm(w)
        self.out = nn.Linear(w, config.chunk)
        nn.init.zeros_(self.out.weight)  # start by predicting zero noise: a stable start
        nn.init.zeros_(self.out.bias)
        self.stats = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, 2))

    @classmethod
    def config_from_dict(cls, config: dict[str, Any]) -> DiffusionConfig:
        """A config.json without ``window`` was written before windows: its model attends
        over whole sequences, with learned positions only, as it was trained. One with
        ``num_tasks`` was written before task descriptors: with 0 (every such shipped
        checkpoint) it is unconditional, and its one-row table is the "no task" vector. One
        without an option of :data:`ADDED_OFF` was written before it: it has it off."""
        config = dict(config)
        num_tasks = config.pop("num_tasks", 0)
        if num_tasks:
            raise ValueError(f"num_tasks={num_tasks}: task-id tables were replaced by task "
                             "descriptors (task_dim), and this version cannot read their rows")
        before_windows = {} if "window" in config else {"window": None,
                                                        "sinusoidal_positions": False}
        return DiffusionConfig(**{**before_windows, **ADDED_OFF, **config})

    @property
    def task_dim(self) -> int:
        return self.config.task_dim

    @property
    def task_classes(self) -> tuple[str, ...] | None:
        return self.config.task_classes

    def _tensor_features(self, meta: TokenMeta, node_emb: torch.Tensor) -> torch.Tensor:
        """``(params, hidden)``: what is known of each tensor before its values."""
        params = meta.graph.params
        dev = node_emb.device
        node = torch.tensor([p.node for p in params], dtype=torch.long, device=dev)
        role = torch.tensor([ROLE_INDEX[p.role] for p in params], dtype=torch.long, device=dev)
        numel = torch.tensor([p.numel for p in params], device=dev)
        return node_emb[node] + self.role(role) + self.numel(log_bucket(numel))

    def predict_stats(self, meta: TokenMeta, node_emb: torch.Tensor) -> torch.Tensor:
        """``(params, 2)``: predicted per-tensor mean and log-std."""
        return self.stats(self._tensor_features(meta, node_emb))

    def _position(self, position: torch.Tensor) -> torch.Tensor:
        """``(tokens, width)`` embedding of chunk positions within their tensors."""
        emb = self.position(position.clamp(max=self.config.positions - 1))
        if self.config.sinusoidal_positions:
            emb = emb + timestep_embedding(position, emb.shape[1])
        return emb

    def _token_tensor(self, meta: TokenMeta, node_emb: torch.Tensor) -> torch.Tensor:
        """``(params, width)``: :meth:`_tensor_features` at the width of a token's vector."""
        features = self._tensor_features(meta, node_emb)
        return features if self.token_tensor is None else self.token_tensor(features)

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, metas: Sequence[TokenMeta],
                node_embs: Sequence[torch.Tensor], tasks: torch.Tensor | None = None,
                starts: Sequence[int] | None = None, dropped: torch.Tensor | None = None,
                ) -> torch.Tensor:
        """Predicted noise or clean tokens ``(B, T, chunk)`` for padded normalized ``noisy``.

        ``metas[b]``/``node_embs[b]`` describe sample ``b`` (several samples may share one
        graph); ``noisy[b]`` holds its tokens from ``starts[b]`` on (default 0: from the
        first), a multiple of ``config.window_tokens`` so windows stay where they are; tokens
        past its last one are padding and are masked out. ``tasks`` are the samples' task
        descriptors ``(B, task_dim)`` (None: no task); samples where ``dropped`` is True get
        none (classifier-free dropout).
        """
        b, t, _ = noisy.shape
        starts = [0] * b if starts is None else list(starts)
        self._check_span(t, starts, metas[0])
        dev = noisy.device
        cond = torch.zeros(b, t, self.inp.out_features, device=dev)
        keep = torch.zeros(b, t, dtype=torch.bool, device=dev)
        for i, (meta, emb, start) in enumerate(zip(metas, node_embs, starts, strict=True)):
            rows = slice(start, start + t)
            layer, position = meta.layer[rows].to(dev), meta.position[rows].to(dev)
            n = len(layer)
            cond[i, :n] = self._token_tensor(meta, emb)[layer] + self._position(position)
            keep[i, :n] = True
            if self.row_class is not None and tasks is not None and not (
                    dropped is not None and dropped[i]):
                cond[i, :n] = cond[i, :n] + self._row_classes(meta, tasks[i], rows, n)
        tokens = self.inp(noisy) + cond
        shift = self.time(timestep_embedding(timesteps, self.config.hidden))
        shift = (shift + self.task(b, tasks, dropped))[:, None]
        if self.merge is None:
            return self.out(self.norm(self._attend(tokens + shift, keep)))
        return self.out(self.norm(self._grouped(tokens, shift, keep)))

    def _grouped(self, tokens: torch.Tensor, shift: torch.Tensor, keep: torch.Tensor,
                 ) -> torch.Tensor:
        """Token vectors ``(B, T, token_hidden)`` after the transformer has run over their
        groups of ``config.group`` (``shift``: the groups' time and task input)."""
        b, t, w = tokens.shape
        pad = -t % self.config.group
        merged = self.merge(F.pad(tokens, (0, 0, 0, pad)).reshape(b, -1, self.config.group * w))
        keep = F.pad(keep, (0, pad)).reshape(b, merged.shape[1], -1).any(2)
        split = self.split(self._attend(merged + shift, keep)).reshape(b, t + pad, w)
        tokens = tokens + split[:, :t]
        return tokens + self.token_mlp(tokens)

    def _row_classes(self, meta: TokenMeta, descriptor: torch.Tensor, rows: slice,
                     n: int) -> torch.Tensor:
        """``(n, width)``: the projected class of each value of the classifier's tokens
        among ``rows`` (:func:`row_classes`), zero for every other token."""
        index, classes = row_classes(meta, descriptor, rows)
        out = torch.zeros(n, self.inp.out_features, device=descriptor.device)
        if len(index):
            onehot = F.one_hot(classes.clamp(min=0), self.config.task_dim)
            onehot = (onehot * (classes >= 0)[..., None]).flatten(1).float()
            onehot = onehot.to(descriptor.device)
            out[index.to(descriptor.device)] = self.row_class(onehot)
        return out

    def _check_span(self, tokens: int, starts: Sequence[int], meta: TokenMeta) -> None:
        """Refuse spans the attention cannot take: a full-attention model's longer than
        :data:`MAX_TOKENS` or not from the first token, windows cut off their start."""
        window = self.config.window_tokens
        if window is None and tokens > MAX_TOKENS:
            raise GeneratorLimitError(
                f"{meta.graph.name or 'this architecture'} has {tokens} weight tokens; this "
                f"weight-diffusion checkpoint (from before windows) attends over all of them at "
                f"once and takes at most {MAX_TOKENS} ({MAX_TOKENS * self.config.chunk:,} "
                f"parameters at chunk {self.config.chunk}). Use a windowed weight-diffusion "
                "generator or a hypernetwork (ghn-*) for larger models")
        if window is None and any(starts):
            raise ValueError("a full-attention model denoises whole sequences: starts must be 0")
        if window is not None and any(s % window for s in starts):
            raise ValueError(f"starts must be multiples of the window ({window} tokens), got "
                             f"{list(starts)}")

    def _attend(self, h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """The transformer over ``h`` ``(B, T, hidden)``: each window of ``config.window``
        positions on its own (the whole sequence when None), ``keep`` False on padding."""
        window = self.config.window
        if window is None:
            return self.blocks(h, src_key_padding_mask=~keep)
        b, t, d = h.shape
        pad = -t % window
        windows = F.pad(h, (0, 0, 0, pad)).reshape(-1, window, d)
        keep = F.pad(keep, (0, pad)).reshape(-1, window)
        out = torch.zeros_like(windows)
        full = keep.all(1)  # these run unmasked: torch's masked attention is slower on CPU
        part = keep.any(1) & ~full  # a window of padding alone has nothing to attend to
        if full.any():
            out[full] = self.blocks(windows[full])
        if part.any():
            out[part] = self.blocks(windows[part], src_key_padding_mask=~keep[part])
        return out.reshape(b, t + pad, d)[:, :t]

    def iter_tensors(self, graph: ArchGraph, seed: int = 0, task: TaskLike | None = None,
                     ) -> Iterator[tuple[str, torch.Tensor]]:
        """Every parameter of ``graph`` in graph order, from one default DDIM sample drawn
        with ``seed`` for ``task`` (a ``training.tasks.Task`` or its descriptor; None: no
        task): unlike a GHN's, the whole sample is computed before the first tensor."""
        state = sample_state_dicts(self, graph, n=1, seed=seed, task=task)[0]
        for p in graph.params:
            yield p.name, state[p.name]

    def save_extra(self, folder: Path) -> None:
        """The noise schedule, as ``scheduler_config.json``."""
        self.scheduler.save_config(folder)

    def load_extra(self, folder: Path) -> None:
        schedule = folder / SCHEDULER_FILE
        if not schedule.is_file():
            raise CheckpointError(f"{folder}: no {SCHEDULER_FILE} (a weight-diffusion "
                                  f"checkpoint is {CONFIG_FILE} + {WEIGHTS_FILE} + "
                                  f"{SCHEDULER_FILE})")
        try:
            self.scheduler = scheduler_from_config(DDPMScheduler,
                                                   DDPMScheduler.load_config(schedule))
        except (OSError, ValueError, TypeError) as err:
            raise CheckpointError(f"{schedule} is not a valid DDPM scheduler config: {err}") \
                from err


# ----- training ----------------------------------------------------------------------------
def _pad(tokens: Sequence[torch.Tensor]) -> torch.Tensor:
    return nn.utils.rnn.pad_sequence(list(tokens), batch_first=True)


def train_start(config: DiffusionConfig, tokens: int) -> int:
    """Where a training sample of a ``tokens``-long model starts: 0 when its
    ``config.train_tokens`` cover it, else a random window (torch's global generator) with
    ``train_windows`` windows from it on."""
    span = config.train_tokens
    if span is None or tokens <= span:
        return 0
    last = math.ceil(tokens / config.window_tokens) - config.train_windows
    return int(torch.randint(0, last + 1, ())) * config.window_tokens


def snr_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, boost: float,
                ) -> torch.Tensor:
    """Loss weights ``(1 + min(SNR(t), boost)) / (1 + boost)`` of ``timesteps``, with
    ``SNR(t) = alpha_bar(t) / (1 - alpha_bar(t))``: all 1 for ``boost`` 0, else from 1 (the
    least noisy) down to about ``1 / (1 + boost)`` (pure noise)."""
    alpha_bar = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    return (1 + (alpha_bar / (1 - alpha_bar)).clamp(max=boost)) / (1 + boost)


def diffusion_loss(model: WeightDiffusion, batch: Sequence[tuple[torch.Tensor, TokenMeta]],
                   tasks: Sequence[TaskLike] | None = None) -> torch.Tensor:
    """Denoising loss (MSE of the predicted noise or clean tokens, on real values, each
    sample weighted by :func:`snr_weights`) plus the weighted per-tensor stats loss.

    ``batch`` holds ``WeightTokenizer.encode`` outputs; ``tasks`` their tasks (``Task`` objects
    or descriptors) when the model is task-conditioned, each dropped with probability
    ``cond_drop``. Each sample denoises a random run of ``train_windows`` windows of its
    model (all of it when it is shorter, or when attention is full), so a step costs the
    same for a model of any size.
    Randomness comes from torch's global generator, so a trainer seeds it.
    """
    dev = model.inp.weight.device
    metas = [meta for _, meta in batch]
    node_embs = model.embed([meta.graph for meta in metas])
    starts = [train_start(model.config, len(meta.layer)) for meta in metas]
    rows = [slice(start, start + (model.config.train_tokens or len(meta.layer)))
            for start, meta in zip(starts, metas, strict=True)]
    clean = _pad([meta.normalize(tok)[r] for (tok, meta), r in zip(batch, rows, strict=True)])
    clean = clean.to(dev)
    mask = _pad([meta.mask[r] for meta, r in zip(metas, rows, strict=True)]).to(dev)
    noise = torch.randn_like(clean)
    steps = model.scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (len(batch),), device=dev)
    noisy = model.scheduler.add_noise(clean, noise, timesteps)
    descriptors = dropped = None
    if tasks is not None:
        if len(tasks) != len(batch):
            raise ValueError(f"tasks has {len(tasks)} entries for a batch of {len(batch)}")
        descriptors = torch.stack([model.task_vector(t) for t in tasks])
        descriptors = descriptors.to(dev)
        dropped = torch.rand(len(batch), device=dev) < model.config.cond_drop
    pred = model(noisy, timesteps, metas, node_embs, descriptors, starts, dropped)
    target = noise if model.config.prediction_type == "epsilon" else clean
    weight = snr_weights(model.scheduler, timesteps, model.config.snr_boost)[:, None, None] * mask
    denoise = ((pred - target) ** 2 * weight).sum() / weight.sum()
    stats = torch.cat([model.predict_stats(meta, emb) for meta, emb in zip(metas, node_embs,
                                                                           strict=True)])
    target = torch.cat([torch.stack([meta.mean, meta.std.log()], 1) for meta in metas])
    return denoise + model.config.stats_weight * F.mse_loss(stats, target.float().to(dev))


# ----- sampling ----------------------------------------------------------------------------
# Windows sampled at once: bounds sampling memory, whatever the model size. With the default
# groups a window holds 131k values; for a ResNet-18, 4 at once took 11.3 s and 291 MB
# beyond the model's own tensors, 64 at once 13.8 s and 458 MB (bench/diffusion_sample.py).
WINDOW_BATCH = 4
# Sampling steps when none are given. Clean-weight (``sample``) predictors need few: on two
# held-out tasks a task-conditioned model's samples scored 60.3%, 60.4% and 60.3% before
# training at 10, 20 and 50 steps (docs/results/parent-zoo-eval.md), and 10 steps take a
# ResNet-18 init under 30 s on a 2-core CPU (docs/results/bench-diffusion-sample.md).
DDIM_STEPS = 10


@torch.no_grad()
def sample_state_dicts(model: WeightDiffusion, graph: ArchGraph, n: int = 1, seed: int = 0,
                       steps: int = DDIM_STEPS, guidance: float = 1.0,
                       task: TaskLike | None = None,
                       clip: float | None = 4.0, window_batch: int = WINDOW_BATCH,
                       ) -> list[dict[str, torch.Tensor]]:
    """``n`` sampled parameter dicts for ``graph`` (tied aliases included, no buffers).

    DDIM with ``steps`` steps and eta 0: the seed fixes the starting noise, so a seed gives
    fixed values. ``task`` (a ``training.tasks.Task``, seen in training or not, or its
    descriptor of ``config.task_dim`` values) conditions a task-conditioned model; None
    samples without a task. With a ``task`` and ``guidance`` other than 1, classifier-free
    guidance mixes the conditional and the unconditional prediction. ``clip`` bounds each step's
    predicted clean tokens to that many per-tensor stds (DDIM's ``clip_sample``): without
    it an undertrained denoiser's early x0 estimates blow up (a tiny test model gave
    weights 80x too large); ``None`` turns it off.

    Windows do not see each other, so a windowed model runs all DDIM steps on
    ``window_batch`` windows before the next ones: memory holds the sampled values and one
    batch of windows' activations (a full-attention model takes its whole sequence at once).
    ``window_batch`` changes no value (beyond float rounding in batched matrix products).
    """
    if n < 1 or steps < 1 or window_batch < 1:
        raise ValueError(f"n, steps and window_batch must be positive, got n={n}, "
                         f"steps={steps}, window_batch={window_batch}")
    vector = None if task is None else model.task_vector(task)
    was_training = model.training
    model.eval()
    dev = model.inp.weight.device
    (node_emb,) = model.embed([graph])
    stats = model.predict_stats(model.tokenizer.layout(graph), node_emb).double().cpu()
    meta = replace(model.tokenizer.layout(graph), mean=stats[:, 0], std=stats[:, 1].exp())
    gen = torch.Generator().manual_seed(int(seed))
    x = torch.randn(n, len(meta.layer), meta.chunk, generator=gen)
    scheduler = scheduler_from_config(  # one per call: set_timesteps mutates it
        DDIMScheduler, model.scheduler.config, clip_sample=clip is not None,
        clip_sample_range=clip or 1.0)
    scheduler.set_timesteps(steps)
    window = model.config.window_tokens
    span = len(meta.layer) if window is None else window * window_batch
    tasks = None if vector is None else vector.to(dev).expand(n, -1)
    for start in range(0, len(meta.layer), span):
        noisy = x[:, start:start + span].to(dev)
        x[:, start:start + span] = _denoise(model, scheduler, noisy, start, meta, node_emb,
                                            tasks, guidance).cpu()
    model.train(was_training)
    return [model.tokenizer.decode(meta.denormalize(xi).float(), meta) for xi in x]


def _denoise(model: WeightDiffusion, scheduler: DDIMScheduler, x: torch.Tensor, start: int,
             meta: TokenMeta, node_emb: torch.Tensor, tasks: torch.Tensor | None,
             guidance: float) -> torch.Tensor:
    """Every DDIM step on noisy tokens ``x`` ``(n, span, chunk)``, tokens ``start`` on of
    ``meta``, for task descriptors ``tasks`` (None: no task); with tasks and ``guidance``
    other than 1, classifier-free guidance of that weight."""
    n = len(x)
    metas, embs, starts = [meta] * n, [node_emb] * n, [start] * n
    for t in scheduler.timesteps:
        timesteps = torch.full((n,), int(t), dtype=torch.long, device=x.device)
        out = model(x, timesteps, metas, embs, tasks, starts)
        if tasks is not None and guidance != 1.0:
            free = model(x, timesteps, metas, embs, None, starts)
            out = free + guidance * (out - free)
        x = scheduler.step(out, t, x).prev_sample
    return x


def load_diffusion(generator: str | os.PathLike | WeightDiffusion) -> WeightDiffusion:
    """A diffusion generator by shipped name, local folder or ``hub:OWNER/NAME[@REVISION]``
    (as :func:`hyperinit.load_generator` takes them), or an instance as is."""
    if isinstance(generator, WeightDiffusion):
        return generator
    model = load_generator(generator)
    if not isinstance(model, WeightDiffusion):
        raise CheckpointError(f"{generator} is a {model.kind} generator: sampling takes a "
                              "weight-diffusion one (hyperinit.predict takes any generator)")
    return model


def sample(arch: Arch, generator: str | os.PathLike | WeightDiffusion, *, n: int = 1,
           seed: int = 0, num_classes: int | None = None, steps: int = DDIM_STEPS,
           guidance: float = 1.0, task: TaskLike | None = None, clip: float | None = 4.0,
           window_batch: int = WINDOW_BATCH, dtype: str | torch.dtype | None = None,
           **kwargs: Any) -> list[dict[str, torch.Tensor]]:
    """``n`` sampled inits of ``arch``, each with exactly the keys of ``model.state_dict()``.

    ``arch`` is resolved as by :func:`hyperinit.predict_state_dict` (spec string, dict or
    module; ``num_classes`` and ``kwargs`` go to the constructor). Buffers come from the
    model with BatchNorm statistics reset. ``dtype`` defaults to each parameter's dtype. See
    :func:`sample_state_dicts` for ``steps``, ``guidance``, ``task``, ``clip`` and
    ``window_batch``.
    """
    target = resolve_target(arch, num_classes, kwargs)
    cast = parse_dtype(dtype)
    buffers = list(reset_buffers(target.module))
    reference = target.module.state_dict()
    out = []
    for params in sample_state_dicts(load_diffusion(generator), target.graph, n, seed, steps,
                                     guidance, task, clip, window_batch):
        state = OrderedDict((k, params[k].to(cast or reference[k].dtype)) for k in params)
        for name, value in buffers:
            float_cast = cast if cast is not None and value.is_floating_point() else value.dtype
            state[name] = value.clone().to(float_cast)
        state._metadata = reference._metadata
        out.append(state)
    return out
