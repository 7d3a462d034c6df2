"""`ArchGraph`: the computational graph of one architecture, and what a graph encoder needs."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path

from .vocab import OP_INDEX

# Paths longer than this are treated as "far" (GHN-3 uses the same cutoff).
DISTANCE_CUTOFF = 50
# Parameter roles: how a decoder should produce and scale a tensor. Order is part of the
# generator checkpoint format: append only.
ROLES: tuple[str, ...] = (
    "weight",
    "bias",
    "norm_weight",
    "norm_bias",
    "embedding",
    "pos_embedding",
    "token",
    "scale",
    "other",
)
ROLE_INDEX = {name: i for i, name in enumerate(ROLES)}
# Node attributes kept as features, in this order.
ATTRS: tuple[str, ...] = ("stride", "padding", "dilation", "groups", "transposed")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter tensor: its state-dict key, owner node, role and shape.

    ``tied`` lists the other state-dict keys that name the same tensor (weight tying).
    ``in_out`` marks a matrix stored as ``(in_features, out_features)``, as in transformers'
    ``Conv1D`` (GPT-2), instead of PyTorch's ``(out, in)``: generators build it in the
    ``(out, in)`` layout (:attr:`out_in_shape`) and transpose, so its fan-in is right and it
    looks like any other linear layer.
    """

    name: str
    node: int
    role: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    tied: tuple[str, ...] = ()
    in_out: bool = False

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def out_in_shape(self) -> tuple[int, ...]:
        """The shape in PyTorch's ``(out, in)`` layout (``shape`` reversed when ``in_out``)."""
        return self.shape[::-1] if self.in_out else self.shape


@dataclass(frozen=True)
class Node:
    """One operation. ``attrs`` holds integer hyperparameters (stride, groups, …)."""

    name: str
    op: str
    attrs: dict[str, int] = field(default_factory=dict)
    params: tuple[int, ...] = ()  # indices into ArchGraph.params
    torch_op: str = ""  # the autograd function behind it, for generic nodes and drawing


@dataclass
class ArchGraph:
    """A directed acyclic graph of operations, in canonical topological order.

    Node 0 is the input. Every trainable parameter of the model appears once in ``params``
    and is owned by exactly one node. ``unrecognized`` counts autograd functions that fell
    outside the vocabulary (they became ``generic`` nodes); ``folded`` counts layout ops
    merged into edges; ``unused`` names parameters the forward pass never touched (owned by
    ``unused`` nodes).
    """

    nodes: list[Node]
    edges: list[tuple[int, int]]
    params: list[ParamSpec]
    name: str = ""
    unrecognized: dict[str, int] = field(default_factory=dict)
    folded: int = 0
    unused: list[str] = field(default_factory=list)

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def num_params(self) -> int:
        """Number of scalar parameters (tied tensors counted once)."""
        return sum(p.numel for p in self.params)

    def param_names(self) -> list[str]:
        """Every state-dict key of a parameter, tied aliases included."""
        return [n for p in self.params for n in (p.name, *p.tied)]

    # ----- structure -------------------------------------------------------------------
    @cached_property
    def _adjacency(self) -> csr_matrix:
        n = self.num_nodes
        if not self.edges:
            return csr_matrix((n, n), dtype=np.int8)
        src, dst = np.asarray(self.edges, dtype=np.int64).T
        return csr_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))

    @cached_property
    def distances(self) -> np.ndarray:
        """``distances[i, j]``: forward shortest-path length i -> j, clipped to the cutoff.

        0 on the diagonal, ``DISTANCE_CUTOFF + 1`` where j is unreachable or too far.
        The backward distances are the transpose.
        """
        dist = shortest_path(self._adjacency, method="D", directed=True, unweighted=True)
        dist[~np.isfinite(dist)] = DISTANCE_CUTOFF + 1
        return np.minimum(dist, DISTANCE_CUTOFF + 1).astype(np.int16)

    @cached_property
    def in_degree(self) -> np.ndarray:
        return np.asarray(self._adjacency.sum(axis=0)).ravel().astype(np.int64)

    @cached_property
    def out_degree(self) -> np.ndarray:
        return np.asarray(self._adjacency.sum(axis=1)).ravel().astype(np.int64)

    @cached_property
    def depth(self) -> np.ndarray:
        """Shortest distance from the input node (cutoff-clipped)."""
        return self.distances[0].astype(np.int64)

    # ----- identity --------------------------------------------------------------------
    def canonical(self) -> dict[str, Any]:
        """Structure only (no names, values or dtypes): what the architecture *is*."""
        return {
            "nodes": [
                [n.op, sorted(n.attrs.items()), [[self.params[i].role, list(self.params[i].shape)]
                                                 for i in n.params]]
                for n in self.nodes
            ],
            "edges": [list(e) for e in self.edges],
        }

    @cached_property
    def arch_hash(self) -> str:
        """Stable 16-hex-digit hash of :meth:`canonical`, identical across processes."""
        blob = json.dumps(self.canonical(), separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # ----- conversions -----------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """The features a graph transformer reads, by name.

        ``op`` (op-type index), ``shape`` (the node's main weight shape padded to 4 dims),
        ``attr`` (:data:`ATTRS`), ``edge_index``, ``in_degree``, ``out_degree``, ``depth``
        and the sparse forward distances ``dist_index``/``dist`` (pairs within the cutoff).
        Many graphs batch with ``graphs.batch.GraphBatch``.
        """
        d = self.distances
        src, dst = np.nonzero((d > 0) & (d <= DISTANCE_CUTOFF))
        return {
            "op": torch.tensor([OP_INDEX[n.op] for n in self.nodes], dtype=torch.long),
            "shape": torch.tensor([self._main_shape(n) for n in self.nodes], dtype=torch.long),
            "attr": torch.tensor([[n.attrs.get(a, 0) for a in ATTRS] for n in self.nodes],
                                 dtype=torch.long),
            "edge_index": torch.tensor(self.edges, dtype=torch.long).reshape(-1, 2).t()
                          .contiguous(),
            "in_degree": torch.from_numpy(self.in_degree),
            "out_degree": torch.from_numpy(self.out_degree),
            "depth": torch.from_numpy(self.depth),
            "dist_index": torch.from_numpy(np.stack([src, dst]).astype(np.int64)),
            "dist": torch.from_numpy(d[src, dst].astype(np.int64)),
        }

    def to_data(self):
        """:meth:`tensors` as a ``torch_geometric.data.Data``, for PyG users (many graphs
        batch with ``torch_geometric.data.Batch``)."""
        from .pyg import Data

        return Data(**self.tensors(), num_nodes=self.num_nodes)

    def _main_shape(self, node: Node) -> list[int]:
        shapes = [self.params[i].out_in_shape for i in node.params]
        if not shapes:
            return [0, 0, 0, 0]
        main = max(shapes, key=len)
        return (list(main) + [1, 1, 1, 1])[:4] if len(main) <= 4 else [*main[:3], int(
            np.prod(main[3:]))]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description: nodes, edges, parameters and the hash."""
        return {
            "name": self.name,
            "arch_hash": self.arch_hash,
            "num_params": self.num_params,
            "nodes": [
                {"name": n.name, "op": n.op, "attrs": n.attrs, "torch_op": n.torch_op,
                 "params": [self.params[i].name for i in n.params]}
                for n in self.nodes
            ],
            "edges": [list(e) for e in self.edges],
            "params": [
                {"name": p.name, "node": p.node, "role": p.role, "shape": list(p.shape),
                 "dtype": p.dtype, "tied": list(p.tied), "in_out": p.in_out}
                for p in self.params
            ],
            "unrecognized": self.unrecognized,
            "folded_layout_ops": self.folded,
            "unused_params": self.unused,
        }

    def summary(self) -> str:
        """A few human-readable lines: size, node types, unrecognized ops."""
        ops = Counter(n.op for n in self.nodes)
        lines = [
            f"{self.name or 'model'}: {self.num_nodes} nodes, {len(self.edges)} edges, "
            f"{len(self.params)} parameter tensors ({self.num_params:,} parameters), "
            f"arch_hash {self.arch_hash}",
            "nodes by type: " + ", ".join(f"{op} {c}" for op, c in ops.most_common()),
            f"layout ops folded into edges: {self.folded}",
        ]
        if self.unrecognized:
            lines.append("unrecognized ops (generic nodes): " + ", ".join(
                f"{k} x{v}" for k, v in sorted(self.unrecognized.items())))
        else:
            lines.append("unrecognized ops: none")
        if self.unused:
            lines.append(f"parameters not used by forward: {', '.join(self.unused)}")
        return "\n".join(lines)
