"""Evaluate a weight-diffusion generator honestly: accuracy *and* novelty, against baselines.

Weight diffusion often memorizes its training checkpoints, so accuracy alone says little.
For every zoo architecture, each method below makes ``samples`` models; each model is
measured on the CIFAR-10 test split before training (k=0) and after ``k`` steps of the
fixed recipe of :mod:`training.recipe`, and its novelty against the **training
checkpoints** C (every run of the zoo at one saved step):

* **distance**: ``min_c ||θ - θ_c|| / ||θ_c||`` over the flattened parameters;
* **overlap**: ``max_c`` of the fraction of test images on which the argmax predictions of
  the model and of checkpoint c agree, both untrained (k=0).

Each row keeps the run id of the checkpoint nearest by distance (``nearest``) and of the
one with the highest overlap (``overlap_run``). The methods:

* ``diffusion``: DDIM samples of the generator (``hyperinit.diffusion.sample_state_dicts``,
  ``n=samples`` in one batch from ``seed``), timed per model in that batch and alone;
* ``checkpoint``: the first ``samples`` checkpoints (by run id) themselves, the reference.
  Their novelty is measured against the *other* checkpoints (a model is never novel with
  respect to itself); with a single checkpoint it is undefined (``None``);
* ``noise-0.06``, ``noise-0.12``: checkpoint ``i mod |C|`` plus Gaussian noise, relative per
  tensor: ``θ + σ · std(θ) · ε`` with the tensor's population std (p-diff adds absolute
  noise, meaningless across layers of different scales; one-element tensors get none).
  Both σ draw the same ε for sample i, so they differ in scale only;
* ``mean-16``: the elementwise mean of a seeded subset of 16 checkpoints, a different one per
  sample; with 16 or fewer checkpoints, the mean of all of them, made once (one row, whose
  ``averaged`` says how many);
* ``gaussian``: samples of the diagonal Gaussian fitted to C (per-element mean and
  population std);
* ``ghn``: the hypernetwork's prediction itself (``hyperinit.predict`` with ``noise=0``: what
  the hypernetwork learned, with none of the noise its default init adds; the same parameters
  for every sample);
* ``default``: the freshly built module after ``torch.manual_seed(seed + i)``.

Buffers (BatchNorm statistics): checkpoint-derived models take those of their source
checkpoint (averages over the checkpoints for ``mean-16`` and ``gaussian``; integer buffers
from the first); the others those of a freshly built module (BatchNorm reset).

Sample i of every method trains on the same batch stream (seed ``seed + i``), so methods
differ only in their initial parameters. Rows are appended to ``OUT/results.jsonl`` as they
finish and a restarted run skips them; ``results.json`` (per arch and method), ``table.md``
and ``novelty.png`` (accuracy at the first k against overlap) summarize them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

import hyperinit
from hyperinit.diffusion import WeightDiffusion, load_diffusion, sample_state_dicts
from hyperinit.generator import folder_id

from .recipe import (
    EvalData,
    RecipeConfig,
    autocast_for,
    logits,
    resolve_device,
    train_and_measure,
)
from .results import RESULTS, check_resumable, load_rows
from .zoo import (
    ZooEntry,
    arch_graph,
    build_arch,
    load_zoo,
    select_checkpoints,
)
from .zoo_eval_config import MEAN_OF, NOISE, ZooEvalConfig
from .zoo_eval_report import write_reports

# Options that change the numbers of a row: a resumed run must keep them. ``ghn_models``
# names how the ghn method makes its models (earlier rows used a prediction seed per model);
# ``generator_id`` is the diffusion folder's name and weights hash (retrained in place: new).
GHN_MODELS = "one prediction"
ROW_OPTIONS = ("generator", "generator_id", "zoo", "step", "seed", "ghn", "ghn_models",
               "diffusion_steps", "data", "ks", "train_samples", "test_samples", "batch_size",
               "lr", "weight_decay", "amp")


# ----- checkpoints and novelty --------------------------------------------------------------
def training_checkpoints(cfg: ZooEvalConfig) -> dict[str, list[ZooEntry]]:
    """The training checkpoints C of each selected arch (:func:`training.zoo.
    select_checkpoints` of ``cfg.step`` and ``cfg.archs``), by arch, in run id order."""
    by_arch: dict[str, list[ZooEntry]] = {}
    for entry in select_checkpoints(load_zoo(cfg.zoo), cfg.step, cfg.archs):
        if entry.task is not None:
            raise ValueError(f"{entry.path} was trained on task {entry.task.name}: zoo eval "
                             "measures ten-way models on all of CIFAR-10 and does not evaluate "
                             "zoos over tasks yet; evaluate a zoo built without tasks")
        by_arch.setdefault(entry.record["arch"], []).append(entry)
    if not by_arch:
        raise ValueError(f"the zoo at {cfg.zoo} has no checkpoints")
    return {arch: sorted(entries, key=lambda e: e.record["run_id"])
            for arch, entries in by_arch.items()}


@dataclass
class Checkpoints:
    """The training checkpoints C of one architecture: what the baselines derive from and
    novelty is measured against."""

    arch: str
    step: int  # the zoo step they were saved at
    run_ids: list[str]
    states: list[dict[str, torch.Tensor]]  # full state dicts: parameters and buffers
    param_names: list[str]
    flat: torch.Tensor  # (checkpoints, parameters) float32
    predictions: torch.Tensor  # (checkpoints, test images): untrained argmax predictions

    def __len__(self) -> int:
        return len(self.run_ids)

    def flatten(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """The parameters of ``state``, flattened in ``param_names`` order, float32."""
        return flatten(state, self.param_names)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inverse of :meth:`flatten`, shaped like the checkpoints' parameters."""
        shapes = [self.states[0][n].shape for n in self.param_names]
        pieces = flat.split([s.numel() for s in shapes])
        return {n: p.reshape(s) for n, p, s in zip(self.param_names, pieces, shapes, strict=True)}


def flatten(state: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    """The tensors ``names`` of ``state``, flattened and concatenated, float32 on CPU."""
    return torch.cat([state[n].detach().reshape(-1).float().cpu() for n in names])


def to_module(arch: str, state: dict[str, torch.Tensor]) -> nn.Module:
    """A freshly built ``arch`` with the entries of ``state`` loaded: its parameters, and any
    buffers it holds; buffers it lacks keep the fresh module's values (BatchNorm reset)."""
    model = build_arch(arch)
    model.load_state_dict({**model.state_dict(), **state}, strict=True)
    return model


@torch.no_grad()
def predictions(model: nn.Module, eval_data: EvalData, autocast: torch.autocast) -> torch.Tensor:
    """Argmax predictions on the test split, in eval mode, on CPU."""
    model.eval()
    out = []
    for x, _ in eval_data.test_batches():
        with autocast:
            out.append(logits(model(x)).argmax(-1).cpu())
    model.train()
    return torch.cat(out)


def load_checkpoints(arch: str, entries: list[ZooEntry], eval_data: EvalData,
                     device: torch.device, autocast: torch.autocast) -> Checkpoints:
    """Read the checkpoints' weights and compute each one's test predictions once."""
    states = [e.state_dict() for e in entries]
    names = [n for n, _ in build_arch(arch).named_parameters()]
    preds = [predictions(to_module(arch, s).to(device), eval_data, autocast) for s in states]
    return Checkpoints(arch, entries[0].record["step"], [e.record["run_id"] for e in entries],
                       states, names,
                       torch.stack([flatten(s, names) for s in states]), torch.stack(preds))


def novelty(theta: torch.Tensor, preds: torch.Tensor, ckpts: Checkpoints,
            exclude: int | None = None) -> dict[str, Any]:
    """Distance and prediction overlap to the nearest checkpoint, leaving out ``exclude``.

    ``theta`` is a flattened model (:meth:`Checkpoints.flatten`), ``preds`` its untrained
    test predictions. Returns ``distance`` (min relative L2 distance), ``nearest`` (its run
    id), ``overlap`` (max agreement) and ``overlap_run``; all ``None`` if no checkpoint is left.
    """
    keep = [j for j in range(len(ckpts)) if j != exclude]
    if not keep:
        return {"distance": None, "nearest": None, "overlap": None, "overlap_run": None}
    flat = ckpts.flat[keep]
    distance = (flat - theta).norm(dim=1) / flat.norm(dim=1)
    overlap = (ckpts.predictions[keep] == preds).float().mean(dim=1)
    near, most = int(distance.argmin()), int(overlap.argmax())
    return {"distance": distance[near].item(), "nearest": ckpts.run_ids[keep[near]],
            "overlap": overlap[most].item(), "overlap_run": ckpts.run_ids[keep[most]]}


# ----- the methods --------------------------------------------------------------------------
def sample_count(method: str, checkpoints: int, samples: int) -> int:
    """Models a method makes: fewer where it has fewer distinct ones (see the docstring)."""
    if method == "checkpoint":
        return min(samples, checkpoints)
    if method == "mean-16" and checkpoints <= MEAN_OF:
        return 1
    return samples


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Elementwise mean of float entries; other entries (step counters) from the first."""
    return {k: torch.stack([s[k] for s in states]).mean(0) if v.is_floating_point() else v
            for k, v in states[0].items()}


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def add_noise(ckpts: Checkpoints, i: int, sigma: float, seed: int,
              ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Checkpoint ``i mod |C|`` plus ``sigma * std(tensor) * N(0, 1)`` on every parameter."""
    source = i % len(ckpts)
    state, rng = dict(ckpts.states[source]), _rng(seed)
    for name in ckpts.param_names:
        p = state[name]
        state[name] = p + sigma * p.std(correction=0) * torch.randn(p.shape, generator=rng)
    return state, {"source": ckpts.run_ids[source]}


def mean_of(ckpts: Checkpoints, seed: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The mean of a seeded subset of ``MEAN_OF`` checkpoints, or of all if not more."""
    pick = list(range(len(ckpts)))
    if len(ckpts) > MEAN_OF:
        pick = torch.randperm(len(ckpts), generator=_rng(seed))[:MEAN_OF].tolist()
    return average([ckpts.states[j] for j in pick]), {"averaged": len(pick)}


def fitted_gaussian(ckpts: Checkpoints, seed: int) -> dict[str, torch.Tensor]:
    """A sample of the diagonal Gaussian fitted to the checkpoints; averaged buffers."""
    mean, std = ckpts.flat.mean(0), ckpts.flat.std(0, correction=0)
    theta = mean + std * torch.randn(mean.shape, generator=_rng(seed))
    return {**average(ckpts.states), **ckpts.unflatten(theta)}


def fresh(arch: str, seed: int, ghn: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Parameters of ``arch`` built after ``manual_seed(seed)``, then predicted if ``ghn``."""
    torch.manual_seed(seed)
    model = build_arch(arch)
    if ghn is not None:
        hyperinit.predict(model, ghn, noise=0.0)
    return {n: p.detach() for n, p in model.named_parameters()}


def sample_diffusion(model: WeightDiffusion, arch: str, cfg: ZooEvalConfig,
                     ) -> tuple[list[dict[str, torch.Tensor]], dict[str, float]]:
    """``cfg.samples`` DDIM samples in one batch, and the seconds per model: in that batch
    (``sample_seconds``) and for one model sampled alone (``sample_seconds_one``)."""
    graph = arch_graph(arch)
    start = time.perf_counter()
    states = sample_state_dicts(model, graph, cfg.samples, cfg.seed, cfg.diffusion_steps)
    batch = (time.perf_counter() - start) / cfg.samples
    start = time.perf_counter()
    sample_state_dicts(model, graph, 1, cfg.seed, cfg.diffusion_steps)
    return states, {"sample_seconds": batch, "sample_seconds_one": time.perf_counter() - start}


class Generators:
    """The diffusion model and the GHN, loaded on first use; diffusion samples per arch."""

    def __init__(self, cfg: ZooEvalConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self._diffusion: WeightDiffusion | None = None
        self._ghn: tuple[nn.Module, dict[str, Any]] | None = None
        self._samples: dict[str, tuple[list[dict[str, torch.Tensor]], dict[str, Any]]] = {}

    def ghn(self) -> tuple[nn.Module, dict[str, Any]]:
        """The hypernetwork (loaded once) and what to record: its id."""
        if self._ghn is None:
            model = hyperinit.load_generator(self.cfg.ghn)
            self._ghn = model, {"generator": model.id}
        return self._ghn

    def diffusion(self, arch: str) -> tuple[list[dict[str, torch.Tensor]], dict[str, Any]]:
        """The samples of ``arch`` (made once) and what to record: timings, generator id."""
        if self._diffusion is None:
            self._diffusion = load_diffusion(self.cfg.generator).to(self.device)
        if arch not in self._samples:
            states, seconds = sample_diffusion(self._diffusion, arch, self.cfg)
            self._samples[arch] = states, {**seconds,
                                           "generator": self._diffusion.id}
        return self._samples[arch]


def make_model(method: str, i: int, ckpts: Checkpoints, cfg: ZooEvalConfig,
               generators: Generators) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Sample ``i`` of ``method``: its state (parameters, maybe buffers) and what to record,
    including ``sample_seconds``, the time it took to make."""
    seed = cfg.seed + i
    info: dict[str, Any] = {}
    ghn = None
    if method == "ghn":  # loaded before the clock starts
        ghn, info = generators.ghn()
    start = time.perf_counter()
    if method == "diffusion":
        states, info = generators.diffusion(ckpts.arch)
        state = states[i]
    elif method == "checkpoint":
        state, info = ckpts.states[i], {"source": ckpts.run_ids[i]}
    elif method in NOISE:
        state, info = add_noise(ckpts, i, NOISE[method], seed)
    elif method == "mean-16":
        state, info = mean_of(ckpts, seed)
    elif method == "gaussian":
        state = fitted_gaussian(ckpts, seed)
    else:
        state = fresh(ckpts.arch, seed, ghn)
    return state, {"sample_seconds": time.perf_counter() - start, **info}


# ----- the run ------------------------------------------------------------------------------
def run_one(cfg: ZooEvalConfig, recipe: RecipeConfig, ckpts: Checkpoints, method: str, i: int,
            generators: Generators, eval_data: EvalData, device: torch.device,
            autocast: torch.autocast) -> dict[str, Any]:
    """One result row: make sample ``i`` of ``method``, measure its novelty, train it."""
    start = time.perf_counter()
    state, info = make_model(method, i, ckpts, cfg, generators)
    model = to_module(ckpts.arch, state).to(device)
    preds = predictions(model, eval_data, autocast)
    itself = i if method == "checkpoint" else None
    near = novelty(ckpts.flatten(state), preds, ckpts, exclude=itself)
    torch.manual_seed(cfg.seed + i)  # dropout and the like: the same stream for every method
    points = train_and_measure(model, recipe, eval_data, cfg.seed + i, device)
    return {"arch": ckpts.arch, "zoo_step": ckpts.step, "method": method, "sample": i, **info,
            **near, "seconds": round(time.perf_counter() - start, 2), "at": points}


def evaluate_zoo(cfg: ZooEvalConfig) -> list[dict[str, Any]]:
    """Run every (arch, method, sample) not yet in ``OUT/results.jsonl``; write the reports.

    Returns the rows of this config's selection, in (arch, method, sample) order.
    """
    selected = training_checkpoints(cfg)
    if "diffusion" in cfg.methods and not Path(cfg.generator).is_dir():
        raise FileNotFoundError(f"generator {cfg.generator} is not a folder: give a weight-"
                                "diffusion checkpoint folder (config.json, model.safetensors, "
                                "scheduler_config.json)")
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = folder_id(cfg.generator) if "diffusion" in cfg.methods else None
    check_resumable({**cfg.to_dict(), "ghn_models": GHN_MODELS, "generator_id": weights}, out,
                    ROW_OPTIONS)
    done = load_rows(out / RESULTS, ("arch", "method", "sample"))
    jobs = [(arch, method, i) for arch, entries in selected.items() for method in cfg.methods
            for i in range(sample_count(method, len(entries), cfg.samples))]
    todo = [job for job in jobs if job not in done]
    if todo:
        recipe = cfg.recipe()
        eval_data = EvalData(recipe, device)
        autocast = autocast_for(recipe, device)
        generators = Generators(cfg, device)
        bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="zoo eval")
        with open(out / RESULTS, "a") as f:
            for arch, arch_jobs in groupby(todo, key=lambda job: job[0]):
                bar.set_postfix_str(f"{arch}: checkpoints")
                ckpts = load_checkpoints(arch, selected[arch], eval_data, device, autocast)
                for _, method, i in arch_jobs:
                    bar.set_postfix_str(f"{arch} {method} {i}")
                    row = run_one(cfg, recipe, ckpts, method, i, generators, eval_data, device,
                                  autocast)
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                    done[arch, method, i] = row
                    bar.update(1)
        bar.close()
    rows = [done[job] for job in jobs]
    write_reports(cfg, rows, out)
    return rows
