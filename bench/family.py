"""Can a decoder family hold a trained network? Measure it before training a generator.

A generator can only output tensors of its decoder's family (the tensors the decoder builds
when everything it takes from the node embedding is free). This benchmark asks how good the
best member of a family is, on held-out CIFAR-10 architectures:

1. each architecture is trained with the ``hyperinit eval`` image recipe for
   ``--train-steps`` steps (seed 0; the weights are cached under ``--cache``);
2. every weight of two or more dimensions but the head is replaced by its best
   approximation in the family (least squares in the family's matrix view; standardized to
   the trained tensor's mean and std), everything else is kept;
3. the result is measured at k=0 (BatchNorm statistics recalibrated, as ``hyperinit eval``
   does) and after k SGD steps of the same recipe.

Beside each family it prints the trained weights themselves and the default init, trained
the same way, and with ``--direct-steps N`` the accuracy of the network trained directly
inside the family for N AdamW steps from a projected default init (what gradient descent
finds in the family, the other half of the question).

Families (``--families``):

* ``free:R`` — any matrix of rank R in the decoder's view (the LoGAH factor space);
* ``fourier:F:R`` — rank R with row and column spaces inside ``F`` fixed Fourier features
  of the index (the decoder of hyperinit 0.2);
* ``spectrum`` — not a family but a diagnostic: the trained singular values with random
  singular vectors (does a weight's knowledge lie in its spectrum alone?);
* ``flat:R`` — a diagnostic too: the best rank-R directions with all R singular values set
  equal (does a weight's knowledge survive a flat spectrum, whose channels stay distinct?);
* ``decoder`` — the family of today's ``hyperinit.decoder.LowRankDecoder`` at its default
  size (``--rank``), projected with :meth:`LowRankDecoder.project`.

Each run prints one JSON row; the last lines are a markdown table with the share of the
trained accuracy each family keeps at k=0 (the pass mark is 85%).

Run with ``.venv/bin/python bench/family.py`` (``--archs``, ``--families``, ``--train-steps``,
``--ks``, ``--direct-steps``, ``--seed``, ``--cache``, ``--data``, ``--json``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from copy import deepcopy
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import parametrize

from hyperinit import GHNConfig
from hyperinit.decoder import (
    IndexBasis,
    IndexFeatures,
    LowRankDecoder,
    best_in_span,
    from_matrix,
    to_matrix,
)
from training import evaluate, samplers

ARCHS = ("resnet-1000000", "vgg-1000000", "convnext-1000000", "mobilenet-1000000")
FAMILIES = ("free:32", "free:8", "fourier:64:32", "decoder")
PASS_SHARE = 0.85  # of the trained accuracy at k=0 the best member must keep

Projector = Callable[[torch.Tensor], torch.Tensor]  # matrix -> its best member in the family


def family(spec: str, rank: int) -> Projector:
    """The projector named by ``spec`` (see the module docstring)."""
    kind, *args = spec.split(":")
    if kind == "free" and len(args) == 1:
        return lambda w: best_in_span(w, None, None, int(args[0]))
    if kind == "fourier" and len(args) == 2:
        phi, r = IndexFeatures(int(args[0])), int(args[1])
        return lambda w: best_in_span(w, phi(w.shape[0]), phi(w.shape[1]), r)
    if kind == "index" and len(args) == 2:
        basis, r = IndexBasis(int(args[0])), int(args[1])
        return lambda w: best_in_span(w, basis(w.shape[0]), basis(w.shape[1]), r)
    if kind == "spectrum" and not args:
        return random_directions
    if kind == "flat" and len(args) == 1:
        return lambda w: flat_spectrum(w, int(args[0]))
    if kind == "decoder" and not args:
        size = GHNConfig(rank=rank)
        return LowRankDecoder(size.hidden, size.rank, size.features, size.decoder).project
    raise ValueError(f"unknown family {spec!r}: expected free:R, fourier:F:R, index:K:R, "
                     "spectrum, flat:R or decoder")


def random_directions(w: torch.Tensor) -> torch.Tensor:
    """``w``'s singular values with random singular vectors (a fixed seed): what is left of a
    trained weight when only its spectrum is kept."""
    g = torch.Generator().manual_seed(0)
    k = min(w.shape)
    left = torch.linalg.qr(torch.randn(w.shape[0], k, generator=g, dtype=torch.float64))[0]
    right = torch.linalg.qr(torch.randn(w.shape[1], k, generator=g, dtype=torch.float64))[0]
    s = torch.linalg.svdvals(w.double())
    return ((left * s) @ right.T).to(w.dtype)


def flat_spectrum(w: torch.Tensor, rank: int) -> torch.Tensor:
    """``w``'s top ``rank`` singular directions, each with the same singular value."""
    u, _, vh = torch.linalg.svd(w.double(), full_matrices=False)
    k = min(rank, u.shape[1])
    return (u[:, :k] @ vh[:k]).to(w.dtype)


def projected_weights(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Every weight of two or more dimensions but the head (the last one), by name."""
    weights = [(n, p) for n, p in model.named_parameters()
               if n.rpartition(".")[2] == "weight" and p.dim() >= 2]
    return weights[:-1]


@torch.no_grad()
def project_(model: nn.Module, project: Projector) -> nn.Module:
    """Replace each projected weight by its family member, at the weight's own mean and std."""
    for _, p in projected_weights(model):
        member = from_matrix(project(to_matrix(p)), tuple(p.shape))
        unit = (member - member.mean()) / (member.std() + 1e-12)
        p.copy_(unit * p.std() + p.mean())
    return model


class InFamily(nn.Module):
    """A weight given by free factors of a family member, for direct training in the family.

    The factors start as the SVD factors of the projected weight; the family's bases are
    fixed buffers, so gradient descent moves only within the family.
    """

    def __init__(self, weight: torch.Tensor, project: Projector) -> None:
        super().__init__()
        self.shape = tuple(weight.shape)
        member = project(to_matrix(weight))
        u, s, vh = torch.linalg.svd(member, full_matrices=False)
        r = int((s > s[0] * 1e-6).sum())
        # The column/row spaces the family allows are those the member spans at full rank.
        self.a = nn.Parameter(u[:, :r] * s[:r].sqrt())
        self.b = nn.Parameter(vh[:r].T * s[:r].sqrt())

    def forward(self, _: torch.Tensor) -> torch.Tensor:
        return from_matrix(self.a @ self.b.T, self.shape)


def train_in_family(model: nn.Module, project: Projector, cfg: evaluate.EvalConfig,
                    eval_data: evaluate.EvalData, steps: int) -> float:
    """Test accuracy after ``steps`` AdamW steps on the factors (and all other parameters)."""
    model = project_(deepcopy(model), project)
    for name, p in projected_weights(model):
        owner = model.get_submodule(name.rpartition(".")[0])
        parametrize.register_parametrization(owner, "weight", InFamily(p.detach(), project),
                                             unsafe=True)
        owner.parametrizations.weight.original.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if p.dim() >= 2], "weight_decay": 1e-2},
              {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0}]
    direct = evaluate.EvalConfig(**{**cfg.to_dict(), "lr": 2e-3, "ks": (steps,)})
    points = evaluate.train_and_measure(model, direct, eval_data, 0, torch.device("cpu"),
                                        optimizer=torch.optim.AdamW(groups, lr=direct.lr))
    return points[str(steps)]["accuracy"]


def trained(entry: samplers.HeldOut, cfg: evaluate.EvalConfig, eval_data: evaluate.EvalData,
            steps: int, seed: int, cache: Path) -> nn.Module:
    """``entry`` trained ``steps`` steps from its default init (cached as safetensors)."""
    torch.manual_seed(seed)
    model = entry.build()
    path = cache / f"{entry.name}-seed{seed}-steps{steps}.safetensors"
    if path.is_file():
        model.load_state_dict(load_file(str(path)))
        return model
    recipe = evaluate.EvalConfig(**{**cfg.to_dict(), "ks": (steps,)})
    torch.manual_seed(seed)
    evaluate.train_and_measure(model, recipe, eval_data, seed, torch.device("cpu"))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)
    return model


def table(rows: list[dict]) -> str:
    """Markdown: accuracy at each k per init and architecture, and the share of the trained
    accuracy each family keeps at k=0."""
    ks = list(rows[0]["at"])
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    inits = list(dict.fromkeys(r["init"] for r in rows))
    by = {(r["arch"], r["init"]): r for r in rows}
    head = ["init"] + [f"{a} k={k}" for a in archs for k in ks] + ["kept at k=0", "passes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for init in inits:
        cells, shares = [], []
        for a in archs:
            row = by.get((a, init))
            cells += [f"{row['at'][k]:.1f}" if row else "" for k in ks]
            if row and (a, "trained") in by:
                shares.append(row["at"][ks[0]] / by[a, "trained"]["at"][ks[0]])
            if row and "direct" in row:
                cells[-1] += f" (direct {row['direct']:.1f})"
        kept = " / ".join(f"{100 * s:.0f}%" for s in shares)
        passed = sum(s >= PASS_SHARE for s in shares)
        lines.append("| " + " | ".join([init, *cells, kept, f"{passed}/{len(shares)}"]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS))
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument("--rank", type=int, default=32, help="the decoder family's rank")
    parser.add_argument("--train-steps", type=int, default=600)
    parser.add_argument("--ks", type=int, nargs="+", default=[0, 200])
    parser.add_argument("--direct-steps", type=int, default=0,
                        help="also train inside each family for this many AdamW steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="runs/family", help="folder of trained weights")
    parser.add_argument("--data", default=None)
    parser.add_argument("--json", default=None, help="write the rows to this file")
    args = parser.parse_args()
    cfg = evaluate.EvalConfig(task="image", data=args.data, ks=tuple(args.ks), device="cpu",
                              train_samples=20000, test_samples=2000, seeds=(args.seed,))
    entries = evaluate.select_archs(evaluate.EvalConfig(**{**cfg.to_dict(),
                                                           "archs": args.archs}))
    projectors = {spec: family(spec, args.rank) for spec in args.families}
    eval_data = evaluate.EvalData(cfg, torch.device("cpu"))
    rows = []

    def run(entry: samplers.HeldOut, init: str, model: nn.Module, **extra) -> None:
        torch.manual_seed(args.seed)
        points = evaluate.train_and_measure(model, cfg, eval_data, args.seed, torch.device("cpu"))
        row = {"arch": entry.name, "init": init,
               "at": {k: round(100 * p["accuracy"], 2) for k, p in points.items()}, **extra}
        rows.append(row)
        print(json.dumps(row), flush=True)

    for entry in entries:
        net = trained(entry, cfg, eval_data, args.train_steps, args.seed, Path(args.cache))
        run(entry, "trained", deepcopy(net))
        for spec, project in projectors.items():
            extra = {}
            if args.direct_steps:
                extra["direct"] = round(100 * train_in_family(
                    entry.build(), project, cfg, eval_data, args.direct_steps), 2)
            run(entry, spec, project_(deepcopy(net), project), **extra)
        torch.manual_seed(args.seed)
        run(entry, "default", entry.build())
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(table(rows))
    print(f"\nCommand: .venv/bin/python bench/family.py --archs {' '.join(args.archs)} "
          f"--families {' '.join(args.families)} --train-steps {args.train_steps} "
          f"--ks {' '.join(map(str, args.ks))} --direct-steps {args.direct_steps}"
          + (f" --rank {args.rank}" if args.rank != 32 else ""))


if __name__ == "__main__":
    main()
