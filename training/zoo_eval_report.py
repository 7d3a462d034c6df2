"""Reports of ``hyperinit zoo eval``: ``results.json``, ``table.md``, ``novelty.png`` and
``steps.png`` from the rows of :func:`training.zoo_eval.evaluate_zoo`.

Without tasks the table has one line per arch and method, mean ± std over the method's
models. For a zoo over tasks (rows with a ``task``) it leads with one line per arch and
method, mean ± std over seeds of the mean over the held-out tasks, followed by the lines
"diffusion beats X by > std": on how many held-out tasks the diffusion samples' mean over
seeds leads X's by more than the larger of the two seed stds (as ``hyperinit eval``'s
report marks a win), and on how many their mean overlap is lower (more novel); then the
nearest training task of each held-out one and a line per task and method. Held-out
architectures (rows with ``held_out_arch``) have lines of their own, marked "(held out)",
with the methods that made them.
"""

from __future__ import annotations

import json
import statistics
from itertools import groupby
from pathlib import Path
from typing import Any

from graphs.draw import save_figure

from .eval_report import mean_std
from .plots import plot_series
from .results import write_text
from .zoo_eval_config import MEAN_OF, ZooEvalConfig

Rows = list[dict[str, Any]]


def write_reports(cfg: ZooEvalConfig, rows: Rows, out: Path) -> str:
    """``results.json`` (the summary), ``table.md``, ``novelty.png`` and ``steps.png``;
    returns the table."""
    summary = summarize(cfg, rows)
    write_text(out / "results.json", json.dumps(summary, indent=1))
    over_tasks = any("task" in r for r in rows)
    table = make_task_table(cfg, rows, summary) if over_tasks else make_table(cfg, summary)
    write_text(out / "table.md", table)
    plot_novelty(cfg, rows, out / "novelty.png")
    plot_steps(cfg, rows, out / "steps.png")
    return table


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def summarize(cfg: ZooEvalConfig, rows: Rows) -> Rows:
    """Per (arch, [held-out task,] method): models, accuracy mean and std at each k, mean
    distance, overlap and sampling seconds (and, where made, one-model sampling seconds and
    ``averaged``)."""
    summary = []
    for (arch, task, method), group in groupby(
            rows, key=lambda r: (r["arch"], r.get("task"), r["method"])):
        group = list(group)
        accuracy = {}
        for k in map(str, cfg.ks):
            mean, std = mean_std([r["at"][k]["accuracy"] for r in group])
            accuracy[k] = {"mean": mean, "std": std}
        held_out = {} if task is None else {"task": task}
        item = {"arch": arch, **held_out, "zoo_step": group[0]["zoo_step"], "method": method,
                "models": len(group), "accuracy": accuracy}
        for key in ("distance", "overlap", "sample_seconds", "sample_seconds_one", "averaged"):
            if key in group[0]:
                item[key] = _mean([r[key] for r in group])
        summary.append(item)
    return summary


def _num(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _method(item: dict[str, Any]) -> str:
    """The method's name, saying when a mean-16 model averaged all of fewer checkpoints."""
    if item.get("averaged", MEAN_OF) < MEAN_OF:
        return f"{item['method']} (all {item['averaged']:.0f})"
    return item["method"]


def _seconds(item: dict[str, Any]) -> str:
    seconds = _num(item["sample_seconds"], 3)
    if "sample_seconds_one" in item:
        seconds += f" (alone {_num(item['sample_seconds_one'], 3)})"
    return seconds


def _pct(pair: tuple[float, float]) -> str:
    return f"{pair[0]:.1f} ± {pair[1]:.1f}"


def _sources(cfg: ZooEvalConfig, summary: Rows) -> tuple[str, str]:
    """The zoo steps the checkpoints were taken at, and the generators, as titles name them
    (rows of held-out archs alone say no step: the config's)."""
    steps = ", ".join(dict.fromkeys(f"{s['zoo_step']} ({s['arch']})" for s in summary
                                    if s["zoo_step"] is not None))
    steps = (f"step {steps}" if steps else "each arch's last step" if cfg.step is None
             else f"step {cfg.step}")
    sampling = f"{cfg.diffusion_steps} DDIM steps" + (
        f", guidance {cfg.diffusion_guidance:g}" if cfg.diffusion_guidance != 1 else "")
    return steps, (f"Generator: {cfg.generator or '—'} ({sampling}); "
                   f"ghn: {cfg.ghn or 'default'}.")


def make_table(cfg: ZooEvalConfig, summary: Rows) -> str:
    """Markdown: one line per arch and method, accuracy (%) at each k and novelty."""
    steps, generators = _sources(cfg, summary)
    head = ["arch", "method", "models", *(f"acc k={k}" for k in cfg.ks), "distance", "overlap",
            "s/model"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        acc = [_pct((100 * a["mean"], 100 * a["std"])) for a in s["accuracy"].values()]
        lines.append("| " + " | ".join([s["arch"], _method(s), str(s["models"]), *acc,
                                        _num(s.get("distance"), 3), _num(s.get("overlap"), 3),
                                        _seconds(s)]) + " |")
    title = (f"CIFAR-10 test accuracy (%), mean ± std over each method's models, after k "
             f"training steps (lr {cfg.lr}, batch {cfg.batch_size}, weight decay "
             f"{cfg.weight_decay}). Novelty against the training checkpoints of {cfg.zoo} at "
             f"{steps}: distance = min relative L2 "
             "distance of the parameters, overlap = max fraction of test images with the same "
             "untrained prediction (checkpoint rows: to the other checkpoints). s/model: "
             f"seconds to make one model. {generators}\n\n")
    return title + "\n".join(lines) + "\n"


# ----- zoos over tasks ----------------------------------------------------------------------
def _accuracy(rows: Rows, arch: str, method: str, k: str) -> dict[str | None, dict[int, float]]:
    """Accuracy (%) at ``k`` of ``arch``'s models of ``method``, by task (None without
    tasks), then by sample."""
    out: dict[str | None, dict[int, float]] = {}
    for r in rows:
        if r["arch"] == arch and r["method"] == method:
            out.setdefault(r.get("task"), {})[r["sample"]] = 100 * r["at"][k]["accuracy"]
    return out


def per_seed(rows: Rows, arch: str, method: str, k: str) -> list[float]:
    """Accuracy (%) at ``k`` per sample (seed) of a method: the mean over the held-out tasks
    (the one model without tasks), for the samples every task has."""
    by_task = list(_accuracy(rows, arch, method, k).values())
    if not by_task:
        return []
    samples = sorted(set.intersection(*(set(v) for v in by_task)))
    return [statistics.fmean(v[i] for v in by_task) for i in samples]


def beats(mine: list[float], theirs: list[float]) -> bool:
    """Whether ``mine`` leads ``theirs`` in the mean by more than the larger seed std."""
    (m1, s1), (m0, s0) = mean_std(mine), mean_std(theirs)
    return m1 - m0 > max(s1, s0)


def _mean_overlap(rows: Rows, arch: str, task: str, method: str) -> float | None:
    return _mean([r["overlap"] for r in rows
                  if (r["arch"], r.get("task"), r["method"]) == (arch, task, method)])


def methods_of(cfg: ZooEvalConfig, rows: Rows, arch: str) -> list[str]:
    """The methods that made ``arch``'s models (fewer for a held-out arch), in config order."""
    made = {r["method"] for r in rows if r["arch"] == arch}
    return [m for m in cfg.methods if m in made]


def arch_label(rows: Rows, arch: str) -> str:
    """``arch``, marked when it is a held-out architecture."""
    held = any(r.get("held_out_arch") for r in rows if r["arch"] == arch)
    return f"{arch} (held out)" if held else arch


def _beats_line(cfg: ZooEvalConfig, rows: Rows, arch: str, other: str) -> str:
    """"diffusion beats ``other`` by > std" on how many held-out tasks at each k, and on
    how many its overlap is lower."""
    wins = []
    for k in map(str, cfg.ks):
        mine, theirs = (_accuracy(rows, arch, m, k) for m in ("diffusion", other))
        tasks = [t for t in mine if t in theirs]
        won = sum(beats(list(mine[t].values()), list(theirs[t].values())) for t in tasks)
        wins.append(f"{won}/{len(tasks)}")
    tasks = list(dict.fromkeys(r["task"] for r in rows if r["arch"] == arch))
    pairs = [(_mean_overlap(rows, arch, t, "diffusion"), _mean_overlap(rows, arch, t, other))
             for t in tasks]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    lower = sum(a < b for a, b in pairs)
    return "| " + " | ".join([arch_label(rows, arch), f"**diffusion beats {other} by > std**",
                              f"{len(tasks)} tasks", *wins, "",
                              f"{lower}/{len(pairs)} lower", ""]) + " |"


def _nearest_lines(rows: Rows) -> list[str]:
    """The nearest training task of each held-out one (from the nearest-task rows)."""
    lines = ["| arch | held-out task | nearest training task | shared classes | checkpoint |",
             "|---|---|---|---|---|"]
    for r in rows:
        if r["method"] == "nearest-task" and r["sample"] == 0:
            lines.append(f"| {arch_label(rows, r['arch'])} | {r['task']} | {r['source_task']} | "
                         f"{r['shared']} | "
                         f"{r['source']} |")
    return lines if len(lines) > 2 else []


def make_task_table(cfg: ZooEvalConfig, rows: Rows, summary: Rows) -> str:
    """Markdown for a zoo over tasks: per arch and method, mean ± std over seeds of the
    mean over the held-out tasks, with the "diffusion beats X by > std" lines; the nearest
    training tasks; and one line per arch, task and method."""
    steps, generators = _sources(cfg, summary)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    ks = [f"acc k={k}" for k in cfg.ks]
    head = ["arch", "method", "models", *ks, "distance", "overlap", "s/model"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arch in dict.fromkeys(r["arch"] for r in rows):
        for item in _over_tasks(cfg, rows, summary, arch):
            lines.append("| " + " | ".join(item) + " |")
        methods = methods_of(cfg, rows, arch)
        if "diffusion" in methods:
            lines += [_beats_line(cfg, rows, arch, m) for m in methods if m != "diffusion"]
    detail = ["| arch | task | method | models | " + " | ".join(ks) + " | distance | overlap |",
              "|" + "---|" * (len(ks) + 6)]
    for s in summary:
        acc = [_pct((100 * a["mean"], 100 * a["std"])) for a in s["accuracy"].values()]
        detail.append("| " + " | ".join([arch_label(rows, s["arch"]), s["task"], _method(s),
                                         str(s["models"]),
                                         *acc, _num(s.get("distance"), 3),
                                         _num(s.get("overlap"), 3)]) + " |")
    nearest = _nearest_lines(rows)
    title = (f"Held-out tasks of a zoo over tasks ({len(tasks)}: {', '.join(tasks)}): test "
             "accuracy (%) on each task's CIFAR-10 test images after k training steps (lr "
             f"{cfg.lr}, batch {cfg.batch_size}, weight decay {cfg.weight_decay}), mean ± std "
             f"over seeds (sample i: seed {cfg.seed} + i) of the mean over the tasks. Novelty "
             f"against the training checkpoints of {cfg.zoo} at {steps}, on each task's "
             "test images: distance = min relative L2 distance of the parameters, overlap = max "
             "fraction of test images with the same untrained output; both, and s/model "
             "(seconds to make one model), are means over the models. \"diffusion beats X by > "
             "std\": on how many tasks the diffusion samples' mean leads X's by more than the "
             "larger of the two seed stds, at each k; under overlap, on how many their overlap "
             f"is lower (more novel). {_held_out_note(rows)}{generators}\n\n")
    parts = [title + "\n".join(lines)]
    if nearest:
        parts.append("Nearest training task of each held-out task (the nearest-task "
                     "methods' source: most shared classes, ties to the first run):\n\n"
                     + "\n".join(nearest))
    parts.append("Per held-out task, mean ± std over the models:\n\n" + "\n".join(detail))
    return "\n\n".join(parts) + "\n"


def _held_out_note(rows: Rows) -> str:
    """What the title says of held-out architectures, if there are any."""
    if not any(r.get("held_out_arch") for r in rows):
        return ""
    return ("Held-out architectures (no checkpoint of their own): their nearest-task models "
            "are the nearest training task's checkpoint of any zoo arch by weight selection "
            "(each tensor of the same name gives its leading block), their distance is "
            "undefined (—) and their overlap is against every training checkpoint. ")


def _over_tasks(cfg: ZooEvalConfig, rows: Rows, summary: Rows, arch: str) -> list[list[str]]:
    """The cells of ``arch``'s lines of each method, over the held-out tasks."""
    out = []
    for method in methods_of(cfg, rows, arch):
        mine = [r for r in rows if r["arch"] == arch and r["method"] == method]
        items = [s for s in summary if s["arch"] == arch and s["method"] == method]
        acc = [_pct(mean_std(per_seed(rows, arch, method, str(k)))) for k in cfg.ks]
        seconds = {"sample_seconds": _mean([r["sample_seconds"] for r in mine])}
        if "sample_seconds_one" in mine[0]:
            seconds["sample_seconds_one"] = _mean([r["sample_seconds_one"] for r in mine])
        out.append([arch_label(rows, arch), _method(items[0]), str(len(mine)), *acc,
                    _num(_mean([r["distance"] for r in mine]), 3),
                    _num(_mean([r["overlap"] for r in mine]), 3), _seconds(seconds)])
    return out


# ----- plots --------------------------------------------------------------------------------
def plot_novelty(cfg: ZooEvalConfig, rows: Rows, path: Path) -> Path:
    """Accuracy against prediction overlap, one point per model (of every held-out task),
    one color per method, one panel per arch at the first k and, below, at the last."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = list(dict.fromkeys(r["arch"] for r in rows))
    ks = list(dict.fromkeys(str(k) for k in (cfg.ks[0], cfg.ks[-1])))
    fig, axes = plt.subplots(len(ks), len(archs), figsize=(6 * len(archs), 4.5 * len(ks)),
                             squeeze=False)
    for line, k in zip(axes, ks, strict=True):
        for ax, arch in zip(line, archs, strict=True):
            for method in cfg.methods:
                points = [(r["overlap"], 100 * r["at"][k]["accuracy"]) for r in rows
                          if r["arch"] == arch and r["method"] == method
                          and r["overlap"] is not None]
                if points:
                    ax.scatter(*zip(*points, strict=True), label=method, alpha=0.8,
                               color=f"C{cfg.methods.index(method)}")
            ax.set(xlabel="prediction overlap with the nearest training checkpoint",
                   ylabel=f"test accuracy (%) at k={k}",
                   title=f"{arch_label(rows, arch)}, k={k}")
            ax.legend(fontsize=8)
    save_figure(fig, path)
    return path


def plot_steps(cfg: ZooEvalConfig, rows: Rows, path: Path) -> Path:
    """Accuracy against training steps per method, one panel per arch: the mean over seeds
    (of the mean over held-out tasks), with the std over seeds as error bars."""
    panels = {}
    for arch in dict.fromkeys(r["arch"] for r in rows):
        series = {}
        for method in methods_of(cfg, rows, arch):
            means, stds = zip(*(mean_std(per_seed(rows, arch, method, str(k))) for k in cfg.ks),
                              strict=True)
            series[method] = (list(cfg.ks), list(means), list(stds))
        panels[arch_label(rows, arch)] = series
    tasks = len({r.get("task") for r in rows} - {None})
    over = f"of the mean over {tasks} held-out tasks " if tasks else ""
    return plot_series(panels, path, "training steps", "test accuracy (%)", cfg.methods,
                       note=f"mean over seeds {over}± std over seeds")
