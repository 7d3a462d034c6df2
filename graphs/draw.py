"""Draw an ArchGraph as a layered picture: input at the top, data flowing down."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .graph import ArchGraph
from .vocab import NORM_OPS

# Colour by op family, so the structure reads at a glance.
_FAMILIES: dict[str, tuple[str, frozenset[str]]] = {
    "conv": ("#1f77b4", frozenset({"conv"})),
    "linear": ("#ff7f0e", frozenset({"linear", "matmul"})),
    "norm": ("#2ca02c", NORM_OPS | {"vector_norm"}),
    "activation": ("#d62728", frozenset({
        "relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "elu",
        "leaky_relu", "mish", "softplus", "prelu", "softmax", "log_softmax"})),
    "attention": ("#9467bd", frozenset({"attention"})),
    "embedding": ("#8c564b", frozenset({"embedding", "pos_embedding", "token"})),
    "pooling": ("#17becf", frozenset({"max_pool", "avg_pool", "adaptive_avg_pool",
                                      "adaptive_max_pool", "mean"})),
    "merge": ("#7f7f7f", frozenset({"add", "concat", "mul", "sub", "div", "scale"})),
}
_OTHER = "#bcbd22"


def colour(op: str) -> str:
    """The colour of an op's family (yellow-green for anything else)."""
    for col, ops in _FAMILIES.values():
        if op in ops:
            return col
    return _OTHER


def _layers(graph: ArchGraph) -> np.ndarray:
    """Longest-path depth of every node (nodes are already in topological order)."""
    level = np.zeros(graph.num_nodes, dtype=np.int64)
    for src, dst in graph.edges:
        level[dst] = max(level[dst], level[src] + 1)
    return level


def draw(graph: ArchGraph, path: str | os.PathLike[str]) -> Path:
    """Render ``graph`` to an image (format from the suffix), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    level = _layers(graph)
    x = np.zeros(graph.num_nodes)
    for lv in np.unique(level):
        members = np.flatnonzero(level == lv)
        x[members] = np.arange(len(members)) - (len(members) - 1) / 2
    width = max(6.0, 1.6 * (np.abs(x).max() * 2 + 1))
    height = max(4.0, 0.55 * (level.max() + 1))
    fig, ax = plt.subplots(figsize=(min(width, 60), min(height, 400)))
    for src, dst in graph.edges:
        ax.plot([x[src], x[dst]], [-level[src], -level[dst]], color="#999999", lw=0.6, zorder=1)
    for i, node in enumerate(graph.nodes):
        shapes = [graph.params[j].shape for j in node.params]
        label = node.op + ("\n" + "x".join(map(str, max(shapes, key=len))) if shapes else "")
        ax.text(x[i], -level[i], label, ha="center", va="center", fontsize=6, zorder=2,
                bbox={"boxstyle": "round,pad=0.25", "fc": colour(node.op), "ec": "none",
                      "alpha": 0.85})
    handles = [plt.Line2D([], [], marker="s", ls="", color=c, label=f)
               for f, (c, _) in _FAMILIES.items()]
    ax.legend(handles=handles, loc="upper right", fontsize=7)
    ax.set_title(f"{graph.name}: {graph.num_nodes} nodes, {graph.num_params:,} parameters")
    ax.set_xlim(x.min() - 1, x.max() + 1)
    ax.set_ylim(-level.max() - 1, 1)
    ax.axis("off")
    save_figure(fig, path)
    return path


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure to ``path`` through a temp file, then close it: a reader
    never sees a half-written image."""
    import matplotlib.pyplot as plt

    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=path.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
