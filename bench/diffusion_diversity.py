"""How alike are an init method's samples: to the zoo's checkpoints, and to each other?

Run with ``.venv/bin/python bench/diffusion_diversity.py --generator DIR --zoo DIR``
(``--arch NAME``, ``--tasks N``, ``--samples N``, ``--methods M ...``, ``--lowrank-scales S ...``,
``--test-samples N``, ``--json rows.json``).

For each of the first ``--tasks`` held-out tasks of a zoo over tasks (its one architecture),
every method of ``hyperinit zoo eval`` named in ``--methods`` makes ``--samples`` models,
as the evaluation makes them, and each is measured untrained, BatchNorm statistics
calibrated as at step 0 of the evaluation recipe: zero-shot test accuracy and overlap with
the training checkpoints (the evaluation's novelty: max fraction of test images with the
same output), then, over the pairs of the method's own samples, how often they agree and
their relative L2 distance. A generator whose samples agree with each other almost
everywhere makes one init per task, whatever the seed.

``--lowrank-scales S ...`` adds the zoo evaluation's ``lowrank-gaussian-0.5`` at other
scales: the checkpoints' mean plus S times a sample of the Gaussian with their empirical
covariance (``training.zoo_eval.fitted_gaussian``), which moves only along directions in
which checkpoints differ.
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch

from training.recipe import EvalData, autocast_for
from training.tasks import Task, held_out_tasks
from training.zoo import record_classes
from training.zoo_eval import (
    Checkpoints,
    Generators,
    ZooEvalConfig,
    diffusion_for,
    fitted_gaussian,
    load_checkpoints,
    make_model,
    novelty,
    predictions,
    to_module,
    training_checkpoints,
)

METHODS = ("diffusion", "nearest-noise-0.12", "mean-16", "gaussian", "lowrank-gaussian-0.5")
LOWRANK_PREFIX = "lowrank-gaussian-"  # the low-rank Gaussian's name, before its scale


def samples_of(method: str, n: int, arch: str, ckpts: Checkpoints, cfg: ZooEvalConfig,
               generators: Generators, task: Task) -> list[dict[str, torch.Tensor]]:
    """``n`` models of ``method`` for the held-out ``task``, made as the zoo evaluation makes
    them; ``lowrank-gaussian-SCALE`` at any scale."""
    if method.startswith(LOWRANK_PREFIX):
        scale = float(method.removeprefix(LOWRANK_PREFIX))
        return [fitted_gaussian(ckpts, cfg.seed + i, task, lowrank=scale) for i in range(n)]
    return [make_model(method, i, arch, [ckpts], cfg, generators, task)[0] for i in range(n)]


def pairwise_mean(values: list[torch.Tensor], measure) -> float:
    """The mean of ``measure(a, b)`` over the unordered pairs of ``values``."""
    pairs = list(itertools.combinations(values, 2))
    return sum(measure(a, b) for a, b in pairs) / len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", required=True)
    parser.add_argument("--zoo", required=True)
    parser.add_argument("--arch", help="the zoo architecture to measure (needed when the zoo "
                        "has several)")
    parser.add_argument("--tasks", type=int, default=1)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--lowrank-scales", nargs="*", type=float, default=[])
    parser.add_argument("--test-samples", type=int, default=2000)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    if args.samples < 2:
        parser.error("--samples must be at least 2: agreement is measured between samples")

    cfg = ZooEvalConfig(generator=args.generator, zoo=args.zoo, archs=args.arch, ks=(0,),
                        device="cpu", samples=args.samples, methods=tuple(args.methods),
                        test_samples=args.test_samples).for_zoo(True)
    device, recipe = torch.device("cpu"), cfg.recipe()
    autocast = autocast_for(recipe, device)
    selected = training_checkpoints(cfg)
    if len(selected) != 1:
        parser.error(f"the zoo has {len(selected)} architectures ({', '.join(selected)}): "
                     "name one with --arch")
    (arch, entries), = selected.items()
    ways = record_classes(entries[0].record)
    generators = Generators(cfg, device, diffusion_for(cfg, over_tasks=True))
    every_class = EvalData(recipe, device)
    methods = list(dict.fromkeys([*args.methods,
                                  *(f"{LOWRANK_PREFIX}{s:g}" for s in args.lowrank_scales)]))

    rows = []
    print(f"untrained {arch} on held-out {ways}-way tasks, {args.samples} samples each; "
          f"zoo {args.zoo}, generator {args.generator}")
    print("| task | method | accuracy (%) | overlap with checkpoints | agreement among samples "
          "| distance among samples |")
    print("|---|---|--:|--:|--:|--:|")
    for task in held_out_tasks(ways)[:args.tasks]:
        data = every_class.for_task(task)
        labels = torch.cat([y.cpu() for _, y in data.test_batches()])
        ckpts = load_checkpoints(arch, entries, data, device, autocast)
        for method in methods:
            states = samples_of(method, args.samples, arch, ckpts, cfg, generators, task)
            preds = [predictions(to_module(arch, s, ways), data, autocast) for s in states]
            flats = [ckpts.flatten(s) for s in states]
            row = {
                "task": task.name, "method": method,
                "accuracy": 100 * sum((p == labels).float().mean().item()
                                      for p in preds) / len(preds),
                "overlap": sum(novelty(f, p, ckpts)["overlap"]
                               for f, p in zip(flats, preds, strict=True)) / len(preds),
                "agreement": pairwise_mean(preds, lambda a, b: (a == b).float().mean().item()),
                "distance": pairwise_mean(flats, lambda a, b: ((a - b).norm()
                                                               / a.norm()).item()),
            }
            rows.append(row)
            print(f"| {task.name} | {method} | {row['accuracy']:.1f} | {row['overlap']:.3f} "
                  f"| {row['agreement']:.3f} | {row['distance']:.4f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
