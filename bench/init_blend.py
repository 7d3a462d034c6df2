"""Diagnostic: why does a predicted init train more slowly than the default init?

For training-pool architectures (never held-out seeds), each init is trained with the
``hyperinit eval`` image recipe and measured at k = 0, 50, 200 steps (CIFAR-10 test
accuracy, 2,000 test images, 20,000 training images):

* ``blend F``: ``sqrt(1 - F) * predicted + sqrt(F) * default`` for tensors of two or more
  dimensions (other tensors predicted); F = 0 is the prediction, F = 1 the default init;
* ``rescale``: the predicted conv/linear weights rescaled to the default init's std.

Run with ``.venv/bin/python bench/init_blend.py`` (``--families``, ``--arch-seed``,
``--blends``, ``--seeds``, ``--generator``). It prints one JSON row per run.
"""

from __future__ import annotations

import argparse
import json

import torch

import hyperinit
from training import evaluate, samplers


def init(family: str, arch_seed: int, seed: int, variant: str,
         generator: hyperinit.GraphHyperNetwork) -> torch.nn.Module:
    """The pool architecture built after ``manual_seed(seed)``, initialized as ``variant``."""
    torch.manual_seed(seed)
    model = {s.tag: s for s in samplers.image_samplers()}[family].build(arch_seed)
    default = {k: v.detach().clone() for k, v in model.named_parameters()}
    if variant == "blend 1":
        return model
    hyperinit.predict(model, generator)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() < 2:
                continue
            if variant == "rescale":
                p.mul_(default[name].std() / p.std())
            else:
                f = float(variant.split()[1])
                p.copy_((1 - f) ** 0.5 * p + f ** 0.5 * default[name])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["vgg", "convnext"])
    parser.add_argument("--arch-seed", type=int, default=7)
    parser.add_argument("--blends", nargs="*", type=float, default=[0, 0.25, 0.5, 1])
    parser.add_argument("--rescale", action="store_true", help="also the rescaled prediction")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--generator", default="ghn-cifar10")
    args = parser.parse_args()
    generator = hyperinit.load_generator(args.generator)
    cfg = evaluate.EvalConfig(ks=(0, 50, 200), train_samples=20000, test_samples=2000,
                              device="cpu")
    eval_data = evaluate.EvalData(cfg, torch.device("cpu"))
    variants = [f"blend {f:g}" for f in args.blends] + (["rescale"] if args.rescale else [])
    for family in args.families:
        for variant in variants:
            for seed in args.seeds:
                model = init(family, args.arch_seed, seed, variant, generator)
                torch.manual_seed(seed)
                points = evaluate.train_and_measure(model, cfg, eval_data, seed,
                                                    torch.device("cpu"))
                print(json.dumps({"arch": f"{family}-{args.arch_seed}", "init": variant,
                                  "seed": seed, "accuracy": {
                                      k: round(100 * v["accuracy"], 1)
                                      for k, v in points.items()}}), flush=True)


if __name__ == "__main__":
    main()
