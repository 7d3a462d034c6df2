"""Why does a predicted init train slower than the default one? Probe it before retraining.

For a generator and held-out CIFAR-10 architectures this prints, per weight, how spread the
predicted spectrum is (participation ratio ``(sum s^2)^2 / sum s^4``: 1 for a rank-1 matrix,
``min(out, in)`` for a flat one) beside the default init's, then the accuracy at k=0
(BatchNorm recalibrated) and after k SGD steps of the ``hyperinit eval`` image recipe for the
prediction (noise 0) and for probes that change one property of it. Each probe applies to
every weight of two or more dimensions but the head, in the ``(out, in * kh * kw)`` view:

* ``predicted``, ``default`` — the two inits themselves;
* ``rescale`` — the prediction scaled to the default init's std;
* ``spectral:G`` — the prediction scaled down (never up) to a largest singular value (the
  gain a layer can apply to its input) of at most G times the default init's
  (``hyperinit.predict.cap_gain``: what a generator with ``PredictDefaults.max_gain`` G
  gives, where no weight is above its ``max_numel``);
* ``rownorm`` — every output row of the prediction scaled to the default's mean row norm
  (a no-op for the function where BatchNorm follows);
* ``flat:R`` — the prediction's top R singular directions, all with one singular value;
* ``add:C`` — the prediction plus C times the default init (full rank);
* ``lowrank:R`` — the default init truncated to rank R (what rank alone costs);
* ``bn``, ``head`` — the prediction with the BatchNorm affine parameters, or the head, of the
  default init;
* ``he-above:N``, ``default-above:N`` — the prediction with every weight of more than N
  values replaced by He init (what a generator with ``PredictDefaults.max_numel`` N gives),
  or by the default init;
* ``layer-scale:V`` — the prediction with every layer scale (graph role ``scale``,
  ConvNeXt's ``layer_scale``) set to V (``1e-6``: the default init's). Give a generator
  folder whose ``config.json`` has ``scale_by_depth`` false to see the bare prediction's
  layer scales under ``predicted``.

Architectures are held-out names (``vgg-1000000``, ``resnet18-cifar``) or specs with 10
classes (``torchvision:resnet18``). ``--train-samples 5000 --test-samples 1000 --batch-size
64 --ks 0 30`` is the recipe of ``hyperinit predict --compare 30``, the README's first
command. Rows are JSON lines; ``--json`` writes them to a file. Run with
``.venv/bin/python bench/trainability.py --generator DIR --archs vgg-1000000 --probes
predicted default flat:32 add:1 lowrank:32``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from copy import deepcopy
from pathlib import Path

import torch
from torch import nn

import graphs
import hyperinit
from hyperinit.decoder import fan_in
from hyperinit.predict import cap_gain, he_weight, layer_scales
from training import evaluate, samplers
from training.trainer import participation_ratio

Probe = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (predicted, default) -> init


def _ratio(w: torch.Tensor) -> float:
    return round(float(participation_ratio(w.detach())), 2)


def _like(w: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``w`` with ``ref``'s std."""
    return w * (ref.std() / w.std().clamp_min(1e-12))


def _top(w: torch.Tensor, rank: int, flat: bool) -> torch.Tensor:
    """``w`` truncated to its top ``rank`` singular directions (equal values if ``flat``)."""
    u, s, vh = torch.linalg.svd(w.flatten(1).double(), full_matrices=False)
    s = torch.ones_like(s) if flat else s
    return ((u[:, :rank] * s[:rank]) @ vh[:rank]).to(w.dtype).view_as(w)


def _rownorm(w: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    rows = w.flatten(1).norm(dim=1).clamp_min(1e-12)
    scale = d.flatten(1).norm(dim=1).mean() / rows
    return w * scale.view(-1, *[1] * (w.dim() - 1))


def _above(numel: int, replace: Probe) -> Probe:
    """``replace`` for weights of more than ``numel`` values, else the prediction."""
    def chosen(w: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return replace(w, d) if w.numel() > numel else w
    return chosen


def _he(w: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """He init shaped as ``w``, drawn from a generator the global (seeded) stream seeds."""
    rng = torch.Generator().manual_seed(int(torch.randint(1 << 62, ())))
    return he_weight(w, fan_in(tuple(w.shape)), rng)


def probe(spec: str) -> Probe | str:
    """The weight probe named by ``spec``, or the name of a whole-model one."""
    kind, _, arg = spec.partition(":")
    if spec in ("predicted", "default", "bn", "head") or (kind == "layer-scale" and arg):
        return spec
    if spec == "rescale":
        return _like
    if kind == "spectral" and arg:
        return lambda w, d: cap_gain(w.clone(), float(arg))
    if spec == "rownorm":
        return _rownorm
    if kind == "flat" and arg:
        return lambda w, d: _like(_top(w, int(arg), flat=True), d)
    if kind == "add" and arg:
        return lambda w, d: w + float(arg) * d
    if kind == "lowrank" and arg:
        return lambda w, d: _like(_top(d, int(arg), flat=False), d)
    if kind == "he-above" and arg:
        return _above(int(arg), _he)
    if kind == "default-above" and arg:
        return _above(int(arg), lambda w, d: d)
    raise ValueError(f"unknown probe {spec!r}: expected predicted, default, rescale, spectral:G, "
                     "rownorm, flat:R, add:C, lowrank:R, bn, head, he-above:N, "
                     "default-above:N or layer-scale:V")


def weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every weight of two or more dimensions but the head (the last one), by name."""
    named = [(n, p) for n, p in model.named_parameters() if p.dim() >= 2]
    return dict(named[:-1])


def apply(spec: str, predicted: nn.Module, default: nn.Module) -> nn.Module:
    """The init ``spec`` names, built from the predicted and default models."""
    chosen = probe(spec)
    if chosen == "default":
        return deepcopy(default)
    model = deepcopy(predicted)
    ref = dict(default.named_parameters())
    with torch.no_grad():
        if callable(chosen):
            for name, w in weights(model).items():
                w.copy_(chosen(w, ref[name]))
        elif chosen == "bn":
            for name, mod in model.named_modules():
                if isinstance(mod, nn.modules.batchnorm._NormBase) and mod.affine:
                    mod.weight.copy_(ref[f"{name}.weight"])
                    mod.bias.copy_(ref[f"{name}.bias"])
        elif chosen == "head":
            head = [n for n, p in model.named_parameters() if p.dim() >= 2][-1]
            for name, p in model.named_parameters():
                if name.rpartition(".")[0] == head.rpartition(".")[0]:
                    p.copy_(ref[name])
        elif chosen.startswith("layer-scale:"):
            graph = graphs.build(model, (torch.zeros(2, 3, 32, 32),))
            for name in layer_scales(graph):
                model.get_parameter(name).fill_(float(chosen.partition(":")[2]))
    return model


def architectures(cfg: evaluate.EvalConfig, names: list[str]) -> list[samplers.HeldOut]:
    """Held-out entries for held-out names, 10-class builds for specs (``source:name``)."""
    held = [n for n in names if ":" not in n]
    by_name = {e.name: e for e in evaluate.select_archs(
        evaluate.EvalConfig(**{**cfg.to_dict(), "archs": held}))} if held else {}
    specs = {n: graphs.resolve(n, num_classes=10) for n in names if ":" in n}
    return [by_name[n] if n in by_name
            else samplers.HeldOut(n, lambda spec=specs[n]: spec.build(meta=False), "image")
            for n in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generator", required=True, help="generator folder or shipped name")
    parser.add_argument("--archs", nargs="+", default=["vgg-1000000"])
    parser.add_argument("--probes", nargs="+", default=["predicted", "default", "flat:32"])
    parser.add_argument("--ks", type=int, nargs="+", default=[0, 200])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None)
    parser.add_argument("--train-samples", type=int, default=20000)
    parser.add_argument("--test-samples", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--json", default=None, help="write the rows to this file")
    args = parser.parse_args()
    for spec in args.probes:
        probe(spec)  # refuse a bad name before any work
    cfg = evaluate.EvalConfig(task="image", data=args.data, ks=tuple(args.ks), device="cpu",
                              train_samples=args.train_samples, test_samples=args.test_samples,
                              batch_size=args.batch_size, seeds=(args.seed,))
    entries = architectures(cfg, args.archs)
    eval_data = evaluate.EvalData(cfg, torch.device("cpu"))
    generator = hyperinit.load_generator(args.generator)
    rows = []
    for entry in entries:
        torch.manual_seed(args.seed)
        default = entry.build()
        predicted = entry.build()
        hyperinit.predict(predicted, generator, seed=args.seed, noise=0.0)
        ref = weights(default)
        for name, w in weights(predicted).items():
            row = {"arch": entry.name, "weight": name, "shape": list(w.shape),
                   "participation": {"predicted": _ratio(w), "default": _ratio(ref[name])}}
            rows.append(row)
            print(json.dumps(row), flush=True)
        for spec in args.probes:
            torch.manual_seed(args.seed)
            points = evaluate.train_and_measure(apply(spec, predicted, default), cfg, eval_data,
                                                args.seed, torch.device("cpu"))
            row = {"arch": entry.name, "probe": spec,
                   "at": {k: round(100 * p["accuracy"], 2) for k, p in points.items()}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
