"""Which part of a task-conditioned diffusion sample falls short: its body or its head?

Run with ``.venv/bin/python bench/diffusion_head_swap.py --generator DIR --zoo DIR``
(``--tasks N``, ``--samples N``, ``--guidance G``, ``--test-samples N``).

For each of the first ``--tasks`` held-out tasks of the zoo (its one architecture and head
size), it samples ``--samples`` models conditioned on the task and measures their zero-shot
test accuracy on the task, BatchNorm statistics calibrated as at step 0 of the evaluation
recipe, and that of hybrids: the sample's body with the head of the class-mapped mean of
the checkpoints (``mean-16`` of ``hyperinit zoo eval``) or of the nearest-task checkpoint,
and the mean's body with the sample's head. The baselines themselves are measured in the
same run.
"""

from __future__ import annotations

import argparse

import torch

from hyperinit.diffusion import load_diffusion, sample_state_dicts
from training.recipe import EvalData, autocast_for, calibrated, measure
from training.tasks import held_out_tasks
from training.zoo import arch_graph, head_dims, record_classes
from training.zoo_eval import (
    ZooEvalConfig,
    load_checkpoints,
    mean_of,
    to_module,
    training_checkpoints,
    transfer,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", required=True)
    parser.add_argument("--zoo", required=True)
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--test-samples", type=int, default=2000)
    args = parser.parse_args()

    cfg = ZooEvalConfig(generator=args.generator, zoo=args.zoo, ks=(0,), device="cpu",
                        test_samples=args.test_samples).for_zoo(True)
    device, recipe = torch.device("cpu"), cfg.recipe()
    autocast = autocast_for(recipe, device)
    (arch, entries), = training_checkpoints(cfg).items()
    ways = record_classes(entries[0].record)
    heads = head_dims(arch, ways)
    model = load_diffusion(args.generator)
    every_class = EvalData(recipe, device)

    def accuracy(state: dict[str, torch.Tensor], data: EvalData) -> float:
        module = calibrated(to_module(arch, state, ways), data.batches(0),
                            recipe.calibration_batches)
        return 100 * measure(module, data, autocast)["accuracy"]

    print(f"zero-shot accuracy (%) of {arch} on held-out {ways}-way tasks, "
          f"generator {args.generator}, guidance {args.guidance}")
    print("| task | sample | diffusion | its body + mean head | its body + nearest head "
          "| mean body + its head | mean | nearest-task |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for task in held_out_tasks(ways)[:args.tasks]:
        data = every_class.for_task(task)
        ckpts = load_checkpoints(arch, entries, data, device, autocast)
        mean, _ = mean_of(ckpts, cfg.seed, task)
        nearest, _ = transfer([ckpts], arch, task, cfg.seed)
        samples = sample_state_dicts(model, arch_graph(arch, ways), args.samples, cfg.seed,
                                     cfg.diffusion_steps, guidance=args.guidance, task=task)
        for i, state in enumerate(samples):
            hybrids = [state, {**state, **{k: mean[k] for k in heads}},
                       {**state, **{k: nearest[k] for k in heads}},
                       {**mean, **{k: state[k] for k in heads}}, mean, nearest]
            cells = " | ".join(f"{accuracy(s, data):.1f}" for s in hybrids)
            print(f"| {task.name} | {i} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
