"""What ``hyperinit zoo eval`` evaluates: the methods that make models, and the options
(:class:`ZooEvalConfig`), on top of the training recipe (:class:`training.recipe.RecipeConfig`).
The methods are described in :mod:`training.zoo_eval`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from .config import as_tuple
from .recipe import RecipeConfig
from .zoo import parse_arch

METHODS = ("diffusion", "checkpoint", "noise-0.06", "noise-0.12", "mean-16", "gaussian", "ghn",
           "default")
NOISE = {"noise-0.06": 0.06, "noise-0.12": 0.12}  # relative std of the added noise
MEAN_OF = 16  # checkpoints per mean-16 model


@dataclass
class ZooEvalConfig:
    """What to evaluate and how. ``None`` recipe options take the image defaults of
    :class:`training.recipe.RecipeConfig`. Lists are JSON (``ks=[0,50]``) or comma-separated
    (``methods=diffusion,ghn``).
    """

    generator: str | None = None  # weight-diffusion folder; needed with the diffusion method
    zoo: str | None = None  # model zoo folder (hyperinit zoo build's out)
    out: str = "runs/zoo-eval"
    # what to run
    step: int | None = None  # the zoo step whose checkpoints are C; None: each arch's last
    archs: tuple[str, ...] | None = None  # zoo architecture names ("vgg-9"); None: all
    methods: tuple[str, ...] = METHODS
    samples: int = 8  # models per method and arch
    ks: tuple[int, ...] = (0, 50)  # measure after these many training steps
    seed: int = 0
    ghn: str | None = None  # hypernetwork for the ghn method; None: the shipped default
    diffusion_steps: int = 50  # DDIM steps per sample
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
        self.methods = as_tuple(self.methods)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown method(s) {unknown}: methods are {', '.join(METHODS)}")
        if "diffusion" in self.methods and not self.generator:
            raise ValueError("generator is required for the diffusion method: a weight-diffusion "
                             "folder (or leave diffusion out of methods)")
        if self.archs is not None:
            self.archs = as_tuple(self.archs)
            for arch in self.archs:
                parse_arch(arch)
        for name in ("samples", "diffusion_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.step is not None and self.step < 0:
            raise ValueError(f"step must be a saved step (>= 0) or None, got {self.step}")
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
