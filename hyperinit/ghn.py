"""The graph hypernetwork: architecture graph in, every parameter tensor out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from graphs import ArchGraph

from .decoder import LowRankDecoder
from .encoder import GraphEncoder
from .generator import Generator, PredictDefaults, TaskLike


@dataclass
class GHNConfig:
    """Size of a graph hypernetwork. The defaults are GHN-3-T-like (hidden 64, 3 layers;
    9.5M parameters, most of them the decoder's factor head).

    ``rank`` is the rank of every predicted matrix; ``features`` the number of row/column
    indices with their own row of the low-rank factors (wider dimensions mix them);
    ``decoder`` the basis those rows are built in (``hyperinit.decoder.BASES``). A
    config.json without ``decoder`` was written by hyperinit 0.2, whose decoder was
    ``"fourier"``, and loads as such. A checkpoint's ``noise`` and ``orth`` are not sizes:
    they are its :class:`~hyperinit.generator.PredictDefaults`.
    """

    hidden: int = 64
    layers: int = 3
    heads: int = 8
    rank: int = 32
    features: int = 512
    decoder: str = "index"


class GraphHyperNetwork(Generator):
    """GHN-3-style encoder + LoGAH-style low-rank decoder.

    ``forward`` is differentiable (used for training through ``torch.func.functional_call``);
    :meth:`iter_tensors` streams tensors one at a time for large targets. The prediction is
    deterministic: randomness (``hyperinit.predict``'s ``seed`` and ``noise``) is added by
    the caller.
    """

    kind = "graph-hypernetwork"
    config_class = GHNConfig
    untasked = "a graph hypernetwork, which predicts from the architecture alone"

    def __init__(self, config: GHNConfig | None = None,
                 defaults: PredictDefaults | None = None) -> None:
        super().__init__(config, defaults)
        config = self.config
        self.encoder = GraphEncoder(config.hidden, config.layers, config.heads)
        self.decoder = LowRankDecoder(config.hidden, config.rank, config.features,
                                      config.decoder)

    @classmethod
    def config_from_dict(cls, config: dict[str, Any]) -> GHNConfig:
        return GHNConfig(**{"decoder": "fourier", **config})

    def iter_tensors(self, graph: ArchGraph, seed: int = 0, task: TaskLike | None = None,
                     ) -> Iterator[tuple[str, torch.Tensor]]:
        """Every parameter of ``graph`` in graph order; ``seed`` is unused (deterministic).
        A GHN takes no task: one raises :class:`~hyperinit.errors.TaskError`."""
        if task is not None:
            self.task_vector(task)  # raises, saying what is accepted
        (node_emb,) = self.embed([graph])
        yield from self.decode(graph, node_emb)

    def decode(self, graph: ArchGraph, node_emb: torch.Tensor,
               ) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, tensor)`` of every parameter of ``graph`` from its node embeddings."""
        params = graph.params
        hidden = self.decoder.hidden(node_emb[[p.node for p in params]], [p.role for p in params],
                                     [p.out_in_shape for p in params])
        uv, vector, log_gain = self.decoder.heads(hidden)
        for i, p in enumerate(params):
            yield p.name, self.decoder.tensor(uv[i], vector[i], log_gain[i], p.role,
                                              p.out_in_shape, transposed=p.in_out)

    def forward(self, graphs: list[ArchGraph]) -> list[dict[str, torch.Tensor]]:
        """Predicted parameters of each graph (tied names map to the same tensor)."""
        out = []
        for graph, emb in zip(graphs, self.embed(graphs), strict=True):
            tensors = dict(self.decode(graph, emb))
            for p in graph.params:
                tensors.update(dict.fromkeys(p.tied, tensors[p.name]))
            out.append(tensors)
        return out
