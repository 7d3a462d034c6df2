"""Public prediction API: architecture in, parameters (module, state dict or file) out."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

import graphs
from graphs import ArchGraph, ArchSpec

from . import __version__
from .checkpoint import WEIGHTS_FILE
from .errors import CheckpointError
from .ghn import GraphHyperNetwork
from .safetensors_io import DEFAULT_MAX_SHARD_SIZE, TensorInfo, check_target, write_state
from .validation import check_max_shard_size, check_noise, check_output_path, check_seed

if TYPE_CHECKING:  # diffusion imports diffusers (seconds): loaded only when used
    from .diffusion import WeightDiffusion

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
UNTRAINED = "untrained"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")
NOISY_ROLES = ("weight", "embedding", "pos_embedding")  # what ``noise`` applies to

Arch = str | dict | ArchSpec | nn.Module
Generator = str | os.PathLike | nn.Module | None  # a GraphHyperNetwork or WeightDiffusion


@dataclass
class _Target:
    spec: ArchSpec
    module: nn.Module
    graph: ArchGraph


def _shipped() -> list[str]:
    return sorted(p.name for p in CHECKPOINTS.glob("*") if (p / WEIGHTS_FILE).is_file())


def default_generator() -> str:
    """The generator used when none is named: the first shipped ``ghn-*`` if present."""
    shipped = _shipped()
    preferred = [n for n in shipped if n.startswith("ghn")]
    return (preferred or shipped or [UNTRAINED])[0]


def list_generators() -> list[str]:
    """Names of the generators that ship in ``checkpoints/`` (plus ``untrained``)."""
    return [*_shipped(), UNTRAINED]


def load_generator(generator: Generator = None) -> GraphHyperNetwork | WeightDiffusion:
    """A generator by shipped name, local directory, or instance (returned as is).

    ``"untrained"`` is a randomly initialized network with a fixed seed: its predictions
    already have the right statistics per layer, but no learned structure. A folder whose
    config.json has ``"kind": "weight-diffusion"`` loads a :class:`WeightDiffusion`.
    """
    if isinstance(generator, nn.Module):  # a GraphHyperNetwork or a WeightDiffusion
        return generator
    name = str(generator) if generator is not None else default_generator()
    if name.startswith("hub:"):  # hub:OWNER/NAME[@REVISION]
        from .hub import resolve_generator  # imported here: hub imports this module

        return resolve_generator(name)
    if name == UNTRAINED:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = GraphHyperNetwork()
        model.name_or_path = UNTRAINED
        return model.eval()
    path = Path(name) if Path(name).exists() else CHECKPOINTS / name
    if not path.is_dir():
        raise CheckpointError(
            f"unknown generator {name!r}: give a directory with config.json and "
            f"{WEIGHTS_FILE}, hub:OWNER/NAME[@REVISION], or one of "
            f"{', '.join(list_generators())}")
    if not (path / "config.json").is_file():  # without it a GHN would load default settings
        raise CheckpointError(
            f"{path} has no config.json, so its settings (size, noise, orth) are unknown: a "
            f"generator folder holds config.json and {WEIGHTS_FILE}, as save_pretrained "
            "writes them")
    if _kind(path) == "weight-diffusion":
        from .diffusion import load_diffusion

        return load_diffusion(path)
    try:
        model = GraphHyperNetwork.from_pretrained(str(path))
    except (ValueError, TypeError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{path}: config.json is not a valid generator config: {err}") \
            from err
    model.name_or_path = str(path)
    return model.eval()


def _kind(folder: Path) -> str | None:
    """The ``kind`` in a checkpoint's config.json (None for GHNs, which have none)."""
    try:
        return json.loads((folder / "config.json").read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def generator_id(generator: GraphHyperNetwork) -> str:
    """``name@revision`` for metadata: the folder name and a hash of its weights, and
    ``+orth`` if its predictions are orthogonalized (a config setting, not in the weights),
    so inits, service cache keys and evaluation rows tell the two apart."""
    path = getattr(generator, "name_or_path", "")
    if path == UNTRAINED:
        base = f"{UNTRAINED}@seed0"
    elif path.startswith("hub:"):  # hub:OWNER/NAME@COMMIT_SHA, set by hub.resolve_generator
        base = path
    else:
        base = folder_id(path)
    return base + ("+orth" if getattr(generator.config, "orth", False) else "")


def folder_id(folder: str | Path) -> str:
    """``name@hash`` of a generator folder: its name and the sha256 of its weights (first 12
    hex digits), so a folder retrained in place gets a new id; ``in-memory@unsaved`` if the
    folder has no weights file."""
    weights = Path(folder) / WEIGHTS_FILE
    if weights.is_file():
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
        return f"{Path(folder).name}@{digest}"
    return "in-memory@unsaved"


def _target(arch: Arch, num_classes: int | None, kwargs: dict[str, Any]) -> _Target:
    spec = graphs.resolve(arch, num_classes=num_classes, **kwargs)
    module = spec.build()
    return _Target(spec, module, graphs.build(module, spec.example_inputs(), name=spec.label))


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _buffers(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Persistent buffers with BatchNorm statistics reset to mean 0, variance 1."""
    state = module.state_dict(keep_vars=True)
    params = {n for n, _ in module.named_parameters(remove_duplicate=False)}
    for name, value in state.items():
        if name in params:
            continue
        leaf = name.rpartition(".")[2]
        if leaf in _BN_STATS:
            value = (torch.ones_like(value, device="cpu") if leaf == "running_var"
                     else torch.zeros_like(value, device="cpu"))
        elif value.device.type == "meta":
            raise ValueError(
                f"buffer {name} is on the meta device, so its value is unknown: build the "
                "model with graphs.meta_init() (parameters on meta, buffers real) or on CPU")
        yield name, value.detach()


def resolve_noise(generator: nn.Module, noise: float | None) -> float:
    """The ``noise`` a prediction uses: ``noise`` itself, else the generator's default.

    A GHN's default is its config's ``noise`` (0 unless its card says otherwise); a diffusion
    generator's is 0, as its samples are random already.
    """
    if noise is None:
        noise = generator.config.noise if isinstance(generator, GraphHyperNetwork) else 0.0
    return check_noise(noise)


def _tensors(generator: nn.Module, graph: ArchGraph, seed: int,
             noise: float) -> Iterator[tuple[str, torch.Tensor]]:
    """The generator's tensors, in graph order, with ``noise`` of each weight's variance
    replaced by Gaussian noise: ``sqrt(1 - noise) * w + sqrt(noise) * std(w) * eps``, then
    orthogonalized if the generator was trained so (``GHNConfig.orth``).

    A GHN's prediction is deterministic, so for a GHN the seed only draws ``eps``; a
    diffusion generator's seed also fixes its sampling.
    """
    if isinstance(generator, GraphHyperNetwork):
        stream = generator.iter_tensors(graph)
    else:
        stream = generator.iter_tensors(graph, seed)
    roles = {p.name: p.role for p in graph.params}
    orth = orth_names(graph) if getattr(generator.config, "orth", False) else set()
    rng = torch.Generator().manual_seed(int(seed))
    for name, tensor in stream:
        yield name, finish(tensor, roles[name], noise, rng, orth=name in orth, inplace=True)


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


def _stream(target: _Target, generator: GraphHyperNetwork, seed: int, noise: float,
            dtype: torch.dtype | None) -> tuple[list[TensorInfo], Iterator]:
    """Header infos and a lazy stream of every state-dict entry but tied aliases (each tied
    tensor once, under its first name; :func:`tied_aliases` names the others), then the
    buffers.

    The stream runs without autograd wherever it is consumed (a generator function runs
    its body when iterated, outside any ``no_grad`` around this call)."""
    infos = [TensorInfo(p.name, p.shape, dtype or getattr(torch, p.dtype))
             for p in target.graph.params]
    buffers = list(_buffers(target.module))
    for name, value in buffers:
        cast = dtype if dtype is not None and value.is_floating_point() else value.dtype
        infos.append(TensorInfo(name, tuple(value.shape), cast))

    @torch.no_grad()
    def cast():
        tensors = itertools.chain(_tensors(generator, target.graph, seed, noise), buffers)
        for info, (name, tensor) in zip(infos, tensors, strict=True):
            yield name, tensor.to(info.dtype)

    return infos, cast()


def tied_aliases(graph: ArchGraph) -> dict[str, str]:
    """``{alias: name}`` for every tied parameter name but the first, which holds the
    tensor; files carry it in their metadata, as ``huggingface_hub`` writes shared tensors
    (``hyperinit.safetensors_io.read_state`` and ``safetensors.torch.load_model`` restore
    the ties)."""
    return {alias: p.name for p in graph.params for alias in p.tied}


def predict_state_dict(arch: Arch, generator: Generator = None, *, seed: int = 0,
                       noise: float | None = None, num_classes: int | None = None,
                       dtype: str | torch.dtype | None = None,
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
    """
    seed = check_seed(seed)
    target = _target(arch, num_classes, kwargs)
    ghn = load_generator(generator)
    _, stream = _stream(target, ghn, seed, resolve_noise(ghn, noise), _dtype(dtype))
    state = OrderedDict(stream)
    state.update({alias: state[name] for alias, name in tied_aliases(target.graph).items()})
    # Module versions, as in model.state_dict(): some modules (MNASNet) refuse to load without.
    state._metadata = target.module.state_dict()._metadata
    return state


def predict(arch: Arch, generator: Generator = None, *, seed: int = 0,
            noise: float | None = None, num_classes: int | None = None,
            calibration: Any = None, **kwargs: Any) -> nn.Module:
    """A model whose parameters come from the generator, ready to train.

    A module built on ``meta`` is materialized on CPU; a real module is filled in place.
    Tied parameters stay tied. BatchNorm statistics are reset, or, if ``calibration``
    (an iterable of input batches) is given, re-estimated on those batches. ``seed`` and
    ``noise`` are those of :func:`predict_state_dict`.
    """
    seed = check_seed(seed)
    target = _target(arch, num_classes, kwargs)
    model = target.module
    ghn = load_generator(generator)
    aliases = {p.name: p.tied for p in target.graph.params}
    with torch.no_grad():
        for name, tensor in _tensors(ghn, target.graph, seed, resolve_noise(ghn, noise)):
            old = model.get_parameter(name)
            if old.device.type == "meta":
                new = nn.Parameter(tensor.to(old.dtype), requires_grad=old.requires_grad)
                for alias in (name, *aliases[name]):
                    owner, _, leaf = alias.rpartition(".")
                    setattr(model.get_submodule(owner), leaf, new)
            else:
                old.copy_(tensor)
        for name, value in _buffers(model):
            owner, _, leaf = name.rpartition(".")
            module = model.get_submodule(owner)
            if leaf in _BN_STATS:
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


def metadata(target: _Target, generator: GraphHyperNetwork, seed: int,
             noise: float) -> dict[str, str]:
    """The safetensors metadata of ARCHITECTURE.md's conventions, and the tied aliases."""
    return {
        **tied_aliases(target.graph),
        "format": "pt",
        "hyperinit.version": __version__,
        "hyperinit.generator": generator_id(generator),
        "hyperinit.arch": target.spec.to_json(),
        "hyperinit.arch_hash": target.graph.arch_hash,
        "hyperinit.seed": str(seed),
        "hyperinit.noise": str(noise),
    }


def save_init(arch: Arch, path: str | os.PathLike, generator: Generator = None, *,
              seed: int = 0, noise: float | None = None, num_classes: int | None = None,
              dtype: str | torch.dtype | None = None,
              max_shard_size: int = DEFAULT_MAX_SHARD_SIZE, **kwargs: Any) -> list[Path]:
    """Predict an init and stream it to safetensors; returns the files written.

    ``path`` ending in ``.safetensors`` gives one file; any other path is a folder that
    gets ``model.safetensors`` or, above ``max_shard_size`` bytes, shards and
    ``model.safetensors.index.json``. A folder is replaced whole: one that exists must be
    empty or hold a previous init only (no stale shard or index survives). Tensors are
    written as they are predicted, so peak memory is about the largest tensor, not the
    model. Nothing is left behind on failure (a full disk raises ``DiskFullError``).
    ``seed`` and ``noise`` are those of :func:`predict_state_dict`.
    """
    seed, max_shard_size = check_seed(seed), check_max_shard_size(max_shard_size)
    path = check_output_path(path)
    check_target(path)  # fail before doing any work
    target = _target(arch, num_classes, kwargs)
    ghn = load_generator(generator)
    noise = resolve_noise(ghn, noise)
    infos, stream = _stream(target, ghn, seed, noise, _dtype(dtype))
    return write_state(path, infos, stream, metadata(target, ghn, seed, noise), max_shard_size)
