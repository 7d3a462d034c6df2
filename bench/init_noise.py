"""Choose a generator's ``noise`` on training-pool architectures (never held-out seeds).

``hyperinit.predict(noise=F)`` replaces the fraction F of each weight's variance with
Gaussian noise. Here every pool architecture is trained from the prediction at each F, and
from the default init, with the ``hyperinit eval`` image recipe, and measured at k = 0, 50,
200 steps (CIFAR-10 test accuracy; 20,000 training and 2,000 test images by default). Each
run prints one JSON row; the last line is the mean over architectures and seeds per init,
and the rule a checkpoint's card applies to it: the F with the best mean at k=200 among
those whose mean at k=0 stays at least 15%, clearly above chance.

Diagnostics of what else slows training from a prediction: ``--rescale`` adds, for each F,
the init with every weight rescaled to the std of the default init it replaced;
``--default-norms`` the init with 1-D parameters (norm weights, biases) left at their
default; both flags together add the init with both changes. ``--spare-stem`` adds, for each
F, the init where the stem (the first weight the image meets) keeps its bare prediction and
only the other weights get the noise; ``--stem-only`` the init with the stem's bare
prediction and the default init everywhere else. They separate the predicted stem, which
speeds training up, from the deeper predicted layers, which slow it down. ``--orth`` adds,
for each F, the init with every weight but the head orthogonalized after the noise (all its
singular values made equal, at its own norm): the fix for poorly conditioned predictions of
Knyazev (2022), "Pretraining a Neural Network before Knowing Its Architecture".

``--archs NAME ...`` runs held-out architectures instead, to check a choice already made;
no noise is chosen from them.

Run with ``.venv/bin/python bench/init_noise.py`` (``--families``, ``--arch-seeds``,
``--archs``, ``--noise``, ``--seeds``, ``--generator``, ``--data``, ``--device``, ``--rescale``,
``--default-norms``, ``--spare-stem``, ``--stem-only``, ``--orth``).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

import hyperinit
from hyperinit.predict import add_noise, orthogonalize
from training import evaluate, samplers

ZERO_SHOT_FLOOR = 15.0  # % at k=0 a chosen noise must keep (chance is 10%)


@dataclass(frozen=True)
class Init:
    """The default init (``noise=None``), or a prediction with ``noise`` and diagnostics."""

    noise: float | None
    rescale: bool = False
    default_norms: bool = False
    spare_stem: bool = False
    stem_only: bool = False
    orth: bool = False

    @property
    def name(self) -> str:
        if self.noise is None:
            return "default"
        if self.stem_only:
            return "stem only"
        extras = [n for n, on in (("rescale", self.rescale),
                                  ("default norms", self.default_norms),
                                  ("stem spared", self.spare_stem),
                                  ("orth", self.orth)) if on]
        return " + ".join([f"noise {self.noise:g}", *extras])


def architectures(families: list[str], arch_seeds: list[int],
                  names: list[str] | None) -> dict[str, Callable[[], nn.Module]]:
    """Builders by name: each family's ``arch_seeds`` (the pool), or the held-out ``names``."""
    if names:
        entries = {e.name: e.build for e in samplers.held_out("image")}
        unknown = [n for n in names if n not in entries]
        if unknown:
            raise SystemExit(f"not held-out image architectures: {', '.join(unknown)}; "
                             f"known: {', '.join(entries)}")
        return {n: entries[n] for n in names}
    tags = {s.tag: s for s in samplers.image_samplers()}
    return {f"{f}-{s}": partial(tags[f].build, s) for f in families for s in arch_seeds}


def run(build: Callable[[], nn.Module], seed: int, init: Init,
        generator: hyperinit.GraphHyperNetwork, cfg: evaluate.EvalConfig,
        eval_data: evaluate.EvalData, device: torch.device) -> dict[str, float]:
    """Accuracy (%) at each k of one architecture initialized as ``init``."""
    torch.manual_seed(seed)
    model = build()
    default = {k: v.detach().clone() for k, v in model.named_parameters()}
    if init.noise is not None:
        hyperinit.predict(model, generator, seed=seed, noise=0 if init.spare_stem else init.noise)
    matrices = [name for name, p in model.named_parameters() if p.dim() >= 2]
    stem, head = matrices[0], matrices[-1]
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if init.stem_only and name != stem:
                p.copy_(default[name])
            if p.dim() >= 2 and init.spare_stem and name != stem:
                p.copy_(add_noise(p, "weight", init.noise, rng))
            if p.dim() >= 2 and init.orth and name != head:
                p.copy_(orthogonalize(p))
            if p.dim() >= 2 and init.rescale:
                p.mul_(default[name].std() / p.std())
            elif p.dim() < 2 and init.default_norms:
                p.copy_(default[name])
    torch.manual_seed(seed)
    points = evaluate.train_and_measure(model.to(device), cfg, eval_data, seed, device)
    return {k: round(100 * v["accuracy"], 1) for k, v in points.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+",
                        default=["resnet", "randcnn", "mobilenet", "convnext", "vgg"])
    parser.add_argument("--arch-seeds", nargs="+", type=int, default=[7])
    parser.add_argument("--archs", nargs="+",
                        help="held-out architectures by name instead: to check a choice made "
                             "on the pool (no noise is chosen from them)")
    parser.add_argument("--noise", nargs="+", type=float, default=[0, 0.25, 0.5, 0.75])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--generator", default="ghn-cifar10")
    parser.add_argument("--data", default=None, help="CIFAR-10 path (default: the shared zip)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--rescale", action="store_true",
                        help="also each prediction with weights rescaled to the default std")
    parser.add_argument("--default-norms", action="store_true",
                        help="also each prediction with 1-D parameters at their default")
    parser.add_argument("--spare-stem", action="store_true",
                        help="also each noise with the stem left at its bare prediction")
    parser.add_argument("--stem-only", action="store_true",
                        help="also the bare prediction of the stem with the default init "
                             "everywhere else")
    parser.add_argument("--orth", action="store_true",
                        help="also each noise with every predicted weight but the head "
                             "orthogonalized at its own norm, after the noise")
    args = parser.parse_args()
    generator = hyperinit.load_generator(args.generator)
    device = torch.device(args.device)
    cfg = evaluate.EvalConfig(ks=(0, 50, 200), train_samples=20000, test_samples=2000,
                              data=args.data, device=args.device)
    eval_data = evaluate.EvalData(cfg, device)
    flags = [(r, d) for r in (False, True) for d in (False, True)
             if (args.rescale or not r) and (args.default_norms or not d)]
    inits = [Init(n, r, d) for n in args.noise for r, d in flags]
    if args.spare_stem:
        inits += [Init(n, spare_stem=True) for n in args.noise if n]
    if args.orth:
        inits += [Init(n, orth=True) for n in args.noise]
    if args.stem_only:
        inits.append(Init(0, stem_only=True))
    means: dict[str, dict[str, list[float]]] = {}
    for name, build in architectures(args.families, args.arch_seeds, args.archs).items():
        for init in [*inits, Init(None)]:
            for seed in args.seeds:
                acc = run(build, seed, init, generator, cfg, eval_data, device)
                for k, value in acc.items():
                    means.setdefault(init.name, {}).setdefault(k, []).append(value)
                print(json.dumps({"arch": name, "init": init.name, "seed": seed,
                                  "accuracy": acc}), flush=True)
    summary = {name: {k: round(statistics.mean(v), 2) for k, v in ks.items()}
               for name, ks in means.items()}
    if args.archs:
        print(json.dumps({"mean": summary}))
        return
    allowed = [n for n in args.noise if summary[f"noise {n:g}"]["0"] >= ZERO_SHOT_FLOOR]
    best = max(allowed, key=lambda n: (summary[f"noise {n:g}"]["200"], -n), default=None)
    print(json.dumps({"mean": summary, "chosen_noise": best}))


if __name__ == "__main__":
    main()
