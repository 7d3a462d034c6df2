"""Computational graphs of neural architectures: any ``nn.Module`` -> :class:`ArchGraph`.

``resolve`` turns a name into an :class:`ArchSpec`; ``build`` traces a model (on the meta
device, weights untouched) into a graph; ``ArchGraph.to_data`` gives the PyG ``Data``
that generators read.
"""

from .errors import (
    ArchitectureTooLargeError,
    GraphBuildError,
    PartialGraphWarning,
    UnknownArchitectureError,
)
from .extract import build
from .graph import DISTANCE_CUTOFF, ROLES, ArchGraph, Node, ParamSpec
from .meta import meta_init
from .size import DEFAULT_MAX_PARAMS, check_size
from .specs import ArchSpec, resolve
from .vocab import OPS

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
