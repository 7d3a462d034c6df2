"""Computational graphs of neural architectures: any ``nn.Module`` -> :class:`ArchGraph`.

``resolve`` turns a name into an :class:`ArchSpec`; ``build`` traces a model (on the meta
device, weights untouched) into a graph; ``ArchGraph.to_data`` gives the PyG ``Data``
that generators read.

The names below load on first use: the errors import nothing, so the ``hyperinit``
command can name them without importing torch.
"""

from .errors import (
    ArchitectureTooLargeError,
    GraphBuildError,
    PartialGraphWarning,
    UnknownArchitectureError,
)
from .lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


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
