"""An architecture's size (parameters and modules), checked against limits before it is built.

Sizes come from requests and downloaded configs, so they can be anything: building a
declared size just to count it would let a config with a million layers fill memory, or
hold a thread for minutes with a million tiny ones. :func:`check_size` stays fast for any
declared size:

* A ``transformers`` config with layer counts above 3 (``num_hidden_layers``, ``n_layer``,
  ``encoder_layers``, ... in :data:`LAYER_COUNTS`) is built on ``meta`` with those counts at
  1, and with each in turn at 2 and 3. If both steps add the same parameters and modules,
  the stack is uniform and the counts extend linearly to the declared layer counts: exact
  for uniform stacks and a few milliseconds whatever the size. A model small enough to
  build quickly (at most :data:`EXACT_MODULES` modules by that count) is then built in full,
  so its count is exact whatever its stack.
* Anything else (torchvision, timm, stacks that are not uniform) is built once on ``meta``,
  stopped as soon as it registers :data:`MAX_MODULES` modules, or more real (not ``meta``)
  tensor elements than the parameter limit (:func:`construction_budget`).

Tied parameters count once, as ``module.parameters()`` yields a shared tensor once: a GPT-2
whose output layer is its input embedding counts that matrix once.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules import module as torch_module

from .errors import ArchitectureTooLargeError, GraphBuildError, UnknownArchitectureError
from .specs import ArchSpec, hf_config, hf_model

DEFAULT_MAX_PARAMS = 2_000_000_000
# The largest real models within DEFAULT_MAX_PARAMS have a few thousand modules (GPT-2 XL
# 632, a 70B Llama 1,047); building 10,000 on meta takes seconds, and a generator's graph of
# more would not fit in memory anyway.
MAX_MODULES = 10_000
EXACT_MODULES = 2_000  # a model this small is built in full: well under a second
# Config attributes that count the blocks of a stack, in transformers' spellings.
LAYER_COUNTS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "encoder_layers",
                "decoder_layers", "num_encoder_layers", "num_decoder_layers")


@dataclass(frozen=True)
class Size:
    """Scalar parameters (tied ones once) and modules of an architecture."""

    params: int
    modules: int
    extrapolated: bool = False  # from 1- to 3-layer builds of a uniform stack

    def __add__(self, other: Size) -> Size:
        return Size(self.params + other.params, self.modules + other.modules,
                    self.extrapolated or other.extrapolated)

    def __sub__(self, other: Size) -> Size:
        return Size(self.params - other.params, self.modules - other.modules)

    def __mul__(self, factor: int) -> Size:
        return Size(self.params * factor, self.modules * factor)


class OverBudget(Exception):
    """A model being built registered more tensor elements or modules than allowed.

    Not a ``ValueError``, so ``ArchSpec.build`` lets it through instead of wrapping it.
    """


def check_size(spec: ArchSpec, max_params: int = DEFAULT_MAX_PARAMS) -> int:
    """The parameter count of ``spec`` (tied ones once), checked before it is built.

    Raises:
        ArchitectureTooLargeError: more than ``max_params`` parameters or
            :data:`MAX_MODULES` modules; the message names the count and the limits.
        GraphBuildError: the constructor or config rejects the spec's options.
    """
    limit = f"{max_params:,} parameters and {MAX_MODULES:,} modules"
    try:
        size = measure(spec, max_params)
    except OverBudget:
        raise ArchitectureTooLargeError(
            f"{spec.label} with options {spec.kwargs} is over the limit of {limit} (counting "
            "stopped while building it)") from None
    if size.params > max_params or size.modules > MAX_MODULES:
        how = " (extrapolated from 1- to 3-layer builds)" if size.extrapolated else ""
        raise ArchitectureTooLargeError(
            f"{spec.label} with options {spec.kwargs} has {size.params:,} parameters in "
            f"{size.modules:,} modules{how}; the limit is {limit}")
    return size.params


def measure(spec: ArchSpec, max_params: int) -> Size:
    """The size of ``spec`` as the module docstring describes; :class:`OverBudget` if a build
    passes :data:`MAX_MODULES` modules or ``max_params`` elements of real tensors."""
    estimate = _extrapolated(spec, max_params) if spec.source == "hf" else None
    if estimate is not None and (estimate.modules > EXACT_MODULES
                                 or estimate.params > max_params):
        return estimate
    return _count(spec.build, spec, max_params)


def _extrapolated(spec: ArchSpec, max_params: int) -> Size | None:
    """The size from 1- to 3-layer builds, or None if the config has no layer count above 3,
    a small build fails, or the stack is not uniform."""
    try:
        config = hf_config(spec)
    except Exception:  # the full build reports what is wrong with the config
        return None
    aliases = getattr(config, "attribute_map", {})  # GPT-2: num_hidden_layers -> n_layer
    declared = {aliases.get(name, name): value for name in LAYER_COUNTS
                if type(value := getattr(config, name, None)) is int and value > 3}
    if not declared:
        return None
    wants_classes = "num_labels" in spec.kwargs

    def size_with(layers: dict[str, int]) -> Size:
        variant = _with_layers(config, declared, layers)
        return _count(lambda: hf_model(variant, wants_classes), spec, max_params)

    ones = dict.fromkeys(declared, 1)
    try:
        base = size_with(ones)
        estimate = base
        for name, count in declared.items():
            two, three = size_with({**ones, name: 2}), size_with({**ones, name: 3})
            if three - two != two - base:
                return None
            estimate = estimate + (two - base) * (count - 1)
    except GraphBuildError:
        return None
    return Size(estimate.params, estimate.modules, extrapolated=True)


def _with_layers(config, declared: dict[str, int], layers: dict[str, int]):
    """A copy of ``config`` with other layer counts; per-layer lists (``layer_types``) that
    have a declared count's length are cut to the new count."""
    variant = copy.deepcopy(config)
    for name, count in layers.items():
        per_layer = {attr: value[:count] for attr, value in vars(variant).items()
                     if isinstance(value, list) and len(value) == declared[name]}
        for attr, value in {**per_layer, name: count}.items():
            setattr(variant, attr, value)
    return variant


def _count(build: Callable[[], nn.Module], spec: ArchSpec, max_params: int) -> Size:
    """Size of the module ``build`` makes, everything on ``meta`` so even a classifier with
    10**9 classes costs nothing. A few models compute buffers from data at construction
    (torchvision's RegNets); they are built the ordinary way (``ArchSpec.build``: parameters
    on ``meta``, buffers real). Either build runs under :func:`construction_budget`."""
    try:
        try:
            with construction_budget(max_params), torch.device("meta"):
                module = build()
        except (NotImplementedError, RuntimeError):
            with construction_budget(max_params):
                module = build()
    except (GraphBuildError, UnknownArchitectureError, OverBudget):
        raise
    except Exception as err:  # any constructor failure comes from the spec's options
        raise GraphBuildError(f"cannot build {spec.label} with options {spec.kwargs}: "
                              f"{type(err).__name__}: {err}") from err
    return Size(sum(p.numel() for p in module.parameters()),
                sum(1 for _ in module.modules()))


_budget = threading.local()  # .elements, .modules left and .seen tensors of this thread
_hooks_lock = threading.Lock()
_hooks: list = []


def _charge(tensor: torch.Tensor | None, modules: int) -> None:
    if getattr(_budget, "seen", None) is None:
        return  # not building under a budget in this thread
    if tensor is not None and not tensor.is_meta and id(tensor) not in _budget.seen:
        _budget.seen[id(tensor)] = tensor  # held, so its id is not reused meanwhile
        _budget.elements -= tensor.numel()
    _budget.modules -= modules
    if _budget.elements < 0 or _budget.modules < 0:
        raise OverBudget


def _on_tensor(module, name, tensor) -> None:
    _charge(tensor, 0)


def _on_module(module, name, submodule) -> None:
    if submodule is not None:
        _charge(None, 1)


@contextmanager
def construction_budget(elements: int, modules: int = MAX_MODULES) -> Iterator[None]:
    """Raise :class:`OverBudget` as soon as models built in this thread register more than
    ``modules`` submodules, or real tensors of more than ``elements`` elements (each tensor
    once). Tensors on ``meta`` cost nothing, so they are free; what is built for real
    (buffers computed at construction, a constructor that cannot run on ``meta``) is not.

    Uses torch's global registration hooks (installed once), which charge only threads
    inside this context.
    """
    with _hooks_lock:
        if not _hooks:
            _hooks.extend([
                torch_module.register_module_parameter_registration_hook(_on_tensor),
                torch_module.register_module_buffer_registration_hook(_on_tensor),
                torch_module.register_module_module_registration_hook(_on_module),
            ])
    _budget.elements, _budget.modules, _budget.seen = elements, modules, {}
    try:
        yield
    finally:
        _budget.seen = None
