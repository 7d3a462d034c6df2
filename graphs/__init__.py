"""Computational graphs of neural architectures: any ``nn.Module`` -> :class:`ArchGraph`.

``resolve`` turns a name into an :class:`ArchSpec`; ``build`` traces a model (on the meta
device, weights untouched) into a graph; ``ArchGraph.to_data`` gives the PyG ``Data``
that generators read.
"""

from .errors import GraphBuildError, PartialGraphWarning, UnknownArchitectureError
from .extract import build
from .graph import DISTANCE_CUTOFF, ROLES, ArchGraph, Node, ParamSpec
from .meta import meta_init
from .specs import ArchSpec, resolve
from .vocab import OPS

__all__ = [
    "DISTANCE_CUTOFF",
    "OPS",
    "ROLES",
    "ArchGraph",
    "ArchSpec",
    "GraphBuildError",
    "Node",
    "ParamSpec",
    "PartialGraphWarning",
    "UnknownArchitectureError",
    "build",
    "meta_init",
    "resolve",
]
