"""Reports of ``hyperinit eval``: ``results.json``, ``table.md`` and ``curves.png`` from the
rows of :func:`training.evaluate.evaluate`.

Means compare like with like: an arm that ran on fewer architectures (mimetic: attention
models only) gets its own group of them (:func:`_groups`), and a predicted init "beats" the
default one on an architecture only by more than the larger of their seed stds.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from graphs.draw import save_figure

from .eval_config import EvalConfig
from .results import write_text


def write_reports(cfg: EvalConfig, rows: list[dict[str, Any]], out: Path) -> str:
    """``results.json``, ``table.md`` and ``curves.png`` in ``out``; returns the table."""
    write_text(out / "results.json", json.dumps(rows, indent=1))
    table = make_table(cfg, rows)
    write_text(out / "table.md", table)
    plot_curves(cfg, rows, out / "curves.png")
    return table


def _metric(cfg: EvalConfig) -> tuple[str, bool, float, str]:
    """(row key, higher is better, display scale, description) of the headline metric."""
    if cfg.task == "image":
        return "accuracy", True, 100.0, "CIFAR-10 test accuracy (%)"
    return "loss", False, 1.0, "validation loss (nats per character)"


def _values(cfg: EvalConfig, rows: list[dict[str, Any]],
            ) -> dict[tuple[str, str, str], dict[int, float]]:
    """Headline metric by (arch, arm, label), as {seed: value}, for the rows that ran."""
    key, _, scale, _ = _metric(cfg)
    values: dict[tuple[str, str, str], dict[int, float]] = {}
    for row in rows:
        for label, point in row.get("at", {}).items():
            values.setdefault((row["arch"], row["arm"], label), {})[row["seed"]] = (
                point[key] * scale)
    return values


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _groups(cfg: EvalConfig, rows: list[dict[str, Any]]) -> list[tuple[list[str], list[str], str]]:
    """``(archs, arms, name)`` sets to average over, so every mean compares like with like.

    The first group is all archs with the arms that ran on all of them; an arm that ran on
    fewer (mimetic: attention models only) adds a group of its archs, with every arm that
    ran on those.
    """
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    ran = {arm: {r["arch"] for r in rows if r["arm"] == arm and "at" in r} for arm in cfg.arms}
    groups = []
    for arm in cfg.arms:
        subset = [a for a in archs if a in ran[arm]]
        if not subset or any(subset == g for g, _, _ in groups):
            continue
        covering = [m for m in cfg.arms if ran[m] >= set(subset)]
        partial = [m for m in covering if ran[m] != set(archs)]
        name = (f"{len(subset)} archs" if len(subset) == len(archs)
                else f"{len(subset)} archs where {', '.join(partial)} ran")
        groups.append((subset, covering, name))
    return sorted(groups, key=lambda g: -len(g[0]))


def _over_archs(values: dict[tuple[str, str, str], dict[int, float]], archs: list[str],
                arm: str, label: str) -> tuple[float, float]:
    """Mean over ``archs`` per seed, then mean and std of that over the seeds."""
    ran = [values[a, arm, label] for a in archs]
    seeds = sorted(set.intersection(*(set(v) for v in ran)))
    return mean_std([statistics.fmean(v[s] for v in ran) for s in seeds])


def make_table(cfg: EvalConfig, rows: list[dict[str, Any]]) -> str:
    """Markdown: mean ± std over seeds per arch, arm and k; means over archs (see
    :func:`_groups`); and on how many archs each arm beats ``default`` by more than the
    larger of the two seed stds."""
    _, higher, _, description = _metric(cfg)
    values = _values(cfg, rows)
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    skipped = {(r["arch"], r["arm"]) for r in rows if "skipped" in r}
    columns = [(arm, label) for arm in cfg.arms for label in cfg.labels]
    width = 3 if cfg.task == "text" else 1

    def fmt(pair: tuple[float, float]) -> str:
        return f"{pair[0]:.{width}f} ± {pair[1]:.{width}f}"

    def beats(arch: str, arm: str, label: str) -> bool | None:
        if (arch, arm, label) not in values or (arch, "default", label) not in values:
            return None
        (m1, s1), (m0, s0) = (mean_std(list(values[arch, a, label].values()))
                              for a in (arm, "default"))
        return (m1 - m0 if higher else m0 - m1) > max(s1, s0)

    head = ["arch"] + [f"{arm} k={label}" if label != "epoch" else f"{arm} 1 epoch"
                       for arm, label in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in archs:
        cells = ["n/a" if (a, arm) in skipped else fmt(mean_std(list(values[a, arm, lb].values())))
                 for arm, lb in columns]
        lines.append("| " + " | ".join([a, *cells]) + " |")
    for group, arms, name in _groups(cfg, rows):
        cells = [fmt(_over_archs(values, group, arm, lb)) if arm in arms else ""
                 for arm, lb in columns]
        lines.append("| " + " | ".join([f"**mean over {name}**", *cells]) + " |")
    beat_cells = []
    for arm, label in columns:
        wins = [w for w in (beats(a, arm, label) for a in archs) if w is not None]
        beat_cells.append("—" if arm == "default" or not wins else f"{sum(wins)}/{len(wins)}")
    lines.append("| " + " | ".join(["**beats default by > std**", *beat_cells]) + " |")
    summary = ""
    if "predicted" in cfg.arms and "default" in cfg.arms:
        k = "200" if 200 in cfg.ks else str(cfg.ks[-1])
        wins = [w for w in (beats(a, "predicted", k) for a in archs) if w is not None]
        summary = (f"\nAt k={k}, the predicted init beats the default init by more than the "
                   f"seed std on {sum(wins)} of {len(wins)} architectures.\n")
    better = "higher" if higher else "lower"
    title = (f"{description}, mean ± std over seeds {', '.join(map(str, cfg.seeds))}, after k "
             f"training steps ({better} is better). Generator: {cfg.generator or 'default'}; "
             f"lr {cfg.lr}, batch {cfg.batch_size}, weight decay {cfg.weight_decay}.\n\n")
    return title + "\n".join(lines) + "\n" + summary


def plot_curves(cfg: EvalConfig, rows: list[dict[str, Any]], path: Path) -> Path:
    """Headline metric against training steps per arm, one panel per group of archs (see
    :func:`_groups`): the mean over the group, with its std over seeds as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, _, _, description = _metric(cfg)
    values = _values(cfg, rows)
    steps = {label: point["step"] for r in rows for label, point in r.get("at", {}).items()}
    groups = _groups(cfg, rows)
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(6 * max(1, len(groups)), 4),
                             squeeze=False)
    for ax, (archs, arms, name) in zip(axes[0], groups, strict=False):
        xs = [steps[label] for label in cfg.labels]
        for arm in arms:
            means, stds = zip(*(_over_archs(values, archs, arm, label) for label in cfg.labels),
                              strict=True)
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=arm,
                        color=f"C{cfg.arms.index(arm)}")  # one color per arm in every panel
        ax.set(xlabel="training steps", ylabel=description, title=f"{cfg.task}: mean over {name}")
        ax.legend()
    fig.suptitle("error bars: std over seeds of the mean over archs", fontsize=9)
    save_figure(fig, path)
    return path
