"""PNG plots of training curves and of measurements against steps, written atomically
(``save_figure``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from graphs.draw import save_figure


def plot_metrics(metrics: Path, out: Path) -> Path | None:
    """Loss and learning rate against step, from a ``metrics.jsonl``; None if it is empty."""
    if not metrics.is_file():
        return None
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax_loss.plot(steps, [r["loss"] for r in rows])
    ax_loss.set(xlabel="step", ylabel="task loss (mean over meta-batch)", title="training loss")
    ax_lr.plot(steps, [r["lr"] for r in rows])
    ax_lr.set(xlabel="step", ylabel="learning rate", title="schedule")
    save_figure(fig, out)
    return out


def plot_series(panels: dict[str, dict[str, tuple[list[float], list[float], list[float]]]],
                out: Path, xlabel: str, ylabel: str, labels: Sequence[str] = (),
                note: str | None = None) -> Path:
    """Lines with error bars, one panel per key of ``panels``, each ``{series: (xs, means,
    errors)}``. A series keeps its color in every panel: its place in ``labels``, then in
    order of first appearance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = list(dict.fromkeys([*labels, *(s for series in panels.values() for s in series)]))
    width = max(1, len(panels))
    fig, axes = plt.subplots(1, width, figsize=(6 * width, 4.5), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels.items(), strict=False):
        for label, (xs, means, errors) in series.items():
            ax.errorbar(xs, means, yerr=errors, marker="o", capsize=3, label=label,
                        color=f"C{order.index(label) % 10}")
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        ax.legend(fontsize=8)
    if note:
        fig.suptitle(note, fontsize=9)
    save_figure(fig, out)
    return out
