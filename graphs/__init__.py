"""Computational graphs of neural architectures: any ``nn.Module`` -> :class:`ArchGraph`.

``resolve`` turns a name into an :class:`ArchSpec`; ``build`` traces a model (on the meta
device, weights untouched) into a graph; ``ArchGraph.to_data`` gives the PyG ``Data``
that generators read.

The names below load on first use: the errors import nothing, so the ``hyperinit``
command can name them without importing torch.
"""

import importlib
from typing import Any

from .errors import (
    ArchitectureTooLargeError,
    GraphBuildError,
    PartialGraphWarning,
    UnknownArchitectureError,
)

# Public name -> the submodule that defines it.
_LAZY = {
    "build": "extract",
    "DISTANCE_CUTOFF": "graph", "ROLES": "graph", "ArchGraph": "graph", "Node": "graph",
    "ParamSpec": "graph",
    "meta_init": "meta",
    "DEFAULT_MAX_PARAMS": "size", "check_size": "size",
    "ArchSpec": "specs", "resolve": "specs",
    "OPS": "vocab",
}


def __getattr__(name: str) -> Any:
    """Import the submodule behind a public name when the name is first used."""
    if name not in _LAZY:
        raise AttributeError(f"module 'graphs' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "DEFAULT_MAX_PARAMS",
    "DISTANCE_CUTOFF",
    "OPS",
    "ROLES",
    "ArchGraph",
    "ArchitectureTooLargeError",
    "ArchSpec",
    "GraphBuildError",
    "Node",
    "ParamSpec",
    "PartialGraphWarning",
    "UnknownArchitectureError",
    "build",
    "check_size",
    "meta_init",
    "resolve",
]
