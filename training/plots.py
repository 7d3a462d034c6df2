"""PNG plots of training curves, written atomically (``save_figure``)."""

from __future__ import annotations

import json
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
