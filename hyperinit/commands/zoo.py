"""`hyperinit zoo build|stats|eval`: train a model zoo, summarize one, or evaluate against one.

``hyperinit zoo build [--config FILE] [key=value ...]`` trains several CIFAR-10 models per
architecture with varied seeds and hyperparameters and saves each at a few steps, as a
Hugging Face dataset folder (README.md card, records.jsonl, models/<arch_hash>/<run>/).
Options come from training.zoo.ZooConfig, e.g.
``hyperinit zoo build out=runs/zoo archs=vgg-2,convnext-0 models_per_arch=16``; with
``tasks=5`` each model trains on one five-way task of CIFAR-10's classes (drawn from the
training tasks, never a held-out one) with a five-way head, and its records name the task.
An interrupted build resumes: checkpoints whose record exists are not trained again.

``hyperinit zoo stats FOLDER`` prints counts per architecture and step and test accuracy.

``hyperinit zoo eval [--config FILE] [key=value ...]`` evaluates a weight-diffusion
generator against the zoo's checkpoints: accuracy before and after k training steps and
novelty (parameter distance, prediction overlap to the nearest training checkpoint) of its
samples and of the baselines (checkpoints, checkpoints plus noise, their mean, a Gaussian
fitted to them, the GHN's init, default init). A zoo over tasks is evaluated on held-out
tasks (never in a zoo; ``tasks=N`` takes the first N, or name them), with the checkpoint of
the most similar training task (its head mapped to the new task's classes) and that
checkpoint plus noise in place of the checkpoints themselves, diffusion samples conditioned
on the held-out task, and every model trained on that task's images. Options come from
training.zoo_eval_config.ZooEvalConfig, e.g.
``hyperinit zoo eval generator=runs/diffusion zoo=runs/zoo samples=8 ks=[0,50]``.
Writes OUT/results.jsonl (resumable), results.json, table.md, novelty.png and steps.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._config import add_config_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("zoo", help="build, summarize or evaluate with a model zoo",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="train and save a model zoo (resumable)")
    add_config_arguments(build, "ZooConfig", "archs=vgg-2 steps=200 out=runs/zoo")
    build.set_defaults(func=run_build)
    stats = actions.add_parser("stats", help="summarize a model zoo folder")
    stats.add_argument("folder", help="the zoo folder (holds records.jsonl)")
    stats.set_defaults(func=run_stats)
    evaluate = actions.add_parser("eval", help="evaluate a weight-diffusion generator against "
                                               "the zoo's baselines (resumable)")
    add_config_arguments(evaluate, "ZooEvalConfig", "generator=runs/diffusion zoo=runs/zoo "
                                                    "samples=4 out=runs/zoo-eval")
    evaluate.set_defaults(func=run_eval)


def run_build(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.zoo import ZooConfig, build_zoo, format_stats, zoo_stats

    cfg = load_config(args.config, args.overrides, ZooConfig)
    written = build_zoo(cfg)
    print(f"{written} checkpoints written to {cfg.out}")
    print(format_stats(zoo_stats(cfg.out)))
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from training.zoo import RECORDS, format_stats, zoo_stats

    if not (Path(args.folder) / RECORDS).is_file():
        raise FileNotFoundError(f"{args.folder} is not a model zoo: it has no {RECORDS}")
    print(format_stats(zoo_stats(args.folder)))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.zoo_eval import ZooEvalConfig, evaluate_zoo

    cfg = load_config(args.config, args.overrides, ZooEvalConfig)
    evaluate_zoo(cfg)
    out = Path(cfg.out)
    print((out / "table.md").read_text())
    print(f"results in {out}/: results.jsonl, results.json, table.md, novelty.png, "
          "steps.png")
    return 0
