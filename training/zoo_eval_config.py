"""What ``hyperinit zoo eval`` evaluates: the methods that make models, and the options
(:class:`ZooEvalConfig`), on top of the training recipe (:class:`training.recipe.RecipeConfig`).
The methods are described in :mod:`training.zoo_eval`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from typing import Any

from hyperinit.diffusion import DDIM_STEPS

from .config import as_tuple
from .recipe import RecipeConfig
from .tasks import Task, held_out_tasks
from .zoo import parse_arch

# The methods of a zoo without tasks, and of a zoo over tasks (evaluated on held-out tasks,
# where the checkpoint of the nearest training task replaces the checkpoints themselves).
METHODS = ("diffusion", "checkpoint", "noise-0.06", "noise-0.12", "mean-16", "gaussian",
           "lowrank-gaussian-0.5", "ghn", "default")
NOISE = {"noise-0.06": 0.06, "noise-0.12": 0.12}  # relative std of the added noise
NEAREST_NOISE = {f"nearest-{method}": sigma for method, sigma in NOISE.items()}
LOWRANK = {"lowrank-gaussian-0.5": 0.5}  # the scale of the low-rank Gaussian's deviation
TASK_METHODS = ("diffusion", "nearest-task", *NEAREST_NOISE, "mean-16", "gaussian", *LOWRANK,
                "ghn", "default")
# The methods that can make a held-out architecture's shapes: the averages and Gaussians
# need checkpoints of the architecture itself.
HELD_OUT_ARCH_METHODS = tuple(m for m in TASK_METHODS
                              if m not in ("mean-16", "gaussian", *LOWRANK))
ALL_METHODS = tuple(dict.fromkeys(METHODS + TASK_METHODS))
MEAN_OF = 16  # checkpoints per mean-16 model


@dataclass
class ZooEvalConfig:
    """What to evaluate and how. ``None`` recipe options take the image defaults of
    :class:`training.recipe.RecipeConfig`. Lists are JSON (``ks=[0,50]``) or comma-separated
    (``methods=diffusion,ghn``).
    """

    generator: str | None = None  # weight-diffusion folder, shipped name or hub: ref; for diffusion
    zoo: str | None = None  # model zoo folder (hyperinit zoo build's out)
    out: str = "runs/zoo-eval"
    # what to run
    step: int | None = None  # the zoo step whose checkpoints are C; None: each arch's last
    archs: tuple[str, ...] | None = None  # zoo architecture names ("vgg-9"); None: all
    # zoo over tasks: architectures of the zoo's families it never trained ("bnresnet-40"),
    # evaluated on the same held-out tasks with HELD_OUT_ARCH_METHODS
    held_out_archs: tuple[str, ...] | None = None
    # only the held-out architectures get models; ``archs`` still picks the checkpoints
    # they are measured against and weight selection draws from
    held_out_only: bool = False
    # None: every method of the zoo's kind (METHODS, or TASK_METHODS for a zoo over tasks)
    methods: tuple[str, ...] | None = None
    # zoo over tasks: the held-out tasks to evaluate on: N (the first N of training.tasks.
    # held_out_tasks(ways), ways being the zoo's) or held-out task names; None: all of them
    tasks: int | tuple[str, ...] | None = None
    samples: int = 8  # models per method and arch
    ks: tuple[int, ...] = (0, 50)  # measure after these many training steps
    seed: int = 0
    ghn: str | None = None  # hypernetwork for the ghn method; None: the shipped default
    diffusion_steps: int = DDIM_STEPS  # DDIM steps per sample
    # classifier-free guidance of samples for a held-out task: 1 none, 0 unconditional
    diffusion_guidance: float = 1.0
    # data and recipe
    data: str | None = None  # CIFAR-10 zip or ImageFolder; None: the data folder's zip
    train_samples: int | None = None
    test_samples: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    # run
    device: str = "auto"  # "auto", "cpu", "cuda"
    amp: bool = True  # bfloat16 autocast on GPU; ignored on CPU

    def __post_init__(self) -> None:
        if not self.zoo:
            raise ValueError("zoo is required: the model zoo folder to evaluate against")
        if self.methods is not None:
            self.methods = as_tuple(self.methods)
            unknown = [m for m in self.methods if m not in ALL_METHODS]
            if unknown or not self.methods:
                raise ValueError(f"unknown method(s) {unknown}: methods are {', '.join(METHODS)} "
                                 f"(zoos over tasks: {', '.join(TASK_METHODS)})")
        if (self.methods is None or "diffusion" in self.methods) and not self.generator:
            raise ValueError("generator is required for the diffusion method: a weight-diffusion "
                             "folder, shipped name or hub: ref (or leave diffusion out of "
                             "methods)")
        if self.archs is not None:
            self.archs = as_tuple(self.archs)
            for arch in self.archs:
                parse_arch(arch)
        if self.held_out_archs is not None:
            self.held_out_archs = as_tuple(self.held_out_archs)
            for arch in self.held_out_archs:
                parse_arch(arch)
        if self.held_out_only and not self.held_out_archs:
            raise ValueError("held_out_only evaluates the held_out_archs alone: name them "
                             "(held_out_archs=bnresnet-15)")
        for name in ("samples", "diffusion_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.diffusion_guidance < 0:
            raise ValueError("diffusion_guidance must be at least 0 (0: unconditional samples, "
                             f"1: no guidance), got {self.diffusion_guidance}")
        if self.step is not None and self.step < 0:
            raise ValueError(f"step must be a saved step (>= 0) or None, got {self.step}")
        self.tasks = _check_tasks(self.tasks)
        recipe = self.recipe()  # validates ks, sizes and device, and fills the defaults
        self.ks, self.batch_size, self.lr, self.weight_decay = (
            recipe.ks, recipe.batch_size, recipe.lr, recipe.weight_decay)

    def recipe(self) -> RecipeConfig:
        """The training and measuring recipe, as :func:`train_and_measure` takes it."""
        return RecipeConfig(task="image", data=self.data, ks=self.ks,
                            train_samples=self.train_samples, test_samples=self.test_samples,
                            batch_size=self.batch_size, lr=self.lr,
                            weight_decay=self.weight_decay, device=self.device, amp=self.amp)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # tuples as lists, as config.json has them

    def for_zoo(self, over_tasks: bool) -> ZooEvalConfig:
        """This config with ``methods`` resolved for a zoo over tasks or without (None: every
        method of that kind); methods and ``tasks`` of the other kind are refused."""
        kind = TASK_METHODS if over_tasks else METHODS
        methods = self.methods or kind
        misplaced = [m for m in methods if m not in kind]
        if over_tasks and misplaced:
            raise ValueError(
                f"method(s) {', '.join(misplaced)} are for zoos without tasks; the zoo at "
                f"{self.zoo} is over tasks and is evaluated on held-out tasks with "
                f"{', '.join(kind)} (nearest-task, the checkpoint of the most similar training "
                "task, replaces the checkpoints themselves)")
        if misplaced:
            raise ValueError(f"method(s) {', '.join(misplaced)} are for zoos over tasks; the zoo "
                             f"at {self.zoo} has none, its methods are {', '.join(kind)}")
        for option in ("tasks", "held_out_archs"):
            if getattr(self, option) is not None and not over_tasks:
                raise ValueError(f"{option} is for zoos over tasks, which are evaluated on held-"
                                 f"out tasks; the zoo at {self.zoo} was built without tasks: "
                                 f"leave {option} out")
        return dataclasses.replace(self, methods=methods)


def _check_tasks(tasks: Any) -> int | tuple[str, ...] | None:
    """``tasks`` as :class:`ZooEvalConfig` keeps it: None, a count, or canonical names of
    held-out tasks (a task a zoo may train on would measure memory, not transfer)."""
    if tasks is None:
        return None
    if isinstance(tasks, str) and tasks.strip().isdigit():
        tasks = int(tasks)
    if isinstance(tasks, int) and not isinstance(tasks, bool):
        if tasks < 1:
            raise ValueError(f"tasks must be at least 1 (the first N held-out tasks), got {tasks}")
        return tasks
    named = [Task.parse(str(t)) for t in as_tuple(tasks)]
    if not named:
        raise ValueError("tasks needs a count (tasks=3) or held-out task names, or None for all")
    seen = [t.name for t in named if t not in held_out_tasks(t.ways)]
    if seen:
        raise ValueError(f"{', '.join(seen)} {'is' if len(seen) == 1 else 'are'} not held out: "
                         "zoo eval measures only tasks no zoo trains on "
                         "(training.tasks.held_out_tasks(k)); give tasks=N for the first N")
    return tuple(t.name for t in named)
