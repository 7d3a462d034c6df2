"""The graph hypernetwork: architecture graph in, every parameter tensor out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from graphs import ArchGraph
from graphs.batch import GraphBatch

from .checkpoint import WEIGHTS_FILE, checkpoint_file, load_weights_strictly
from .decoder import LowRankDecoder
from .encoder import GraphEncoder
from .safetensors_io import usual_permissions


@dataclass
class GHNConfig:
    """Size of a graph hypernetwork. The defaults are GHN-3-T-like (hidden 64, 3 layers;
    9.5M parameters, most of them the decoder's factor head).

    ``rank`` is the rank of every predicted matrix; ``features`` the number of row/column
    indices with their own row of the low-rank factors (wider dimensions mix them);
    ``decoder`` the basis those rows are built in (``hyperinit.decoder.BASES``). A
    config.json without ``decoder`` was written by hyperinit 0.2, whose decoder was
    ``"fourier"``, and loads as such.

    ``noise`` is not part of the network: it is the default of ``hyperinit.predict``'s
    ``noise`` for this generator (the fraction of each weight's variance drawn at random),
    chosen per checkpoint on training-pool architectures and written to its config.json.
    ``orth`` says the network was trained through ``hyperinit.predict.orthogonalize``:
    its predictions are orthogonalized after the noise, every weight but the head.
    """

    hidden: int = 64
    layers: int = 3
    heads: int = 8
    rank: int = 32
    features: int = 512
    decoder: str = "index"
    noise: float = 0.0
    orth: bool = False


class GraphHyperNetwork(nn.Module, PyTorchModelHubMixin, library_name="hyperinit",
                        tags=["hyperinit", "graph-hypernetwork"]):
    """GHN-3-style encoder + LoGAH-style low-rank decoder.

    ``forward`` is differentiable (used for training through ``torch.func.functional_call``);
    :meth:`iter_tensors` streams tensors one at a time for large targets.
    """

    def __init__(self, config: GHNConfig | dict | None = None) -> None:
        super().__init__()
        if isinstance(config, dict):  # as read back from config.json
            config = GHNConfig(**{"decoder": "fourier", **config})
        self.config = config = config or GHNConfig()
        self.encoder = GraphEncoder(config.hidden, config.layers, config.heads)
        self.decoder = LowRankDecoder(config.hidden, config.rank, config.features,
                                      config.decoder)

    def embed(self, graphs: list[ArchGraph]) -> list[torch.Tensor]:
        """Node embeddings, one ``(nodes, hidden)`` tensor per graph."""
        device = next(self.parameters()).device
        batch = GraphBatch.from_graphs(list(graphs)).to(device)
        return list(self.encoder(batch).split([g.num_nodes for g in graphs]))

    def iter_tensors(self, graph: ArchGraph, node_emb: torch.Tensor | None = None,
                     ) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(name, tensor)`` for every parameter of ``graph``, in graph order.

        The prediction is deterministic: randomness (``hyperinit.predict``'s ``seed`` and
        ``noise``) is added by the caller.
        """
        if node_emb is None:
            (node_emb,) = self.embed([graph])
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
            tensors = dict(self.iter_tensors(graph, emb))
            for p in graph.params:
                tensors.update(dict.fromkeys(p.tied, tensors[p.name]))
            out.append(tensors)
        return out

    def _save_pretrained(self, save_directory: Path) -> None:
        super()._save_pretrained(save_directory)
        usual_permissions(save_directory / WEIGHTS_FILE)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir, force_download,
                         local_files_only, token, map_location: str = "cpu", strict: bool = True,
                         **model_kwargs):
        """Load safetensors weights only (never a pickle), strictly, with clear errors."""
        model = cls(**model_kwargs)
        path = checkpoint_file(model_id, WEIGHTS_FILE, f"config.json + {WEIGHTS_FILE}",
                               revision=revision, cache_dir=cache_dir,
                               force_download=force_download, token=token,
                               local_files_only=local_files_only)
        load_weights_strictly(model, path, model_id, map_location)
        return model

