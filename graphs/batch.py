"""Batches of architecture graphs in the layout graph encoders read, without PyG.

``torch_geometric.data.Batch.from_data_list`` of :meth:`ArchGraph.to_data` gives the same
fields, but importing ``torch_geometric`` takes seconds (it loads ``torch._dynamo``, its
datasets and ``transformers``), longer than predicting a ResNet. Prediction batches one
graph or a few, so generators batch with :class:`GraphBatch` instead.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from .graph import ArchGraph

INDEX_FIELDS = ("edge_index", "dist_index")  # node indices: shifted by each graph's offset


@dataclass(frozen=True)
class GraphBatch:
    """The tensors of :meth:`ArchGraph.tensors` of several graphs, concatenated.

    Nodes are numbered across the batch; ``batch`` maps each node to its graph and ``ptr``
    holds where each graph's nodes start (``num_graphs + 1`` entries), as in PyG.
    """

    op: torch.Tensor
    shape: torch.Tensor
    attr: torch.Tensor
    edge_index: torch.Tensor
    in_degree: torch.Tensor
    out_degree: torch.Tensor
    depth: torch.Tensor
    dist_index: torch.Tensor
    dist: torch.Tensor
    batch: torch.Tensor
    ptr: torch.Tensor

    @classmethod
    def from_graphs(cls, graphs: list[ArchGraph]) -> GraphBatch:
        """One batch of ``graphs``, in order."""
        parts = [g.tensors() for g in graphs]
        counts = torch.tensor([g.num_nodes for g in graphs])
        ptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        starts = ptr[:-1].tolist()
        joined = {}
        for key in parts[0]:
            if key in INDEX_FIELDS:
                shifted = [p[key] + start for p, start in zip(parts, starts, strict=True)]
                joined[key] = torch.cat(shifted, dim=1)
            else:
                joined[key] = torch.cat([p[key] for p in parts])
        batch = torch.repeat_interleave(torch.arange(len(graphs)), counts)
        return cls(**joined, batch=batch, ptr=ptr)

    def to(self, device: torch.device | str) -> GraphBatch:
        return GraphBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})
