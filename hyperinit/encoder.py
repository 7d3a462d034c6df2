"""GHN-3-style graph transformer: node embeddings of an architecture graph.

Each node starts from embeddings of its op type, its main parameter shape, its conv/pool
attributes, its in/out degree and its distance from the input. Pre-LayerNorm transformer
blocks then attend over all nodes of the same graph, with a per-head attention bias learned
from the forward and the backward shortest-path distance between the two nodes (Graphormer).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from graphs import DISTANCE_CUTOFF
from graphs.graph import ATTRS

# Embedding tables have spare rows so that ops and roles appended later fit old checkpoints.
OP_ROWS = 96
BUCKETS = 48  # log2-spaced buckets for sizes
DEGREE_ROWS = 32


def log_bucket(x: torch.Tensor) -> torch.Tensor:
    """Sizes to bucket indices: 0 stays 0, then two buckets per octave, clipped."""
    return torch.clamp(torch.round(2 * torch.log2(x.float() + 1)).long(), 0, BUCKETS - 1)


class NodeFeatures(nn.Module):
    """Sum of embeddings of everything known about a node."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.op = nn.Embedding(OP_ROWS, dim)
        self.shape = nn.ModuleList(nn.Embedding(BUCKETS, dim) for _ in range(4))
        self.attr = nn.ModuleList(nn.Embedding(BUCKETS, dim) for _ in ATTRS)
        self.in_degree = nn.Embedding(DEGREE_ROWS, dim)
        self.out_degree = nn.Embedding(DEGREE_ROWS, dim)
        self.depth = nn.Embedding(DISTANCE_CUTOFF + 2, dim)

    def forward(self, data) -> torch.Tensor:
        h = self.op(data.op)
        for i, emb in enumerate(self.shape):
            h = h + emb(log_bucket(data.shape[:, i]))
        for i, emb in enumerate(self.attr):
            h = h + emb(log_bucket(data.attr[:, i]))
        h = h + self.in_degree(data.in_degree.clamp(max=DEGREE_ROWS - 1))
        h = h + self.out_degree(data.out_degree.clamp(max=DEGREE_ROWS - 1))
        return h + self.depth(data.depth.clamp(max=DISTANCE_CUTOFF + 1))


def dense_batch(x: torch.Tensor, graph_of: torch.Tensor,
                ptr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(graphs, max_nodes, dim)`` zero-padded node rows and the ``(graphs, max_nodes)``
    mask of real ones, from rows ordered by graph (``graph_of`` each row's graph, ``ptr``
    the graphs' first rows); PyG's ``to_dense_batch``."""
    counts = ptr.diff()
    position = torch.arange(x.shape[0], device=x.device) - ptr[graph_of]
    dense = x.new_zeros(len(counts), int(counts.max()), x.shape[1])
    dense[graph_of, position] = x
    mask = torch.zeros(dense.shape[:2], dtype=torch.bool, device=x.device)
    mask[graph_of, position] = True
    return dense, mask


class GraphormerBlock(nn.Module):
    """Pre-LN self-attention with an additive bias, then a pre-LN MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(),
                                 nn.Linear(mlp_ratio * dim, dim))

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, n, 3, self.heads, d // self.heads).unbind(2)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2), attn_mask=bias)
        h = h + self.proj(out.transpose(1, 2).reshape(b, n, d))
        return h + self.mlp(self.norm2(h))


class GraphEncoder(nn.Module):
    """Node embeddings for a batch of architecture graphs (``graphs.batch.GraphBatch``, or a
    ``torch_geometric`` Batch of ``ArchGraph.to_data``)."""

    def __init__(self, dim: int, layers: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.features = NodeFeatures(dim)
        # Per-head bias for each forward and each backward distance (cutoff+1 = unreachable).
        self.forward_bias = nn.Embedding(DISTANCE_CUTOFF + 2, heads)
        self.backward_bias = nn.Embedding(DISTANCE_CUTOFF + 2, heads)
        self.blocks = nn.ModuleList(GraphormerBlock(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, batch) -> torch.Tensor:
        """Returns embeddings ``(total_nodes, dim)`` in the batch's node order."""
        h, mask = dense_batch(self.features(batch), batch.batch, batch.ptr)
        bias = self._attention_bias(batch, mask)
        for block in self.blocks:
            h = block(h, bias)
        return self.norm(h)[mask]

    def _attention_bias(self, batch, mask: torch.Tensor) -> torch.Tensor:
        """``(graphs, heads, n, n)`` bias; pairs across padding get -inf."""
        g, n = mask.shape
        far = DISTANCE_CUTOFF + 1
        dist = torch.full((g, n, n), far, dtype=torch.long, device=mask.device)
        dist[:, torch.arange(n), torch.arange(n)] = 0
        graph_of = batch.batch[batch.dist_index[0]]
        local = batch.dist_index - batch.ptr[graph_of]
        dist[graph_of, local[0], local[1]] = batch.dist
        bias = self.forward_bias(dist) + self.backward_bias(dist.transpose(1, 2))
        bias = bias.permute(0, 3, 1, 2)
        keep = mask[:, None, None, :]
        return bias.masked_fill(~keep, -math.inf)
