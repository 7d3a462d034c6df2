"""PNG plots of training curves, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure to ``path`` through a temp file, then close it."""
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
