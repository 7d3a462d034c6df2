"""Reports of ``hyperinit zoo eval``: ``results.json``, ``table.md`` and ``novelty.png`` from
the rows of :func:`training.zoo_eval.evaluate_zoo`."""

from __future__ import annotations

import json
import statistics
from itertools import groupby
from pathlib import Path
from typing import Any

from graphs.draw import save_figure

from .eval_report import mean_std
from .results import write_text
from .zoo_eval_config import MEAN_OF, ZooEvalConfig


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def summarize(cfg: ZooEvalConfig, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (arch, method): models, accuracy mean and std at each k, mean distance, overlap
    and sampling seconds (and, where made, one-model sampling seconds and ``averaged``)."""
    summary = []
    for (arch, method), group in groupby(rows, key=lambda r: (r["arch"], r["method"])):
        group = list(group)
        accuracy = {}
        for k in map(str, cfg.ks):
            mean, std = mean_std([r["at"][k]["accuracy"] for r in group])
            accuracy[k] = {"mean": mean, "std": std}
        item = {"arch": arch, "zoo_step": group[0]["zoo_step"], "method": method,
                "models": len(group), "accuracy": accuracy}
        for key in ("distance", "overlap", "sample_seconds", "sample_seconds_one", "averaged"):
            if key in group[0]:
                item[key] = _mean([r[key] for r in group])
        summary.append(item)
    return summary


def make_table(cfg: ZooEvalConfig, summary: list[dict[str, Any]]) -> str:
    """Markdown: one line per arch and method, accuracy (%) at each k and novelty."""
    def num(value: float | None, digits: int) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    steps = ", ".join(dict.fromkeys(f"{s['zoo_step']} ({s['arch']})" for s in summary))
    head = ["arch", "method", "models", *(f"acc k={k}" for k in cfg.ks), "distance", "overlap",
            "s/model"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        method = s["method"]
        if s.get("averaged", MEAN_OF) < MEAN_OF:
            method += f" (all {s['averaged']:.0f})"
        seconds = num(s["sample_seconds"], 3)
        if "sample_seconds_one" in s:
            seconds += f" (alone {num(s['sample_seconds_one'], 3)})"
        acc = [f"{100 * a['mean']:.1f} ± {100 * a['std']:.1f}" for a in s["accuracy"].values()]
        lines.append("| " + " | ".join([s["arch"], method, str(s["models"]), *acc,
                                        num(s.get("distance"), 3), num(s.get("overlap"), 3),
                                        seconds]) + " |")
    title = (f"CIFAR-10 test accuracy (%), mean ± std over each method's models, after k "
             f"training steps (lr {cfg.lr}, batch {cfg.batch_size}, weight decay "
             f"{cfg.weight_decay}). Novelty against the training checkpoints of {cfg.zoo} at "
             f"step {steps}: distance = min relative L2 "
             "distance of the parameters, overlap = max fraction of test images with the same "
             "untrained prediction (checkpoint rows: to the other checkpoints). s/model: "
             f"seconds to make one model. Generator: {cfg.generator or '—'}; ghn: "
             f"{cfg.ghn or 'default'}.\n\n")
    return title + "\n".join(lines) + "\n"


def plot_novelty(cfg: ZooEvalConfig, rows: list[dict[str, Any]], path: Path) -> Path:
    """Accuracy at the first k against prediction overlap, one point per model, one color
    per method, one panel per arch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = list(dict.fromkeys(r["arch"] for r in rows))
    k = str(cfg.ks[0])
    fig, axes = plt.subplots(1, len(archs), figsize=(6 * len(archs), 4.5), squeeze=False)
    for ax, arch in zip(axes[0], archs, strict=True):
        for method in cfg.methods:
            points = [(r["overlap"], 100 * r["at"][k]["accuracy"]) for r in rows
                      if r["arch"] == arch and r["method"] == method and r["overlap"] is not None]
            if points:
                ax.scatter(*zip(*points, strict=True), label=method, alpha=0.8,
                           color=f"C{cfg.methods.index(method)}")
        ax.set(xlabel="prediction overlap with the nearest training checkpoint",
               ylabel=f"test accuracy (%) at k={k}", title=arch)
        ax.legend(fontsize=8)
    save_figure(fig, path)
    return path


def write_reports(cfg: ZooEvalConfig, rows: list[dict[str, Any]], out: Path) -> str:
    """``results.json`` (the summary), ``table.md`` and ``novelty.png``; returns the table."""
    summary = summarize(cfg, rows)
    write_text(out / "results.json", json.dumps(summary, indent=1))
    table = make_table(cfg, summary)
    write_text(out / "table.md", table)
    plot_novelty(cfg, rows, out / "novelty.png")
    return table
