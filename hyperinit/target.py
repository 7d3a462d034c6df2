"""The architecture a prediction is for: its spec, module and graph, and its buffers.

Every way of making an init (``hyperinit.predict``, ``hyperinit.sample``, the Hub's
``from_hub``) resolves the architecture, casts to a named dtype and resets BatchNorm
statistics the same way; this module is that one way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import graphs
from graphs import ArchGraph, ArchSpec

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
BN_STATS = ("running_mean", "running_var", "num_batches_tracked")

Arch = str | dict | ArchSpec | nn.Module


@dataclass
class Target:
    """A resolved architecture: its spec, the built module and its graph."""

    spec: ArchSpec
    module: nn.Module
    graph: ArchGraph


def resolve_target(arch: Arch, num_classes: int | None, kwargs: dict[str, Any]) -> Target:
    """Resolve ``arch`` (spec string, dict, spec or module), build it and trace its graph;
    ``num_classes`` and ``kwargs`` go to the constructor or the ``transformers`` config."""
    spec = graphs.resolve(arch, num_classes=num_classes, **kwargs)
    module = spec.build()
    return Target(spec, module, graphs.build(module, spec.example_inputs(), name=spec.label))


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A ``torch.dtype`` from its name (``"float32"``, ``"float16"``, ``"bfloat16"``)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def reset_buffers(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Persistent buffers with BatchNorm statistics reset to mean 0, variance 1."""
    state = module.state_dict(keep_vars=True)
    params = {n for n, _ in module.named_parameters(remove_duplicate=False)}
    for name, value in state.items():
        if name in params:
            continue
        leaf = name.rpartition(".")[2]
        if leaf in BN_STATS:
            value = (torch.ones_like(value, device="cpu") if leaf == "running_var"
                     else torch.zeros_like(value, device="cpu"))
        elif value.device.type == "meta":
            raise ValueError(
                f"buffer {name} is on the meta device, so its value is unknown: build the "
                "model with graphs.meta_init() (parameters on meta, buffers real) or on CPU")
        yield name, value.detach()
