"""Evaluate a weight-diffusion generator honestly: accuracy *and* novelty, against baselines.

Weight diffusion often memorizes its training checkpoints, so accuracy alone says little.
For every zoo architecture, each method below makes ``samples`` models; each model is
measured on the CIFAR-10 test split before training (k=0) and after ``k`` steps of the
fixed recipe of :mod:`training.recipe`, and its novelty against the **training
checkpoints** C (every run of the zoo at one saved step):

* **distance**: ``min_c ||θ - θ_c|| / ||θ_c||`` over the flattened parameters;
* **overlap**: ``max_c`` of the fraction of test images on which the argmax predictions of
  the model and of checkpoint c agree, both untrained (k=0) and, as step 0 measures
  models, with BatchNorm statistics calibrated on training batches (:func:`predictions`).

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
* ``lowrank-gaussian-0.5``: the mean of C plus half a sample of the Gaussian with C's
  empirical covariance (:func:`fitted_gaussian`): it varies only along directions in which
  checkpoints differ, so its samples differ from each other as the zoo's runs do, not by
  independent noise on every element;
* ``ghn``: the hypernetwork's prediction itself (``hyperinit.predict`` with ``noise=0``: what
  the hypernetwork learned, with none of the noise its default init adds; the same parameters
  for every sample);
* ``default``: the freshly built module after ``torch.manual_seed(seed + i)``.

Buffers (BatchNorm statistics): checkpoint-derived models take those of their source
checkpoint (averages over the checkpoints for ``mean-16`` and the Gaussians; integer buffers
from the first); the others those of a freshly built module (BatchNorm reset).

**Zoos over tasks** (built with ``tasks=K``) are evaluated on **held-out tasks**
(:func:`training.tasks.held_out_tasks`, which no zoo trains on; ``tasks`` picks them): each
model is made for the task (a ``K``-way head), trains and is measured on the task's images
(:meth:`training.recipe.EvalData.for_task`), and its rows say ``task``. Novelty is measured
as above against all the training checkpoints of the arch, on the held-out task's test
images; overlap compares output indices, so it asks whether two networks compute the same
function whatever classes the indices name (a copy of a checkpoint overlaps with it fully
on any task). The methods (``TASK_METHODS``):

* ``diffusion``: DDIM samples conditioned on the held-out task's descriptor;
* ``nearest-task``: what a practitioner would fine-tune, the checkpoint of the training task
  most similar to the held-out one (:func:`nearest_task`: most shared classes, the dot
  product of the task descriptors; ties go to the first checkpoint in run id order). Its
  body is the checkpoint's; its head is **mapped** (:func:`transfer`): the rows of classes
  the two tasks share are the checkpoint's rows of the same class, the other rows a fresh
  default-init head's (``manual_seed(seed + i)``, the same head ``default`` gets). Mapping
  keeps everything the checkpoint knows about the new task, so the baseline is the
  strongest form of transfer from the zoo; sample i differs in its fresh rows and batches.
  Its row says ``source``, ``source_task`` and ``shared`` (how many classes);
* ``nearest-noise-0.06``, ``nearest-noise-0.12``: that model plus relative noise as above;
* ``mean-16``, ``gaussian``, ``lowrank-gaussian-0.5``: as above, over the checkpoints of
  every training task, with their heads **mapped by class** (:func:`for_task`): each row of
  the held-out task's head is the mean (or a fitted Gaussian) of that class's rows over the
  checkpoints whose task has the class, and a class none of them has keeps a fresh
  default-init row. The bodies are averaged as they are; in a zoo whose runs fine-tune one
  parent (``hyperinit zoo build parent_steps=P``) that mean is a model soup;
* ``ghn``: the hypernetwork's prediction for the arch with the task's number of classes;
* ``default``: the freshly built ``K``-way module.

Sample i of every method trains on the same batch stream (seed ``seed + i``), so methods
differ only in their initial parameters. Rows are appended to ``OUT/results.jsonl`` as they
finish and a restarted run skips them; :mod:`training.zoo_eval_report` summarizes them in
``results.json``, ``table.md``, ``novelty.png`` and ``steps.png``.

**Held-out architectures** (``held_out_archs``, zoos over tasks only): architectures of the
zoo's families that the zoo never trained (no checkpoint has their graph), evaluated on the
same held-out tasks. They have no checkpoints of their own, so the methods are those that
can make their shapes (``HELD_OUT_ARCH_METHODS``): ``diffusion`` (the generator is
conditioned on the graph), ``ghn``, ``default``, and ``nearest-task`` (with its noisy
variants) by **weight selection** (Xu et al., 2024, "Initializing Models with Larger
Ones"): the checkpoint of the nearest training task among every zoo architecture (ties go
to the architecture covering most of the target's values, then zoo order) gives each
tensor of the same name its leading block, the rest keeping the fresh module's values, and
its head is mapped as above (:func:`map_checkpoint`). Their distance is undefined (other
shapes), their overlap is against every training checkpoint, and their rows say
``held_out_arch``. ``held_out_only`` makes models of the held-out architectures alone.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

import hyperinit
from hyperinit.diffusion import WeightDiffusion, load_diffusion, sample_state_dicts

from .recipe import (
    EvalData,
    RecipeConfig,
    autocast_for,
    calibrated,
    logits,
    resolve_device,
    train_and_measure,
)
from .results import RESULTS, check_resumable, load_rows
from .samplers import NUM_CLASSES
from .tasks import Task, held_out_tasks
from .zoo import (
    ZooEntry,
    arch_graph,
    arch_hash,
    build_arch,
    head_dims,
    load_zoo,
    map_checkpoint,
    record_classes,
    select_checkpoints,
)
from .zoo_eval_config import (
    HELD_OUT_ARCH_METHODS,
    LOWRANK,
    MEAN_OF,
    NEAREST_NOISE,
    NOISE,
    ZooEvalConfig,
)
from .zoo_eval_report import write_reports

# Options that change the numbers of a row: a resumed run must keep them. ``ghn_models``
# names how the ghn method makes its models (earlier rows used a prediction seed per model);
# ``generator_id`` is the diffusion folder's name and weights hash (retrained in place: new);
# ``task_heads`` how mean-16 and gaussian make a held-out task's head (earlier rows of zoos
# over tasks averaged heads position by position; zoos without tasks record None).
GHN_MODELS = "one prediction"
TASK_HEADS = "by class"
# ``predictions`` for overlap are of BatchNorm-calibrated models (earlier rows: as made).
OVERLAP_OF = "calibrated models"
CALIBRATION_SEED = 0  # the training-batch stream every model's statistics are estimated on
# Options added after rows were first written, with the value those rows were made with.
ADDED_OPTIONS = {"diffusion_guidance": 1.0}
ROW_OPTIONS = ("zoo", "step", "seed", "task_heads", "overlap_of", "data", "ks",
               "train_samples", "test_samples", "batch_size", "lr", "weight_decay", "amp")
# Options that change only one method's rows: a resumed run compares them only where it
# holds rows of that method, so a new or retrained generator is measured beside baselines
# that are already there (and a run of baselines alone takes any generator later).
METHOD_OPTIONS = {"diffusion": ("generator", "generator_id", "diffusion_steps",
                                "diffusion_guidance"),
                  "ghn": ("ghn", "ghn_models")}
# What identifies a row in results.jsonl: without tasks, and in a zoo over tasks.
ROW_KEY = ("arch", "method", "sample")
TASK_ROW_KEY = ("arch", "task", "method", "sample")
Job = tuple[str, Task | None, str, int]  # (arch, held-out task or None, method, sample)


# ----- checkpoints and tasks ----------------------------------------------------------------
def training_checkpoints(cfg: ZooEvalConfig) -> dict[str, list[ZooEntry]]:
    """The training checkpoints C of each selected arch (:func:`training.zoo.
    select_checkpoints` of ``cfg.step`` and ``cfg.archs``), by arch, in run id order.

    The checkpoints of one arch must share their shapes (one head size) and the zoo must be
    all over tasks or all without, since every method's models are compared with all of C.
    """
    by_arch: dict[str, list[ZooEntry]] = {}
    for entry in select_checkpoints(load_zoo(cfg.zoo), cfg.step, cfg.archs):
        by_arch.setdefault(entry.record["arch"], []).append(entry)
    if not by_arch:
        raise ValueError(f"the zoo at {cfg.zoo} has no checkpoints")
    for arch, entries in by_arch.items():
        heads = sorted({record_classes(e.record) for e in entries})
        if len(heads) > 1:
            raise ValueError(f"the checkpoints of {arch} have heads of {heads} classes: zoo eval "
                             "compares models of one shape per architecture; evaluate a zoo "
                             "whose tasks have one size (hyperinit zoo build tasks=K)")
    kinds = {e.task is not None for entries in by_arch.values() for e in entries}
    if len(kinds) > 1:
        raise ValueError(f"the zoo at {cfg.zoo} mixes checkpoints with and without tasks: "
                         "evaluate one kind at a time (archs=...)")
    if cfg.held_out_archs and kinds == {True}:
        check_held_out_archs(cfg, load_zoo(cfg.zoo), by_arch)
    return {arch: sorted(entries, key=lambda e: e.record["run_id"])
            for arch, entries in by_arch.items()}


def check_held_out_archs(cfg: ZooEvalConfig, zoo: list[ZooEntry],
                         by_arch: dict[str, list[ZooEntry]]) -> None:
    """Held-out architectures are made with the zoo's one head size and are in no
    checkpoint of the zoo (compared by graph, at that head size)."""
    ways = sorted({record_classes(entries[0].record) for entries in by_arch.values()})
    if len(ways) > 1:
        raise ValueError(f"the zoo's architectures have heads of {ways} classes; held_out_archs "
                         "are evaluated on the held-out tasks of one size: pick archs of one")
    trained = {e.record["arch_hash"]: e.record["arch"] for e in zoo}
    for arch in cfg.held_out_archs:
        same = trained.get(arch_hash(arch, ways[0]))
        if same is not None:
            raise ValueError(f"{arch} is not held out: the zoo at {cfg.zoo} trained its graph "
                             f"(as {same}); held_out_archs takes architectures no checkpoint "
                             "of the zoo has (archs=... picks the zoo's own)")


def eval_tasks(cfg: ZooEvalConfig, ways: int) -> list[Task]:
    """The held-out ``ways``-way tasks a zoo over tasks is evaluated on (``cfg.tasks``)."""
    held = held_out_tasks(ways)
    if not held:
        raise ValueError(f"there are no held-out {ways}-way tasks (too few to spare any), and "
                         "zoo eval measures held-out tasks only: build the zoo with tasks=2..8")
    if cfg.tasks is None or isinstance(cfg.tasks, int):
        return held[:cfg.tasks]
    named = [Task.parse(name) for name in cfg.tasks]
    wrong = [t.name for t in named if t.ways != ways]
    if wrong:
        raise ValueError(f"{', '.join(wrong)}: the zoo's models have {ways}-way heads, so its "
                         f"held-out tasks have {ways} classes")
    return named


def targets(cfg: ZooEvalConfig, selected: dict[str, list[ZooEntry]],
            ) -> list[tuple[str, Task | None]]:
    """What models are made for: each arch alone, or, held-out task by held-out task, each
    zoo arch with it and then each held-out arch."""
    tasks: dict[str, list[Task | None]] = {}
    for arch, entries in selected.items():
        over_tasks = entries[0].task is not None
        tasks[arch] = eval_tasks(cfg, record_classes(entries[0].record)) if over_tasks else [None]
    order = list(dict.fromkeys(task for mine in tasks.values() for task in mine))
    held = list(cfg.held_out_archs or ()) if order != [None] else []
    own = [] if cfg.held_out_only else list(selected)
    return [(arch, task) for task in order
            for arch in [a for a in own if task in tasks[a]] + held]


def methods_for(cfg: ZooEvalConfig, arch: str, selected: dict[str, list[ZooEntry]],
                ) -> list[str]:
    """The methods that make models of ``arch``: all for a zoo arch, those that can make its
    shapes for a held-out one."""
    if arch in selected:
        return list(cfg.methods)
    return [m for m in cfg.methods if m in HELD_OUT_ARCH_METHODS]


def row_key(job: Job) -> tuple:
    """The job's row in ``results.jsonl``: ``ROW_KEY`` values, or ``TASK_ROW_KEY`` ones."""
    arch, task, method, i = job
    return (arch, method, i) if task is None else (arch, task.name, method, i)


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
    num_classes: int = NUM_CLASSES  # outputs of their heads
    tasks: list[Task | None] = field(default_factory=list)  # each one's task; None: all ten

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


def to_module(arch: str, state: dict[str, torch.Tensor],
              num_classes: int = NUM_CLASSES) -> nn.Module:
    """A freshly built ``arch`` (``num_classes`` outputs) with the entries of ``state``
    loaded: its parameters, and any buffers it holds; buffers it lacks keep the fresh
    module's values (BatchNorm reset)."""
    model = build_arch(arch, num_classes)
    model.load_state_dict({**model.state_dict(), **state}, strict=True)
    return model


@torch.no_grad()
def predictions(model: nn.Module, eval_data: EvalData, autocast: torch.autocast) -> torch.Tensor:
    """Argmax predictions on the test split, in eval mode, on CPU, of the model as step 0
    measures it: BatchNorm statistics calibrated on the recipe's ``calibration_batches``
    training batches (of one fixed stream, :data:`CALIBRATION_SEED`, for every model).

    A generated model has no statistics of its own; with a fresh module's it would predict
    near-constant classes and look novel for it, and a copy of a checkpoint would not be
    recognized as one."""
    model = calibrated(model, eval_data.batches(CALIBRATION_SEED),
                       eval_data.cfg.calibration_batches)
    model.eval()
    out = []
    for x, _ in eval_data.test_batches():
        with autocast:
            out.append(logits(model(x)).argmax(-1).cpu())
    model.train()
    return torch.cat(out)


@functools.cache
def parameter_shapes(arch: str, num_classes: int = NUM_CLASSES) -> dict[str, torch.Size]:
    """``arch``'s parameter shapes by name, in module order (built on ``meta``)."""
    with torch.device("meta"):
        return {n: p.shape for n, p in build_arch(arch, num_classes).named_parameters()}


def parameter_names(arch: str, num_classes: int = NUM_CLASSES) -> list[str]:
    """``arch``'s parameter names, in module order."""
    return list(parameter_shapes(arch, num_classes))


def load_checkpoints(arch: str, entries: list[ZooEntry], eval_data: EvalData,
                     device: torch.device, autocast: torch.autocast) -> Checkpoints:
    """Read the checkpoints' weights and compute each one's test predictions (on
    ``eval_data``: a held-out task's images in a zoo over tasks) once."""
    classes = record_classes(entries[0].record)
    states = [e.state_dict() for e in entries]
    names = parameter_names(arch, classes)
    preds = [predictions(to_module(arch, s, classes).to(device), eval_data, autocast)
             for s in states]
    return Checkpoints(arch, entries[0].record["step"], [e.record["run_id"] for e in entries],
                       states, names, torch.stack([flatten(s, names) for s in states]),
                       torch.stack(preds), classes, [e.task for e in entries])


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


def pool_novelty(preds: torch.Tensor, pool: list[Checkpoints]) -> dict[str, Any]:
    """:func:`novelty` of a held-out architecture's model: its overlap with every training
    checkpoint of ``pool``; no distance, since the shapes differ."""
    overlap = torch.cat([(c.predictions == preds).float().mean(dim=1) for c in pool])
    most = int(overlap.argmax())
    run_ids = [run for c in pool for run in c.run_ids]
    return {"distance": None, "nearest": None, "overlap": overlap[most].item(),
            "overlap_run": run_ids[most]}


# ----- the methods --------------------------------------------------------------------------
def sample_count(method: str, checkpoints: int, samples: int) -> int:
    """Models a method makes: fewer where it has fewer distinct ones (see the docstring)."""
    if method == "checkpoint":
        return min(samples, checkpoints)
    if method == "mean-16" and checkpoints <= MEAN_OF:
        return 1
    return samples


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Elementwise mean of float entries, NaN (a value a state lacks) left out; other
    entries (step counters) from the first."""
    return {k: torch.stack([s[k] for s in states]).nanmean(0) if v.is_floating_point() else v
            for k, v in states[0].items()}


def for_task(ckpts: Checkpoints, task: Task | None, seed: int,
             ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """The checkpoints' states as models for ``task`` (None: as they are), and the fresh
    state (``manual_seed(seed)``) that fills what none of them has.

    Each checkpoint's head rows are mapped to the task's classes (:func:`map_checkpoint`);
    the rows of classes its own task lacks are NaN, so means and stds over the checkpoints
    leave them out."""
    if task is None:
        return ckpts.states, {}
    heads = head_dims(ckpts.arch, task.ways)
    states = []
    for state, source in zip(ckpts.states, ckpts.tasks, strict=True):
        mapped = map_checkpoint(state, source, ckpts.arch, task, seed)
        for name, dim in heads.items():
            for row, cls in enumerate(task.classes):
                if cls not in source.classes:
                    mapped[name].select(dim, row).fill_(math.nan)
        states.append(mapped)
    torch.manual_seed(seed)
    return states, build_arch(ckpts.arch, task.ways).state_dict()


def filled(state: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor],
           ) -> dict[str, torch.Tensor]:
    """``state`` with its NaN values taken from ``fresh``."""
    return {k: torch.where(v.isnan(), fresh[k], v) if k in fresh and v.is_floating_point()
            else v for k, v in state.items()}


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def perturb(state: dict[str, torch.Tensor], names: list[str], sigma: float, seed: int,
            ) -> dict[str, torch.Tensor]:
    """``state`` with ``sigma * std(tensor) * N(0, 1)`` added to each parameter of ``names``."""
    state, rng = dict(state), _rng(seed)
    for name in names:
        p = state[name]
        state[name] = p + sigma * p.std(correction=0) * torch.randn(p.shape, generator=rng)
    return state


def add_noise(ckpts: Checkpoints, i: int, sigma: float, seed: int,
              ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Checkpoint ``i mod |C|`` plus relative noise (:func:`perturb`) on every parameter."""
    source = i % len(ckpts)
    return (perturb(ckpts.states[source], ckpts.param_names, sigma, seed),
            {"source": ckpts.run_ids[source]})


def mean_of(ckpts: Checkpoints, seed: int, task: Task | None = None,
            ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The mean of a seeded subset of ``MEAN_OF`` checkpoints, or of all if not more; for
    a held-out ``task``, with heads mapped by class (:func:`for_task`)."""
    pick = list(range(len(ckpts)))
    if len(ckpts) > MEAN_OF:
        pick = torch.randperm(len(ckpts), generator=_rng(seed))[:MEAN_OF].tolist()
    states, fresh = for_task(ckpts, task, seed)
    return filled(average([states[j] for j in pick]), fresh), {"averaged": len(pick)}


def fitted_gaussian(ckpts: Checkpoints, seed: int, task: Task | None = None,
                    lowrank: float | None = None) -> dict[str, torch.Tensor]:
    """A sample of a Gaussian fitted to the checkpoints (for a held-out ``task``, with heads
    mapped by class: :func:`for_task`); averaged buffers.

    The diagonal Gaussian (per-element mean and population std) by default. With
    ``lowrank`` = s, the mean plus s times a sample of the Gaussian with the checkpoints'
    empirical covariance, ``sum_i z_i (theta_i - mean) / sqrt(N)``: it moves only along
    directions in which checkpoints differ, where the diagonal one moves every element on its
    own (a head row a checkpoint's task lacks counts as no deviation)."""
    states, fresh = for_task(ckpts, task, seed)
    flat = torch.stack([ckpts.flatten(s) for s in states])
    mean = flat.nanmean(0)
    deviation = flat - mean
    if lowrank is None:
        std = deviation.square().nanmean(0).sqrt()
        theta = mean + std * torch.randn(mean.shape, generator=_rng(seed))
    else:
        z = torch.randn(len(flat), generator=_rng(seed))
        theta = mean + lowrank * (z @ deviation.nan_to_num(0.0)) / math.sqrt(len(flat))
    return filled({**average(states), **ckpts.unflatten(theta)}, fresh)


def fresh(arch: str, seed: int, ghn: nn.Module | None = None,
          num_classes: int = NUM_CLASSES) -> dict[str, torch.Tensor]:
    """Parameters of ``arch`` (``num_classes`` outputs) built after ``manual_seed(seed)``,
    then predicted if ``ghn``."""
    torch.manual_seed(seed)
    model = build_arch(arch, num_classes)
    if ghn is not None:
        hyperinit.predict(model, ghn, noise=0.0)
    return {n: p.detach() for n, p in model.named_parameters()}


def nearest_task(ckpts: Checkpoints, task: Task) -> int:
    """The index of the checkpoint whose training task shares the most classes with ``task``
    (the dot product of their descriptors); ties go to the first in run id order."""
    shared = [int(task.descriptor() @ t.descriptor()) for t in ckpts.tasks]
    return shared.index(max(shared))


@functools.cache
def coverage(source: str, target: str, num_classes: int) -> float:
    """The fraction of ``target``'s parameter values that weight selection from ``source``
    fills (tensors of the same name and rank; their common leading block)."""
    mine, theirs = (parameter_shapes(arch, num_classes) for arch in (target, source))
    filled = sum(math.prod(min(a, b) for a, b in zip(shape, theirs[name], strict=True))
                 for name, shape in mine.items()
                 if name in theirs and len(theirs[name]) == len(shape))
    return filled / sum(shape.numel() for shape in mine.values())


def transfer(pool: list[Checkpoints], arch: str, task: Task, seed: int,
             ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The checkpoint of the training task nearest to ``task`` (:func:`nearest_task`) among
    ``pool`` (ties go to the arch covering most of ``arch``'s values, then to pool order), as
    a model of ``arch`` for ``task`` (:func:`map_checkpoint`): for a zoo arch the checkpoint
    itself with its head rows of shared classes; for a held-out arch, weight selection."""
    def shared(c: Checkpoints) -> tuple[int, float]:
        return (int(task.descriptor() @ c.tasks[nearest_task(c, task)].descriptor()),
                coverage(c.arch, arch, task.ways))

    ckpts = max(pool, key=shared)
    j = nearest_task(ckpts, task)
    source = ckpts.tasks[j]
    state = map_checkpoint(ckpts.states[j], source, arch, task, seed)
    return state, {"source": ckpts.run_ids[j], "source_task": source.name,
                   "shared": shared(ckpts)[0]}


def sample_diffusion(model: WeightDiffusion, arch: str, cfg: ZooEvalConfig,
                     task: Task | None = None, num_classes: int = NUM_CLASSES,
                     ) -> tuple[list[dict[str, torch.Tensor]], dict[str, float]]:
    """``cfg.samples`` DDIM samples in one batch (conditioned on ``task`` if given), and the
    seconds per model: in that batch (``sample_seconds``) and for one model sampled alone
    (``sample_seconds_one``)."""
    graph = arch_graph(arch, num_classes)
    start = time.perf_counter()
    states = sample_state_dicts(model, graph, cfg.samples, cfg.seed, cfg.diffusion_steps,
                                cfg.diffusion_guidance, task)
    batch = (time.perf_counter() - start) / cfg.samples
    start = time.perf_counter()
    sample_state_dicts(model, graph, 1, cfg.seed, cfg.diffusion_steps, cfg.diffusion_guidance,
                       task)
    return states, {"sample_seconds": batch, "sample_seconds_one": time.perf_counter() - start}


def diffusion_for(cfg: ZooEvalConfig, over_tasks: bool) -> WeightDiffusion | None:
    """The weight-diffusion model of the diffusion method (None without it), loaded and
    checked before any work: a zoo over tasks needs one conditioned on task descriptors, as
    the held-out tasks are given to it."""
    if "diffusion" not in cfg.methods:
        return None
    model = load_diffusion(cfg.generator)
    if over_tasks and model.config.task_dim == 0:
        raise ValueError(f"the generator {cfg.generator} is unconditional (task_dim 0), "
                         "but a zoo over tasks is evaluated on held-out tasks it must be "
                         "given: train it on a zoo over tasks (hyperinit train "
                         "generator=diffusion zoo=DIR), which conditions it on tasks")
    return model


class Generators:
    """The diffusion model (given) and the GHN (loaded on first use); diffusion samples per
    arch and task."""

    def __init__(self, cfg: ZooEvalConfig, device: torch.device,
                 diffusion: WeightDiffusion | None = None) -> None:
        self.cfg, self.device = cfg, device
        self._diffusion = None if diffusion is None else diffusion.to(device)
        self._ghn: tuple[nn.Module, dict[str, Any]] | None = None
        self._samples: dict[tuple[str, Task | None],
                            tuple[list[dict[str, torch.Tensor]], dict[str, Any]]] = {}

    def ghn(self) -> tuple[nn.Module, dict[str, Any]]:
        """The hypernetwork (loaded once) and what to record: its id."""
        if self._ghn is None:
            model = hyperinit.load_generator(self.cfg.ghn)
            self._ghn = model, {"generator": model.id}
        return self._ghn

    def diffusion(self, arch: str, task: Task | None, num_classes: int,
                  ) -> tuple[list[dict[str, torch.Tensor]], dict[str, Any]]:
        """The samples of ``arch`` for ``task`` (made once) and what to record: timings and
        the generator id."""
        if (arch, task) not in self._samples:
            model = self._diffusion
            if model is None:
                raise ValueError("the diffusion method needs a weight-diffusion model")
            states, seconds = sample_diffusion(model, arch, self.cfg, task, num_classes)
            self._samples[arch, task] = states, {**seconds, "generator": model.id}
        return self._samples[arch, task]


def own_checkpoints(arch: str, pool: list[Checkpoints]) -> Checkpoints | None:
    """``arch``'s own checkpoints in ``pool``; None for a held-out arch."""
    return next((c for c in pool if c.arch == arch), None)


def make_model(method: str, i: int, arch: str, pool: list[Checkpoints], cfg: ZooEvalConfig,
               generators: Generators, task: Task | None = None,
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Sample ``i`` of ``method`` for ``arch`` (for the held-out ``task`` of a zoo over
    tasks), from the training checkpoints ``pool`` (``arch``'s own; every arch's for a
    held-out arch): its state (parameters, maybe buffers) and what to record, including
    ``sample_seconds``, the time it took to make."""
    seed, classes = cfg.seed + i, pool[0].num_classes
    ckpts = own_checkpoints(arch, pool)
    info: dict[str, Any] = {}
    ghn = None
    if method == "ghn":  # loaded before the clock starts
        ghn, info = generators.ghn()
    start = time.perf_counter()
    if method == "diffusion":
        states, info = generators.diffusion(arch, task, classes)
        state = states[i]
    elif method == "checkpoint":
        state, info = ckpts.states[i], {"source": ckpts.run_ids[i]}
    elif method in NOISE:
        state, info = add_noise(ckpts, i, NOISE[method], seed)
    elif method == "nearest-task":
        state, info = transfer(pool, arch, task, seed)
    elif method in NEAREST_NOISE:
        state, info = transfer(pool, arch, task, seed)
        state = perturb(state, parameter_names(arch, classes), NEAREST_NOISE[method], seed)
    elif method == "mean-16":
        state, info = mean_of(ckpts, seed, task)
    elif method == "gaussian":
        state = fitted_gaussian(ckpts, seed, task)
    elif method in LOWRANK:
        state = fitted_gaussian(ckpts, seed, task, lowrank=LOWRANK[method])
    else:
        state = fresh(arch, seed, ghn, classes)
    return state, {"sample_seconds": time.perf_counter() - start, **info}


# ----- the run ------------------------------------------------------------------------------
def run_one(cfg: ZooEvalConfig, recipe: RecipeConfig, pool: list[Checkpoints], job: Job,
            generators: Generators, eval_data: EvalData, device: torch.device,
            autocast: torch.autocast) -> dict[str, Any]:
    """One result row: make the job's model from the checkpoints ``pool`` (:func:`make_model`),
    measure its novelty, train it (on ``eval_data``, the held-out task's images for a job
    with a task)."""
    arch, task, method, i = job
    start = time.perf_counter()
    state, info = make_model(method, i, arch, pool, cfg, generators, task)
    model = to_module(arch, state, pool[0].num_classes).to(device)
    preds = predictions(model, eval_data, autocast)
    ckpts = own_checkpoints(arch, pool)
    if ckpts is None:
        near, where = pool_novelty(preds, pool), {"zoo_step": None, "held_out_arch": True}
    else:
        itself = i if method == "checkpoint" else None
        near = novelty(ckpts.flatten(state), preds, ckpts, exclude=itself)
        where = {"zoo_step": ckpts.step}
    torch.manual_seed(cfg.seed + i)  # dropout and the like: the same stream for every method
    points = train_and_measure(model, recipe, eval_data, cfg.seed + i, device)
    held_out = {} if task is None else {"task": task.name}
    return {"arch": arch, **held_out, **where, "method": method, "sample": i, **info, **near,
            "seconds": round(time.perf_counter() - start, 2), "at": points}


def evaluate_zoo(cfg: ZooEvalConfig) -> list[dict[str, Any]]:
    """Run every job (arch, [held-out task,] method, sample) not yet in
    ``OUT/results.jsonl``; write the reports.

    Returns the rows of this config's selection, in job order.
    """
    selected = training_checkpoints(cfg)
    over_tasks = next(iter(selected.values()))[0].task is not None
    cfg = cfg.for_zoo(over_tasks)
    diffusion = diffusion_for(cfg, over_tasks)
    jobs: list[Job] = [(arch, task, method, i) for arch, task in targets(cfg, selected)
                       for method in methods_for(cfg, arch, selected)
                       for i in range(sample_count(method, len(selected.get(arch, ())),
                                                   cfg.samples))]
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = None if diffusion is None else diffusion.id
    done = load_rows(out / RESULTS, TASK_ROW_KEY if over_tasks else ROW_KEY)
    held = {row["method"] for row in done.values()}
    options = ROW_OPTIONS + tuple(option for method, names in METHOD_OPTIONS.items()
                                  if method in held for option in names)
    check_resumable({**cfg.to_dict(), "ghn_models": GHN_MODELS, "generator_id": weights,
                     "task_heads": TASK_HEADS if over_tasks else None,
                     "overlap_of": OVERLAP_OF}, out, options, ADDED_OPTIONS)
    todo = [job for job in jobs if row_key(job) not in done]
    if todo:
        run_jobs(cfg, selected, todo, len(jobs), done, out, device, diffusion)
    rows = [done[row_key(job)] for job in jobs]
    write_reports(cfg, rows, out)
    return rows


def run_jobs(cfg: ZooEvalConfig, selected: dict[str, list[ZooEntry]], todo: list[Job],
             total: int, done: dict[tuple, dict[str, Any]], out: Path,
             device: torch.device, diffusion: WeightDiffusion | None = None) -> None:
    """Run ``todo`` (grouped by task, for which each arch's checkpoints are loaded once),
    appending each row to ``OUT/results.jsonl`` and to ``done`` as it finishes."""
    recipe = cfg.recipe()
    all_classes = EvalData(recipe, device)
    autocast = autocast_for(recipe, device)
    generators = Generators(cfg, device, diffusion)
    bar = tqdm(total=total, initial=total - len(todo), desc="zoo eval")
    with open(out / RESULTS, "a") as f:
        for task, group in groupby(todo, key=lambda job: job[1]):
            eval_data = all_classes if task is None else all_classes.for_task(task)
            loaded: dict[str, Checkpoints] = {}
            for job in group:
                arch = job[0]
                where = arch if task is None else f"{arch} {task.name}"
                sources = [arch] if arch in selected else list(selected)
                for source in sources:
                    if source not in loaded:
                        bar.set_postfix_str(f"{where}: checkpoints of {source}")
                        loaded[source] = load_checkpoints(source, selected[source], eval_data,
                                                          device, autocast)
                pool = [loaded[source] for source in sources]
                bar.set_postfix_str(f"{where} {job[2]} {job[3]}")
                row = run_one(cfg, recipe, pool, job, generators, eval_data, device, autocast)
                f.write(json.dumps(row) + "\n")
                f.flush()
                done[row_key(job)] = row
                bar.update(1)
    bar.close()
