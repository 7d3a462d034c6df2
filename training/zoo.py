"""Model zoos: many small CIFAR-10 classifiers trained with varied seeds and hyperparameters.

A zoo is what a weight-diffusion generator trains on: for each architecture, several runs
(different seeds, learning rates, weight decays, batch sizes), each saved at a few training
steps. The folder is a Hugging Face **dataset** repo as it stands::

    README.md                                    dataset card (YAML front matter)
    records.jsonl                                one line per checkpoint, the index
    models/<arch_hash>/<run_id>/step-<k>.safetensors
    models/<arch_hash>/<run_id>/step-<k>.json    that checkpoint's record

Architectures are sampler names ``"<tag>-<seed>"`` (``"vgg-2"``, ``"bnresnet-5"``) of
:func:`training.samplers.zoo_samplers`. Each run is a pure function of ``(seed, arch,
index)``: its seed and hyperparameters are drawn from a stream keyed by them, so growing
``models_per_arch`` keeps the runs already there.

With ``tasks`` set, each run also draws one task (:mod:`training.tasks`: ``k`` of the ten
classes) from the training tasks, never a held-out one: it trains and is measured on that
task's images only, with a ``k``-way head (the sampler's architecture for ``k`` classes, a
graph of its own ``arch_hash``), and its records say ``task``. Without ``tasks`` a zoo is
as it always was: every class, ten-way heads, no ``task`` in the records.

With ``parent_steps`` set, the runs of an architecture are fine-tunes of one common parent
(as in Gong et al.'s zoo of per-concept fine-tunes): the ten-way module built from
:func:`parent_seed`, trained ``parent_steps`` steps on every class (0: as built). Each run
starts from its weights, the head cut to the rows of the run's classes
(:func:`map_checkpoint`), so the runs' weights line up across tasks instead of sitting in
unrelated permutations of one another, and a generator can learn how a task moves them.
Records then say ``parent`` (seed and steps) among the hyperparameters.

Training is the evaluation recipe (:mod:`training.recipe`: SGD + Nesterov, weight decay on
2+-dim tensors, cosine decay over ``steps``, crop + flip) with the run's learning rate,
weight decay and batch size, and measures test accuracy and loss at every saved step (step
0 as built: no calibration).

Every file appears atomically (temp file, then rename), so a half-written checkpoint never
exists. A restarted build skips checkpoints whose record exists; a run with some of its
checkpoints missing is trained again from its start (optimizer state is not saved, and the
same seed replays the same run) and writes only the missing ones. Nothing is ever
unpickled: weights are safetensors, records JSON.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
import statistics
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

import graphs
from hyperinit import __version__
from hyperinit.safetensors_io import atomic_path

from . import data, samplers
from .config import as_tuple
from .recipe import EvalData, RecipeConfig, resolve_device, train_steps
from .results import write_text
from .tasks import EVERY_CLASS, Task, held_out_tasks, training_tasks

RECORDS = "records.jsonl"
CARD = "README.md"
MODELS = "models"
# What a record must hold for the loader and the stats to use it.
RECORD_KEYS = ("file", "arch", "arch_hash", "run_id", "seed", "step", "hyperparameters",
               "metrics", "params")


@dataclass
class ZooConfig:
    """What to train and save. Lists are JSON (``save_at=[0,100]``) or comma-separated."""

    out: str = "runs/zoo"
    archs: tuple[str, ...] = ("vgg-2", "convnext-0")  # sampler names "<tag>-<seed>"
    models_per_arch: int = 8
    steps: int = 500  # length of each run (the cosine schedule's horizon)
    save_at: tuple[int, ...] = (250, 500)  # steps to save at; 0 saves the init
    # hyperparameters, each run draws one of each
    lrs: tuple[float, ...] = (0.02, 0.05, 0.1)
    weight_decays: tuple[float, ...] = (5e-4, 1e-3, 5e-3)
    batch_sizes: tuple[int, ...] = (64, 128)
    seed: int = 0
    # tasks: None trains on all ten classes; K (an int) draws each run's task from
    # training_tasks(K); a list of task names ("cifar10-0-3-5") draws from those
    tasks: int | tuple[str, ...] | None = None
    # where runs start. None: each from its own random init. 0: every run of an architecture
    # from one random init (the parent, drawn from seed and arch); P > 0: from that init
    # trained P steps on all ten classes with the recipe's defaults. A run over a task takes
    # the parent's head rows of its classes. Runs of one parent are fine-tunes of a common
    # model, so their weights line up across tasks (as Gong et al.'s zoo of fine-tunes does)
    parent_steps: int | None = None
    # data
    data: str | None = None  # CIFAR-10 zip or ImageFolder; None: the data folder's zip
    # a fixed random subset of the training images (a task then keeps those of its classes)
    train_samples: int | None = None
    test_samples: int | None = None  # the same, of the test images; None: all of them
    # run
    device: str = "auto"  # "auto", "cpu", "cuda"
    amp: bool = True  # bfloat16 autocast on GPU; ignored on CPU

    def __post_init__(self) -> None:
        self.archs = as_tuple(self.archs)
        self.save_at = tuple(sorted(as_tuple(int(k) for k in as_tuple(self.save_at))))
        self.lrs = as_tuple(float(v) for v in as_tuple(self.lrs))
        self.weight_decays = as_tuple(float(v) for v in as_tuple(self.weight_decays))
        self.batch_sizes = as_tuple(int(v) for v in as_tuple(self.batch_sizes))
        for name in ("archs", "save_at", "lrs", "weight_decays", "batch_sizes"):
            if not getattr(self, name):
                raise ValueError(f"{name} needs at least one value")
        if self.models_per_arch < 1 or self.steps < 1:
            raise ValueError(f"models_per_arch and steps must be at least 1, got "
                             f"{self.models_per_arch} and {self.steps}")
        if self.parent_steps is not None and self.parent_steps < 0:
            raise ValueError(f"parent_steps must be None (no parent) or at least 0, got "
                             f"{self.parent_steps}")
        if not 0 <= self.save_at[0] <= self.save_at[-1] <= self.steps:
            raise ValueError(f"save_at must be steps in 0..{self.steps}, got {self.save_at}")
        for arch in self.archs:
            parse_arch(arch)
        self.tasks = _check_tasks(self.tasks)

    def task_pool(self) -> list[Task] | None:
        """The tasks runs draw from; None when the zoo has no tasks."""
        if self.tasks is None:
            return None
        if isinstance(self.tasks, int):
            return training_tasks(self.tasks)
        return [Task.parse(name) for name in self.tasks]


def _check_tasks(tasks: Any) -> int | tuple[str, ...] | None:
    """``tasks`` as :class:`ZooConfig` keeps it: None, a number of ways, or canonical task
    names, none of them held out (those are what the zoo's generator is evaluated on)."""
    if tasks is None:
        return None
    if isinstance(tasks, str) and tasks.strip().isdigit():
        tasks = int(tasks)
    if isinstance(tasks, int) and not isinstance(tasks, bool):
        training_tasks(tasks)  # checks the range of ways
        return tasks
    names = tuple(Task.parse(str(t)).name for t in as_tuple(tasks))
    if not names:
        raise ValueError("tasks needs a number of ways (tasks=5) or at least one task name "
                         "(tasks=cifar10-0-3-5), or None for all ten classes")
    held = [n for n in names if Task.parse(n) in held_out_tasks(Task.parse(n).ways)]
    if held:
        raise ValueError(f"{', '.join(held)} {'is' if len(held) == 1 else 'are'} held out for "
                         "evaluation and never in a zoo: pick from training.tasks."
                         "training_tasks(k), or give tasks=k to draw from them")
    return names


# ----- architectures and runs ---------------------------------------------------------------
@functools.cache
def _sampler(tag: str, num_classes: int) -> samplers.Sampler:
    """One instance per tag and head size, so each caches its held-out structures once."""
    by_tag = {s.tag: s for s in samplers.zoo_samplers()}
    sampler = by_tag[tag]
    return sampler if num_classes == sampler.num_classes else dataclasses.replace(
        sampler, num_classes=num_classes)


def parse_arch(name: str, num_classes: int = samplers.NUM_CLASSES,
               ) -> tuple[samplers.Sampler, int]:
    """``"<tag>-<seed>"`` -> (that zoo sampler with ``num_classes`` outputs, seed), with a
    clear error otherwise."""
    tags = [s.tag for s in samplers.zoo_samplers()]
    tag, _, seed = name.rpartition("-")
    if tag not in tags or not seed.isdigit():
        raise ValueError(f"unknown architecture {name!r}: expected <tag>-<seed> with a tag "
                         f"of {', '.join(tags)}, e.g. vgg-2")
    if not 2 <= num_classes <= samplers.NUM_CLASSES:
        raise ValueError(f"num_classes must be 2 to {samplers.NUM_CLASSES} (a task's ways), "
                         f"got {num_classes}")
    return _sampler(tag, num_classes), int(seed)


def build_arch(name: str, num_classes: int = samplers.NUM_CLASSES) -> nn.Module:
    """The module a sampler name stands for, with ``num_classes`` outputs (a task's ways),
    freshly initialized from torch's global RNG."""
    sampler, seed = parse_arch(name, num_classes)
    return sampler.sample(seed)[1]


def arch_spec(name: str, num_classes: int = samplers.NUM_CLASSES) -> dict[str, Any]:
    """The architecture as a spec anyone can resolve (``graphs.resolve``, ``hyperinit
    predict python:training.zoo:build_arch --config '{"name": "vgg-2"}'``); ten-way ones
    name no ``num_classes``, as before tasks."""
    kwargs: dict[str, Any] = {"name": name}
    if num_classes != samplers.NUM_CLASSES:
        kwargs["num_classes"] = num_classes
    return {"source": "python", "name": "training.zoo:build_arch", "kwargs": kwargs}


@functools.cache
def arch_graph(name: str, num_classes: int = samplers.NUM_CLASSES) -> graphs.ArchGraph:
    """The graph of a sampler architecture, traced on ``meta`` (no weights made)."""
    sampler, _ = parse_arch(name, num_classes)
    with torch.device("meta"):
        module = build_arch(name, num_classes)
    return graphs.build(module, (sampler.example_input(2),), name=name)


def arch_hash(name: str, num_classes: int = samplers.NUM_CLASSES) -> str:
    """The graph hash of a sampler architecture (the zoo's folder per architecture)."""
    return arch_graph(name, num_classes).arch_hash


def record_task(record: dict[str, Any]) -> Task | None:
    """The task a zoo checkpoint's record says it was trained on; None for all ten classes
    (every checkpoint of a zoo without tasks)."""
    return Task.parse(record["task"]) if record.get("task") else None


def task_classes(task: Task | None) -> int:
    """How many outputs a model of ``task`` has: its ways, else ten (no task)."""
    return task.ways if task else samplers.NUM_CLASSES


def record_classes(record: dict[str, Any]) -> int:
    """How many outputs the checkpoint's head has: its task's ways, else ten."""
    return task_classes(record_task(record))


# ----- weights from one task to another ---------------------------------------------------
@functools.cache
def head_dims(arch: str, num_classes: int) -> dict[str, int]:
    """The classifier head of ``arch``: each parameter whose shape follows ``num_classes``
    (found by building the arch on ``meta`` with one class more or fewer), with the
    dimension that runs over the classes."""
    other = num_classes + 1 if num_classes < samplers.NUM_CLASSES else num_classes - 1
    with torch.device("meta"):
        mine, theirs = (dict(build_arch(arch, n).named_parameters()) for n in (num_classes, other))
    dims = {}
    for name, p in mine.items():
        differ = [d for d, (a, b) in enumerate(zip(p.shape, theirs[name].shape, strict=True))
                  if a != b]
        if differ:
            dims[name] = differ[0]
    return dims


def copy_leading(target: torch.Tensor, source: torch.Tensor) -> None:
    """Write into ``target`` the leading block of ``source`` that fits both shapes."""
    block = tuple(slice(0, min(a, b)) for a, b in zip(target.shape, source.shape, strict=True))
    target[block] = source[block]


def map_checkpoint(state: dict[str, torch.Tensor], source: Task, arch: str, task: Task,
                   seed: int) -> dict[str, torch.Tensor]:
    """A checkpoint trained on ``source`` as a model of ``arch`` for ``task``: a fresh module
    (``manual_seed(seed)``) whose tensors take the leading block of the checkpoint's tensor
    of the same name and rank (all of it when the shapes match); in the head, only the rows
    of classes both tasks have, each from the checkpoint's row of the same class."""
    torch.manual_seed(seed)
    out = build_arch(arch, task.ways).state_dict()
    heads = head_dims(arch, task.ways)
    for name, value in out.items():
        theirs = state.get(name)
        if theirs is None or theirs.dim() != value.dim():
            continue
        if name not in heads:
            copy_leading(value, theirs)
            continue
        dim = heads[name]
        for row, cls in enumerate(task.classes):
            if cls in source.classes:
                copy_leading(value.select(dim, row),
                             theirs.select(dim, source.classes.index(cls)))
    return out


@dataclass(frozen=True)
class Run:
    """One model of the zoo: its architecture, seed and hyperparameters."""

    arch: str
    arch_hash: str
    index: int
    seed: int
    lr: float
    weight_decay: float
    batch_size: int
    task: Task | None = None  # None: all ten classes

    @property
    def num_classes(self) -> int:
        return task_classes(self.task)

    @property
    def run_id(self) -> str:
        return f"{self.arch}_run{self.index:03d}"

    @property
    def folder(self) -> str:
        return f"{MODELS}/{self.arch_hash}/{self.run_id}"

    def hyperparameters(self, cfg: ZooConfig) -> dict[str, Any]:
        """How the run trains; ``parent`` (seed and steps) only for a zoo with parents."""
        parent = {} if cfg.parent_steps is None else {
            "parent": {"seed": parent_seed(cfg, self.arch), "steps": cfg.parent_steps}}
        return {"lr": self.lr, "weight_decay": self.weight_decay,
                "batch_size": self.batch_size, "steps": cfg.steps, "optimizer": "sgd-nesterov",
                "momentum": 0.9, "schedule": "cosine", **parent}


def parent_seed(cfg: ZooConfig, arch: str) -> int:
    """The seed of ``arch``'s parent: its init and its training batches."""
    return random.Random(f"zoo-{cfg.seed}-{arch}-parent").randrange(2**31)


def train_parent(cfg: ZooConfig, arch: str, recipe: RecipeConfig, all_classes: EvalData,
                 device: torch.device) -> dict[str, torch.Tensor]:
    """The state every run of ``arch`` starts from: the ten-way module built from
    :func:`parent_seed`, trained ``cfg.parent_steps`` steps on every class."""
    seed = parent_seed(cfg, arch)
    torch.manual_seed(seed)
    model = build_arch(arch).to(device)
    if cfg.parent_steps:
        for _ in train_steps(model, recipe, all_classes.using(recipe), seed, device,
                             [cfg.parent_steps]):
            pass
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def plan_runs(cfg: ZooConfig) -> list[Run]:
    """Every run of the zoo; each a pure function of ``(cfg.seed, arch, index)`` (and of
    the task pool: its task is the stream's last draw, so seeds and hyperparameters are
    those of the same zoo without tasks)."""
    pool = cfg.task_pool()
    runs = []
    for arch in cfg.archs:
        for index in range(cfg.models_per_arch):
            rng = random.Random(f"zoo-{cfg.seed}-{arch}-{index}")
            seed, lr = rng.randrange(2**31), rng.choice(cfg.lrs)
            weight_decay, batch_size = rng.choice(cfg.weight_decays), rng.choice(cfg.batch_sizes)
            task = rng.choice(pool) if pool else None
            classes = task_classes(task)
            runs.append(Run(arch, arch_hash(arch, classes), index, seed, lr, weight_decay,
                            batch_size, task))
    return runs


# ----- training -----------------------------------------------------------------------------
def build_zoo(cfg: ZooConfig) -> int:
    """Train every run of ``cfg`` and save its checkpoints; returns how many were written.

    Checkpoints whose record exists are skipped, so a restarted build picks up where it
    stopped, and a finished one returns 0 without loading any data.
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = sorted(out.glob(f"{MODELS}/*/*/step-*.json"))
    records = {r["file"]: r for r in map(_read_json, saved)}
    _write_records(out / RECORDS, records.values())  # the index may trail the records
    runs = plan_runs(cfg)
    todo = []
    for run in runs:
        missing = [k for k in cfg.save_at if not (out / run.folder / f"step-{k}.json").is_file()]
        _check_same_run(out, run, cfg)
        if missing:
            todo.append((run, missing))
    write_card(out)
    if not todo:
        return 0
    device = resolve_device(cfg.device)
    recipe = RecipeConfig(task="image", data=cfg.data, calibration_batches=0,
                          train_samples=cfg.train_samples, test_samples=cfg.test_samples,
                          device=cfg.device, amp=cfg.amp)
    all_classes = EvalData(recipe, device)
    by_task: dict[Task, EvalData] = {}
    parents: dict[str, dict[str, torch.Tensor]] = {}
    written = 0
    total = len(runs) * len(cfg.save_at)
    bar = tqdm(total=total, initial=total - sum(len(m) for _, m in todo), desc="zoo")
    for run, missing in todo:
        bar.set_postfix_str(run.run_id)
        eval_data = all_classes if run.task is None else by_task.setdefault(
            run.task, all_classes.for_task(run.task))
        torch.manual_seed(run.seed)
        model = build_arch(run.arch, run.num_classes)
        if cfg.parent_steps is not None:
            if run.arch not in parents:
                parents[run.arch] = train_parent(cfg, run.arch, recipe, all_classes, device)
            model.load_state_dict(map_checkpoint(parents[run.arch], EVERY_CLASS, run.arch,
                                                 run.task or EVERY_CLASS, run.seed))
        model = model.to(device)
        run_recipe = dataclasses.replace(recipe, lr=run.lr, weight_decay=run.weight_decay,
                                         batch_size=run.batch_size)
        torch.manual_seed(run.seed)  # dropout and the like
        for step, metrics in train_steps(model, run_recipe, eval_data.using(run_recipe),
                                         run.seed, device, missing, steps=cfg.steps):
            record = _record(run, cfg, step, metrics, model, eval_data)
            save_checkpoint(out, record, model)
            records[record["file"]] = record
            _write_records(out / RECORDS, records.values())
            written += 1
            bar.update(1)
    bar.close()
    write_card(out)
    return written


def _check_same_run(out: Path, run: Run, cfg: ZooConfig) -> None:
    """Refuse to add to a run whose saved records were made with other options."""
    mine = {"seed": run.seed, "hyperparameters": run.hyperparameters(cfg),
            "task": run.task.name if run.task else None}
    for path in sorted((out / run.folder).glob("step-*.json")):
        theirs = {k: _read_json(path).get(k) for k in mine}
        if theirs != mine:
            raise ValueError(f"{path} was made with other options ({theirs}) than this config "
                             f"gives ({mine}): use another out folder or the same options")


def _record(run: Run, cfg: ZooConfig, step: int, metrics: dict[str, float], model: nn.Module,
            eval_data: EvalData) -> dict[str, Any]:
    """What a checkpoint is: everything needed to rebuild, compare or filter it (``task``
    only when it has one, so zoos without tasks keep their records as they were)."""
    train_images = len(eval_data.train[0])
    task = {"task": run.task.name} if run.task else {}
    return {
        "file": f"{run.folder}/step-{step}.safetensors",
        "arch": run.arch,
        **task,
        "spec": arch_spec(run.arch, run.num_classes),
        "arch_hash": run.arch_hash,
        "run_id": run.run_id,
        "dataset": {"name": "cifar10",
                    "source": Path(cfg.data).name if cfg.data else data.CIFAR10_FILE,
                    "train_samples": train_images, "test_samples": len(eval_data.test[0])},
        "hyperparameters": run.hyperparameters(cfg),
        "seed": run.seed,
        "step": step,
        "epoch": step * run.batch_size / train_images,
        "metrics": metrics,
        "params": sum(p.numel() for p in model.parameters()),
        "hyperinit_version": __version__,
    }


def save_checkpoint(out: Path, record: dict[str, Any], model: nn.Module) -> None:
    """Weights, then the record (its existence marks the checkpoint done), both atomic."""
    path = out / record["file"]
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", "hyperinit.version": __version__,
                "hyperinit.arch": json.dumps(record["spec"], sort_keys=True,
                                             separators=(",", ":")),
                "hyperinit.arch_hash": record["arch_hash"],
                "hyperinit.seed": str(record["seed"]), "hyperinit.step": str(record["step"])}
    if record.get("task"):
        metadata["hyperinit.task"] = record["task"]
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata=metadata)
    write_text(path.with_suffix(".json"), json.dumps(record, indent=1))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): delete it to redo its "
                         "checkpoint") from err


def _read_records(path: Path) -> list[dict[str, Any]]:
    """The index's records; a missing index is an empty zoo."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_records(path: Path, records: Any) -> None:
    ordered = sorted(records, key=lambda r: (r["arch"], r["run_id"], r["step"]))
    write_text(path, "".join(json.dumps(r) + "\n" for r in ordered))


def write_card(out: Path) -> None:
    """The dataset card: HF front matter (license, tags, the records config) and the stats."""
    card = f"""---
license: apache-2.0
tags: [hyperinit, model-zoo]
configs:
- config_name: default
  data_files:
  - split: train
    path: {RECORDS}
---

# hyperinit model zoo

CIFAR-10 classifiers from hyperinit's architecture samplers, each trained with its own seed
and hyperparameters and saved at several steps, for training weight generators; a record
with a `task` (`cifar10-<classes>`) was trained on those classes only. Each checkpoint is
`models/<arch_hash>/<run_id>/step-<k>.safetensors` with its record beside it
(`step-<k>.json`); `{RECORDS}` lists every record. Load with
`training.zoo.load_zoo(folder)`; made by `hyperinit zoo build`.

```
{format_stats(zoo_stats(out))}
```
"""
    write_text(out / CARD, card)


# ----- stats --------------------------------------------------------------------------------
def zoo_stats(folder: str | Path) -> dict[str, Any]:
    """Counts and test accuracy of a zoo, from its ``records.jsonl``.

    Returns ``{"checkpoints", "runs", "tasks" (how many distinct tasks: 0 without
    tasks), "per_step": {step: count}, "archs": {arch_hash:
    {"archs", "runs", "checkpoints", "params", "accuracy": {step: {"mean", "min", "max",
    "count"}}}}}``.
    """
    records = _read_records(Path(folder) / RECORDS)
    per_step: dict[int, int] = {}
    archs: dict[str, dict[str, Any]] = {}
    for r in records:
        per_step[r["step"]] = per_step.get(r["step"], 0) + 1
        a = archs.setdefault(r["arch_hash"], {"archs": set(), "runs": set(), "checkpoints": 0,
                                              "params": r["params"], "accuracy": {}})
        a["archs"].add(r["arch"])
        a["runs"].add(r["run_id"])
        a["checkpoints"] += 1
        a["accuracy"].setdefault(r["step"], []).append(r["metrics"]["accuracy"])
    for a in archs.values():
        a["archs"], a["runs"] = sorted(a["archs"]), len(a["runs"])
        a["accuracy"] = {step: {"mean": statistics.fmean(v), "min": min(v), "max": max(v),
                                "count": len(v)} for step, v in sorted(a["accuracy"].items())}
    return {"checkpoints": len(records), "runs": sum(a["runs"] for a in archs.values()),
            "tasks": len({r["task"] for r in records if r.get("task")}),
            "per_step": dict(sorted(per_step.items())), "archs": archs}


def format_stats(stats: dict[str, Any]) -> str:
    """A plain-text summary of :func:`zoo_stats`: one line per architecture and step."""
    tasks = f" on {stats['tasks']} tasks" if stats.get("tasks") else ""
    lines = [f"{stats['checkpoints']} checkpoints of {stats['runs']} runs over "
             f"{len(stats['archs'])} architectures{tasks}",
             "checkpoints per step: " + (", ".join(f"{k}: {n}" for k, n in
                                                   stats["per_step"].items()) or "none")]
    if stats["archs"]:
        lines.append(f"{'arch_hash':16}  {'archs':20} {'runs':>4} {'params':>8} {'step':>6} "
                     f"{'acc mean':>8} {'min':>6} {'max':>6}")
    for digest, a in stats["archs"].items():
        for step, acc in a["accuracy"].items():
            lines.append(f"{digest:16}  {','.join(a['archs']):20} {a['runs']:>4} "
                         f"{a['params']:>8} {step:>6} {100 * acc['mean']:>7.1f}% "
                         f"{100 * acc['min']:>5.1f}% {100 * acc['max']:>5.1f}%")
    return "\n".join(lines)


# ----- loading ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ZooEntry:
    """One checkpoint: its record, and its weights read on demand (safetensors only)."""

    path: Path
    record: dict[str, Any]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return load_file(self.path)

    @property
    def task(self) -> Task | None:
        """The task it was trained on (None: all ten classes)."""
        return record_task(self.record)

    def module(self) -> nn.Module:
        """The architecture (with its task's head) with these weights loaded strictly."""
        model = build_arch(self.record["arch"], record_classes(self.record))
        model.load_state_dict(self.state_dict(), strict=True)
        return model


def load_zoo(folder: str | Path, arch_hash: str | None = None) -> list[ZooEntry]:
    """Every valid checkpoint of a zoo (or of one ``arch_hash``), in path order.

    Checks the files, not the index: a checkpoint without its record or a record without
    its checkpoint, an unreadable record, and a corrupt or truncated safetensors file are
    left out with one warning listing them all, so the rest still loads. Only headers are
    read here. Checkpoints of one ``arch_hash`` with different tensor names or shapes
    mean the zoo is inconsistent: that raises a ValueError naming two such files.
    """
    root = Path(folder)
    models = root / MODELS
    if not models.is_dir():
        raise FileNotFoundError(f"{root} is not a model zoo: it has no {MODELS}/ folder")
    pattern = f"{arch_hash or '*'}/*/step-*"
    weights = {p.with_suffix("") for p in models.glob(pattern + ".safetensors")}
    records = {p.with_suffix("") for p in models.glob(pattern + ".json")}
    problems = [f"{p}.safetensors has no record" for p in sorted(weights - records)]
    problems += [f"{p}.json has no checkpoint" for p in sorted(records - weights)]
    entries, shapes = [], {}
    for stem in sorted(weights & records):
        path = stem.with_suffix(".safetensors")
        try:
            record = json.loads(stem.with_suffix(".json").read_text())
            if not isinstance(record, dict) or any(k not in record for k in RECORD_KEYS):
                raise ValueError(f"needs the keys {', '.join(RECORD_KEYS)}")
            with safe_open(path, "pt") as f:
                shape = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
        except (ValueError, OSError, SafetensorError) as err:
            problems.append(f"{stem.name} of {stem.parent} is unreadable: {err}")
            continue
        if record["arch_hash"] != stem.parent.parent.name:
            problems.append(f"{stem}.json says arch_hash {record['arch_hash']}, but lies under "
                            f"{stem.parent.parent.name}")
            continue
        first = shapes.setdefault(record["arch_hash"], (path, shape))
        if first[1] != shape:
            diff = sorted(set(first[1].items()) ^ set(shape.items()))[0][0]
            raise ValueError(f"mixed shapes for arch_hash {record['arch_hash']}: {first[0]} and "
                             f"{path} differ at tensor {diff!r} ({first[1].get(diff)} vs "
                             f"{shape.get(diff)})")
        entries.append(ZooEntry(path, record))
    if problems:
        warnings.warn(f"skipped {len(problems)} file(s) of the zoo at {root}:\n  "
                      + "\n  ".join(problems), stacklevel=2)
    return entries


def select_checkpoints(entries: list[ZooEntry], step: int | None = None,
                       archs: tuple[str, ...] | None = None) -> list[ZooEntry]:
    """The checkpoints of ``archs`` (all when None) saved at ``step``; with ``step`` None,
    each architecture's last saved step (the most trained models of the zoo).

    A named architecture or step the zoo lacks is an error that lists what it has.
    """
    names = sorted({e.record["arch"] for e in entries})
    missing = [a for a in archs or () if a not in names]
    if missing:
        raise ValueError(f"the zoo has no checkpoints of {', '.join(missing)}; it has "
                         f"{', '.join(names) or 'none'}")
    chosen = []
    for name in archs or names:
        mine = [e for e in entries if e.record["arch"] == name]
        steps = sorted({e.record["step"] for e in mine})
        if step is not None and step not in steps:
            raise ValueError(f"the zoo has no checkpoints of {name} at step {step}; its "
                             f"steps are {', '.join(map(str, steps))}")
        at = steps[-1] if step is None else step
        chosen += [e for e in mine if e.record["step"] == at]
    return chosen
