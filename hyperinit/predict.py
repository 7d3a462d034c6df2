"""Public prediction API: architecture in, parameters (module, state dict or file) out."""

from __future__ import annotations

import itertools
import json
import math
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graphs import ArchGraph
from graphs.vocab import NORM_OPS

from .catalog import GeneratorRef, load_generator
from .decoder import fan_in
from .generator import Generator, TaskLike
from .safetensors_io import DEFAULT_MAX_SHARD_SIZE, TensorInfo, check_target, write_state
from .target import BN_STATS, Arch, Target, parse_dtype, reset_buffers, resolve_target
from .validation import check_max_shard_size, check_noise, check_output_path, check_seed
from .version import __version__

NOISY_ROLES = ("weight", "embedding", "pos_embedding")  # what ``noise`` applies to


def resolve_noise(generator: Generator, noise: float | None) -> float:
    """The ``noise`` a prediction uses: ``noise`` itself, else the generator's default
    (``generator.defaults.noise``: 0 unless its card says otherwise; a diffusion
    generator's is 0, as its samples are random already)."""
    return check_noise(generator.defaults.noise if noise is None else noise)


@dataclass(frozen=True)
class InitTask:
    """The task an init is for, as its file records it: the descriptor the generator is
    conditioned on, and the task's name when it has one (a ``training.tasks.Task`` does).
    It is a task itself (``descriptor()``), so it can be passed on as one."""

    vector: torch.Tensor
    name: str | None = None

    def descriptor(self) -> torch.Tensor:
        return self.vector

    def to_json(self) -> str:
        """``{"descriptor": [...], "name": ...}`` (no name when it has none), compact: the
        ``hyperinit.task`` metadata and the service's cache key."""
        named = {"name": self.name} if self.name is not None else {}
        return json.dumps({"descriptor": self.vector.tolist(), **named}, sort_keys=True,
                          separators=(",", ":"))


def resolve_task(generator: Generator, task: TaskLike | None) -> InitTask | None:
    """``task`` checked against ``generator`` before any work (``Generator.task_vector``:
    :class:`~hyperinit.errors.TaskError` for a generator that takes no task or a descriptor
    of the wrong size), with its name if it has a string ``name`` (a task given by its
    classes' names is named by them, ``"cat,dog,ship"``, in the generator's order); None
    for no task."""
    if task is None:
        return None
    vector = generator.task_vector(task)
    if isinstance(task, str):
        named = zip(generator.task_classes, vector.tolist(), strict=True)
        return InitTask(vector, ",".join(c for c, v in named if v))
    name = getattr(task, "name", None)
    return InitTask(vector, name if isinstance(name, str) else None)


def _tensors(generator: Generator, graph: ArchGraph, seed: int, noise: float,
             task: InitTask | None) -> Iterator[tuple[str, torch.Tensor]]:
    """The generator's tensors for ``task`` (None: no task), in graph order, with ``noise``
    of each weight's variance replaced by Gaussian noise: ``sqrt(1 - noise) * w +
    sqrt(noise) * std(w) * eps``, then orthogonalized if the generator was trained so
    (``PredictDefaults.orth``).

    Weights larger than the generator's ``max_numel`` (:func:`too_large`) get
    :func:`he_weight` instead, with neither noise nor orthogonalization. Last, with a
    ``max_gain`` and an architecture without normalization layers, every predicted weight
    but the head is capped (:func:`cap_gain`); He init is left as it is. With
    ``scale_by_depth``, layer scales are divided by the root of their count
    (:func:`layer_scales`).

    The seed draws ``eps``, the He-init weights and whatever randomness the generator
    itself has (none for a GHN, whose prediction is deterministic; the sampling noise of a
    diffusion generator).
    """
    roles = {p.name: p.role for p in graph.params}
    orth = orth_names(graph) if generator.defaults.orth else set()
    large = too_large(graph, generator.defaults.max_numel)
    max_gain = generator.defaults.max_gain
    capped = set()
    if max_gain is not None and not any(node.op in NORM_OPS for node in graph.nodes):
        capped = orth_names(graph) - large.keys()
    scales = layer_scales(graph) if generator.defaults.scale_by_depth else set()
    rng = torch.Generator().manual_seed(int(seed))
    for name, tensor in generator.iter_tensors(graph, seed, task):
        if name in large:
            tensor = he_weight(tensor, large[name], rng)
        else:
            tensor = finish(tensor, roles[name], noise, rng, orth=name in orth, inplace=True)
        if name in scales:
            tensor = tensor.div_(math.sqrt(len(scales)))
        yield name, cap_gain(tensor, max_gain) if name in capped else tensor


def layer_scales(graph: ArchGraph) -> set[str]:
    """The layer scales of ``graph`` (role ``scale``: per-channel multipliers of residual
    branches), which a generator with ``PredictDefaults.scale_by_depth`` divides by the
    square root of their number."""
    return {p.name for p in graph.params if p.role == "scale"}


def too_large(graph: ArchGraph, max_numel: int | None) -> dict[str, int]:
    """``{name: fan_in}`` of the weights of ``graph`` with more than ``max_numel`` values:
    those a generator with that ``PredictDefaults.max_numel`` leaves to He init."""
    if max_numel is None:
        return {}
    return {p.name: fan_in(p.out_in_shape) for p in graph.params
            if p.role == "weight" and math.prod(p.out_in_shape) > max_numel}


def he_weight(like: torch.Tensor, fan: int, rng: torch.Generator) -> torch.Tensor:
    """He (Kaiming-normal) init of a weight of fan-in ``fan``, shaped as ``like``:
    ``N(0, 2 / fan_in)``, drawn on CPU from ``rng``: the init of ReLU networks (He et al.,
    2015). In ResNet-18's layer3/layer4 kernels it trained ahead of torchvision's own fan-out init
    (``docs/results/decoder-family.md``)."""
    drawn = torch.randn(like.shape, generator=rng).mul_((2 / fan) ** 0.5)
    return drawn.to(like.device, like.dtype)


def default_gain(out: int, fan: int) -> float:
    """The largest singular value of PyTorch's default init of an ``(out, fan)`` weight,
    ``U(-1/sqrt(fan), 1/sqrt(fan))`` (``nn.Linear``, ``nn.Conv*``), to leading order:
    ``std * (sqrt(out) + sqrt(fan))`` with ``std = 1 / sqrt(3 * fan)`` (Bai & Yin, 1988)."""
    return (out ** 0.5 + fan ** 0.5) / (3 * fan) ** 0.5


def cap_gain(weight: torch.Tensor, max_gain: float) -> torch.Tensor:
    """``weight`` scaled down in place, if need be, so its largest singular value in the ``(out,
    in * kh * kw)`` view is at most ``max_gain`` times :func:`default_gain` of that shape
    (``PredictDefaults.max_gain``)."""
    matrix = weight.detach().flatten(1).float()
    gain = float(torch.linalg.matrix_norm(matrix, 2))
    limit = max_gain * default_gain(*matrix.shape)
    return weight.mul_(limit / gain) if gain > limit else weight


def finish(tensor: torch.Tensor, role: str, noise: float, rng: torch.Generator,
           orth: bool, inplace: bool = False) -> torch.Tensor:
    """One generated tensor as predictions give it: with ``noise`` (:func:`add_noise`), then
    orthogonalized if ``orth``. Differentiable, so training goes through the same steps."""
    tensor = add_noise(tensor, role, noise, rng, inplace=inplace)
    return orthogonalize(tensor) if orth else tensor


NOISE_CHUNK = 1 << 16  # values of eps drawn at a time when no gradient is needed


def add_noise(tensor: torch.Tensor, role: str, noise: float, rng: torch.Generator,
              inplace: bool = False) -> torch.Tensor:
    """``sqrt(1 - noise) * w + sqrt(noise) * std(w) * eps`` for weights and embeddings
    (``NOISY_ROLES``), ``eps`` drawn on CPU from ``rng``; other tensors as they are.
    Differentiable in ``tensor`` (noise-aware training uses it too).

    Without a gradient to keep, ``eps`` is drawn and mixed in chunks that stay in cache
    (:func:`_mix_noise`): the same bytes, written once instead of through three
    full-size temporaries, and with ``inplace`` into ``tensor`` itself (a fresh tensor
    the caller owns: no second one to allocate and fault in).
    """
    if not noise or role not in NOISY_ROLES or tensor.numel() < 2:
        return tensor
    sigma = noise ** 0.5 * tensor.std()
    if torch.is_grad_enabled() and tensor.requires_grad:
        eps = torch.randn(tensor.shape, generator=rng).to(tensor.device, tensor.dtype)
        return (1 - noise) ** 0.5 * tensor + sigma * eps
    return _mix_noise(tensor, (1 - noise) ** 0.5, sigma, rng, inplace)


def _mix_noise(tensor: torch.Tensor, keep: float, sigma: torch.Tensor, rng: torch.Generator,
               inplace: bool) -> torch.Tensor:
    """``keep * tensor + sigma * eps``, in ``tensor`` if ``inplace`` (or in its contiguous
    copy), ``eps`` drawn ``NOISE_CHUNK`` values at a time. Draws of 16 or more values
    consume ``rng`` as one draw of their total would, so chunk boundaries are multiples of
    ``NOISE_CHUNK`` with no last chunk under 16."""
    flat = tensor.contiguous().view(-1)
    copied = flat.data_ptr() != tensor.data_ptr()
    out = flat if inplace or copied else torch.empty_like(flat)
    eps = torch.empty(min(flat.numel(), 2 * NOISE_CHUNK))
    starts = list(range(0, flat.numel(), NOISE_CHUNK))
    if len(starts) > 1 and flat.numel() - starts[-1] < 16:
        starts.pop()
    for start, end in zip(starts, [*starts[1:], flat.numel()], strict=True):
        chunk = torch.randn(end - start, generator=rng, out=eps[:end - start])
        chunk = chunk.to(tensor.device, tensor.dtype).mul_(sigma)
        torch.mul(flat[start:end], keep, out=out[start:end]).add_(chunk)
    return out.view(tensor.shape)


# Newton-Schulz steps of orthogonalize: quintic ones first, which grow small singular values
# about 3.4x a step (Muon's coefficients, Jordan et al. 2024) but leave them in [0.7, 1.2];
# then cubic ones, which converge to exactly 1 from there.
QUINTIC_STEPS, QUINTIC = 8, (3.4445, -4.7750, 2.0315)
CUBIC_STEPS = 6


def orthogonalize(weight: torch.Tensor) -> torch.Tensor:
    """The weight with all its singular values made equal, at its own Frobenius norm.

    The matrix is output channels by the rest; the result is its polar factor ``U V^T``
    (the nearest matrix with orthonormal rows or columns), rescaled. It keeps the directions
    a generator predicted but not their conditioning, which is what slows SGD from a
    prediction (Knyazev, 2022, "Pretraining a Neural Network before Knowing Its
    Architecture"). Computed with Newton-Schulz steps, so it is differentiable and can be
    trained through. Singular values below about 1e-5 of the norm stay below 1, so an
    exactly low-rank prediction (``noise`` 0) stays low-rank; with noise it is full-rank.
    """
    matrix = weight.reshape(weight.shape[0], -1)
    tall = matrix.shape[0] > matrix.shape[1]
    wide = matrix.T if tall else matrix  # iterate on the small Gram side
    x = wide / (wide.norm() + 1e-12)  # singular values in (0, 1]: the steps converge
    a, b, c = QUINTIC
    for _ in range(QUINTIC_STEPS):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    for _ in range(CUBIC_STEPS):
        x = 1.5 * x - 0.5 * (x @ x.T) @ x
    x = x.T if tall else x
    return (x * (matrix.norm() / (x.norm() + 1e-12))).reshape(weight.shape)


def orth_names(graph: ArchGraph) -> set[str]:
    """The parameters :func:`orthogonalize` applies to: every weight matrix or kernel but the
    head (the last weight before the output), which maps features to classes or tokens."""
    weights = [p.name for p in graph.params if p.role == "weight" and len(p.shape) >= 2]
    return set(weights[:-1])


def _stream(target: Target, generator: Generator, seed: int, noise: float,
            dtype: torch.dtype | None, task: InitTask | None) -> tuple[list[TensorInfo], Iterator]:
    """Header infos and a lazy stream of every state-dict entry but tied aliases (each tied
    tensor once, under its first name; :func:`tied_aliases` names the others), then the
    buffers.

    The stream runs without autograd wherever it is consumed (a generator function runs
    its body when iterated, outside any ``no_grad`` around this call)."""
    infos = [TensorInfo(p.name, p.shape, dtype or getattr(torch, p.dtype))
             for p in target.graph.params]
    buffers = list(reset_buffers(target.module))
    for name, value in buffers:
        cast = dtype if dtype is not None and value.is_floating_point() else value.dtype
        infos.append(TensorInfo(name, tuple(value.shape), cast))

    @torch.no_grad()
    def cast():
        tensors = itertools.chain(_tensors(generator, target.graph, seed, noise, task),
                                  buffers)
        for info, (name, tensor) in zip(infos, tensors, strict=True):
            yield name, tensor.to(info.dtype)

    return infos, cast()


def tied_aliases(graph: ArchGraph) -> dict[str, str]:
    """``{alias: name}`` for every tied parameter name but the first, which holds the
    tensor; files carry it in their metadata, as ``huggingface_hub`` writes shared tensors
    (``hyperinit.safetensors_io.read_state`` and ``safetensors.torch.load_model`` restore
    the ties)."""
    return {alias: p.name for p in graph.params for alias in p.tied}


def predict_state_dict(arch: Arch, generator: GeneratorRef = None, *, seed: int = 0,
                       noise: float | None = None, num_classes: int | None = None,
                       dtype: str | torch.dtype | None = None, task: TaskLike | None = None,
                       **kwargs: Any) -> dict[str, torch.Tensor]:
    """Predicted parameters and reset buffers: exactly the keys of ``model.state_dict()``.

    Args:
        arch: a spec (``"torchvision:resnet50"``, ``"hf:gpt2"``, a dict) or an ``nn.Module``.
        generator: shipped generator name, checkpoint directory, or a loaded generator.
        seed: a seed gives fixed bytes; other seeds give other, equally good inits. It draws
            the ``noise`` (a GHN's prediction itself is deterministic) and, for a diffusion
            generator, the sampling noise.
        noise: the fraction of the variance of each weight and embedding that is replaced
            by Gaussian noise (0: the prediction itself). Predicted weights lack the
            diversity gradient descent needs to move far from them (Knyazev, 2022); some
            noise keeps most of what the prediction knows and trains better. Default: the
            generator's own (its card says how it was chosen).
        num_classes: classifier size; other keyword arguments go to the model constructor
            or the ``transformers`` config.
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``; default: the model's dtype.
        task: the task the init is for, for a generator conditioned on tasks (a
            weight-diffusion model trained on a zoo over tasks): a ``training.tasks.Task``
            (``Task.parse("cat,dog,ship")``), anything with a ``descriptor()``, or the
            descriptor itself, a 1-D vector of the generator's ``task_dim`` numbers. None
            (the default) asks for no task. A generator that takes no task (a GHN, an
            unconditional diffusion model) refuses one with ``hyperinit.TaskError``.
    """
    seed = check_seed(seed)
    target = resolve_target(arch, num_classes, kwargs)
    model = load_generator(generator)
    chosen = resolve_task(model, task)
    _, stream = _stream(target, model, seed, resolve_noise(model, noise), parse_dtype(dtype),
                        chosen)
    state = OrderedDict(stream)
    state.update({alias: state[name] for alias, name in tied_aliases(target.graph).items()})
    # Module versions, as in model.state_dict(): some modules (MNASNet) refuse to load without.
    state._metadata = target.module.state_dict()._metadata
    return state


def predict(arch: Arch, generator: GeneratorRef = None, *, seed: int = 0,
            noise: float | None = None, num_classes: int | None = None,
            calibration: Any = None, task: TaskLike | None = None, **kwargs: Any) -> nn.Module:
    """A model whose parameters come from the generator, ready to train.

    A module built on ``meta`` is materialized on CPU; a real module is filled in place.
    Tied parameters stay tied. BatchNorm statistics are reset, or, if ``calibration``
    (an iterable of input batches) is given, re-estimated on those batches. ``seed``,
    ``noise`` and ``task`` are those of :func:`predict_state_dict`.
    """
    seed = check_seed(seed)
    target = resolve_target(arch, num_classes, kwargs)
    model = target.module
    source = load_generator(generator)
    chosen = resolve_task(source, task)
    aliases = {p.name: p.tied for p in target.graph.params}
    with torch.no_grad():
        for name, tensor in _tensors(source, target.graph, seed, resolve_noise(source, noise),
                                     chosen):
            old = model.get_parameter(name)
            if old.device.type == "meta":
                new = nn.Parameter(tensor.to(old.dtype), requires_grad=old.requires_grad)
                for alias in (name, *aliases[name]):
                    owner, _, leaf = alias.rpartition(".")
                    setattr(model.get_submodule(owner), leaf, new)
            else:
                old.copy_(tensor)
        for name, value in reset_buffers(model):
            owner, _, leaf = name.rpartition(".")
            module = model.get_submodule(owner)
            if leaf in BN_STATS:
                getattr(module, leaf).copy_(value)
    if calibration is not None:
        calibrate_batchnorm(model, calibration)
    return model


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, batches: Any) -> nn.Module:
    """Re-estimate BatchNorm running statistics as the plain average over ``batches``."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    try:
        for batch in batches:
            model(batch)
    finally:
        model.train(was_training)
        for m, momentum in saved:
            m.momentum = momentum
    return model


def metadata(target: Target, generator: Generator, seed: int, noise: float,
             task: InitTask | None = None) -> dict[str, str]:
    """The safetensors metadata of ARCHITECTURE.md's conventions, the tied aliases and, for
    an init made for a task, ``hyperinit.task`` (:meth:`InitTask.to_json`): what it is for.
    """
    named = {} if task is None else {"hyperinit.task": task.to_json()}
    named |= {f"hyperinit.{key}": str(value) for key, value in generator.defaults.limits().items()}
    return {
        **tied_aliases(target.graph),
        "format": "pt",
        "hyperinit.version": __version__,
        "hyperinit.generator": generator.id,
        "hyperinit.arch": target.spec.to_json(),
        "hyperinit.arch_hash": target.graph.arch_hash,
        "hyperinit.seed": str(seed),
        "hyperinit.noise": str(noise),
        **named,
    }


def save_init(arch: Arch, path: str | os.PathLike, generator: GeneratorRef = None, *,
              seed: int = 0, noise: float | None = None, num_classes: int | None = None,
              dtype: str | torch.dtype | None = None, task: TaskLike | None = None,
              max_shard_size: int = DEFAULT_MAX_SHARD_SIZE, **kwargs: Any) -> list[Path]:
    """Predict an init and stream it to safetensors; returns the files written.

    ``path`` ending in ``.safetensors`` gives one file; any other path is a folder that
    gets ``model.safetensors`` or, above ``max_shard_size`` bytes, shards and
    ``model.safetensors.index.json``. A folder is replaced whole: one that exists must be
    empty or hold a previous init only (no stale shard or index survives). Tensors are
    written as they are predicted, so peak memory is about the largest tensor, not the
    model. Nothing is left behind on failure (a full disk raises ``DiskFullError``).
    ``seed``, ``noise`` and ``task`` are those of :func:`predict_state_dict`; an init made
    for a task names it in the metadata ``hyperinit.task``.
    """
    seed, max_shard_size = check_seed(seed), check_max_shard_size(max_shard_size)
    path = check_output_path(path)
    check_target(path)  # fail before doing any work
    target = resolve_target(arch, num_classes, kwargs)
    model = load_generator(generator)
    noise, chosen = resolve_noise(model, noise), resolve_task(model, task)
    infos, stream = _stream(target, model, seed, noise, parse_dtype(dtype), chosen)
    return write_state(path, infos, stream, metadata(target, model, seed, noise, chosen),
                       max_shard_size)
