"""The evaluation recipe: how a model is trained and measured, so that numbers compare.

``hyperinit eval`` (:mod:`training.evaluate`), the zoo builder (:mod:`training.zoo`) and
the zoo evaluation (:mod:`training.zoo_eval`) all train with this one recipe (every value
is an option of :class:`RecipeConfig`):

* images: SGD, momentum 0.9, Nesterov, lr 0.05, weight decay 5e-4, batch 128, crop + flip;
* text: AdamW, betas (0.9, 0.99), lr 1e-3, weight decay 0.1, batch 32 blocks of 128
  characters, gradients clipped at norm 1 (nanoGPT's shakespeare-char recipe);
* both: cosine decay from ``lr`` to 0 over the run (:func:`cosine_lr`), no warmup; weight
  decay on tensors of two or more dimensions only; bf16 autocast on CUDA.

An init has no BatchNorm running statistics (a generator predicts parameters, not data
statistics; a default init has mean 0, variance 1), so in eval mode BatchNorm would
normalize with values that never saw data. At step 0 a model is therefore measured on a
copy whose running statistics are estimated from ``calibration_batches`` training batches
(no parameter changes, no gradients), as GHN-2 measures predicted parameters; the copy is
discarded, so training starts from the init itself. Later points use the statistics
training accumulated.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections.abc import Collection, Iterable, Iterator
from copy import deepcopy
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hyperinit.predict import calibrate_batchnorm

from . import data, samplers
from .config import as_tuple
from .tasks import Task

# Per-task defaults of the options left as None.
TASK_DEFAULTS: dict[str, dict[str, int | float]] = {
    "image": {"batch_size": 128, "lr": 0.05, "weight_decay": 5e-4, "grad_clip": 0.0},
    "text": {"batch_size": 32, "lr": 1e-3, "weight_decay": 0.1, "grad_clip": 1.0},
}
EVAL_BATCH = {"image": 500, "text": 64}  # test images / blocks per forward pass
MAX_BLOCK_SIZE = 256  # positions of the held-out GPTs (samplers.GPTLike, gpt2-char)


@dataclass
class RecipeConfig:
    """How a model is trained and measured. ``None`` options take the task's default
    (``TASK_DEFAULTS``). ``ks`` can be given as JSON (``[0,50]``) or comma-separated."""

    task: str = "image"  # "image" (CIFAR-10) or "text" (char-level tiny-shakespeare)
    data: str | None = None  # dataset path; None: the data folder's (training.data.data_dir)
    ks: tuple[int, ...] = (0, 50, 200)  # measure after these many steps (0: no training)
    epoch: bool = False  # also measure after one epoch of the training set
    calibration_batches: int = 10  # step 0: estimate BatchNorm statistics from this many
    # data
    batch_size: int | None = None
    block_size: int = 128  # text only: characters per sequence
    train_samples: int | None = None  # images (a fixed random subset) or blocks of text
    test_samples: int | None = None  # the same, of the test split; None: all of it
    # optimization
    lr: float | None = None
    weight_decay: float | None = None
    grad_clip: float | None = None  # max gradient norm; 0: no clipping
    # run
    device: str = "auto"  # "auto", "cpu", "cuda"
    amp: bool = True  # bfloat16 autocast on GPU; ignored on CPU

    def __post_init__(self) -> None:
        if self.task not in TASK_DEFAULTS:
            raise ValueError(f"task must be 'image' or 'text', got {self.task!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        for name, value in TASK_DEFAULTS[self.task].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.ks = tuple(sorted(as_tuple(int(k) for k in as_tuple(self.ks))))
        if not self.ks or self.ks[0] < 0:
            raise ValueError(f"need at least one k >= 0, got ks={self.ks}")
        if self.calibration_batches < 0:
            raise ValueError(f"calibration_batches must be at least 0, got "
                             f"{self.calibration_batches}")
        for name in ("batch_size", "block_size", "train_samples", "test_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.task == "text" and self.block_size > MAX_BLOCK_SIZE:
            raise ValueError(f"block_size must be at most {MAX_BLOCK_SIZE} (the held-out "
                             f"models' positions), got {self.block_size}")

    @property
    def labels(self) -> list[str]:
        """Names of the measurement points: each k, then ``"epoch"`` if asked."""
        return [str(k) for k in self.ks] + (["epoch"] if self.epoch else [])

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # tuples as lists, as config.json has them


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (a GPU if one is visible), ``"cpu"`` or ``"cuda"`` (which must exist)."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' but no GPU is visible")
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_for(cfg: RecipeConfig, device: torch.device) -> torch.autocast:
    """bfloat16 autocast on CUDA when ``cfg.amp``; a no-op elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16,
                          enabled=cfg.amp and device.type == "cuda")


# ----- data ---------------------------------------------------------------------------------
class EvalData:
    """A task's training and test data on the device, with the seeded batch streams."""

    def __init__(self, cfg: RecipeConfig, device: torch.device) -> None:
        self.cfg = cfg
        if cfg.task == "image":
            train = _subset(*data.load_cifar10(cfg.data, "train"), cfg.train_samples)
            test = _subset(*data.load_cifar10(cfg.data, "test"), cfg.test_samples)
            self.train = [t.to(device) for t in train]
            self.test = [t.to(device) for t in test]
            return
        corpus = data.load_text(cfg.data)
        if corpus.vocab_size > samplers.VOCAB_SIZE:
            raise ValueError(f"the text has {corpus.vocab_size} distinct characters, but the "
                             f"held-out models take {samplers.VOCAB_SIZE}")
        block = cfg.block_size
        train_end = cfg.train_samples * block + 1 if cfg.train_samples else None
        test_end = cfg.test_samples * block + 1 if cfg.test_samples else None
        self.train = [corpus.train[:train_end].to(device)]
        self.test = [corpus.val[:test_end].to(device)]

    def using(self, cfg: RecipeConfig) -> EvalData:
        """The same tensors, batched as ``cfg`` says (a zoo run's own batch size)."""
        other = copy.copy(self)
        other.cfg = cfg
        return other

    def for_task(self, task: Task) -> EvalData:
        """The same images restricted to ``task``'s classes, labels renumbered ``0..k-1``
        (:meth:`training.tasks.Task.select`): what a model of the task trains and is
        measured on. Taken from this data's subsets (``train_samples``, ``test_samples``)."""
        if self.cfg.task != "image":
            raise ValueError(f"tasks are CIFAR-10 class subsets: {self.cfg.task} data has none")
        other = copy.copy(self)
        other.train = list(task.select(*self.train))
        other.test = list(task.select(*self.test))
        return other

    @property
    def steps_per_epoch(self) -> int:
        per_step = self.cfg.batch_size * (self.cfg.block_size if self.cfg.task == "text" else 1)
        return max(1, len(self.train[0]) // per_step)

    def batches(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless training batches, a function of ``seed`` only (the same for every arm)."""
        if self.cfg.task == "image":
            return data.ImageBatches(*self.train, self.cfg.batch_size, seed=seed)
        return data.TextBatches(self.train[0], self.cfg.batch_size, self.cfg.block_size,
                                seed=seed)

    def test_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.cfg.task == "image":
            return data.eval_batches(*self.test, EVAL_BATCH["image"])
        return data.text_eval_batches(self.test[0], EVAL_BATCH["text"], self.cfg.block_size)


def _subset(images: torch.Tensor, labels: torch.Tensor, n: int | None,
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random ``n`` of the images (files are sorted by class, so not the first n)."""
    if n is None or n >= len(images):
        return images, labels
    keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:n].sort()[0]
    return images[keep], labels[keep]


# ----- optimizer and schedule ---------------------------------------------------------------
def make_optimizer(model: nn.Module, cfg: RecipeConfig) -> torch.optim.Optimizer:
    """SGD+Nesterov (image) or AdamW (text), decaying only tensors of 2+ dims."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    if cfg.task == "image":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))


def cosine_lr(step: int, steps: int, lr: float, warmup: int = 0, floor: float = 0.0) -> float:
    """The learning rate of ``step`` (from 0) of ``steps``: linear warmup over ``warmup``
    steps, then cosine decay from ``lr`` to ``floor * lr`` at ``steps`` (and after)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    span = max(1, steps - warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(step - warmup, span) / span))
    return lr * (floor + (1 - floor) * cosine)


# ----- training and measuring ---------------------------------------------------------------
def logits(out: Any) -> torch.Tensor:
    """Logits flattened to ``(N, classes)`` (transformers models return a ModelOutput)."""
    values = out if isinstance(out, torch.Tensor) else out.logits
    return values.reshape(-1, values.shape[-1]).float()


@torch.no_grad()
def measure(model: nn.Module, eval_data: EvalData, autocast: torch.autocast) -> dict[str, float]:
    """Test accuracy and loss (image) or validation loss and perplexity (text), in eval mode."""
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for x, y in eval_data.test_batches():
        with autocast:
            out = logits(model(x))
        y = y.reshape(-1)
        loss_sum += F.cross_entropy(out, y, reduction="sum").item()
        correct += (out.argmax(-1) == y).sum().item()
        count += len(y)
    model.train()
    loss = loss_sum / count
    if eval_data.cfg.task == "image":
        return {"accuracy": correct / count, "loss": loss}
    return {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf}


def calibrated(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
               num_batches: int) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are the average over
    ``num_batches`` training batches; ``model`` itself if it has no BatchNorm to calibrate."""
    if num_batches == 0 or not any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                   and m.track_running_stats for m in model.modules()):
        return model
    inputs = (x for x, _ in itertools.islice(batches, num_batches))
    return calibrate_batchnorm(deepcopy(model), inputs)


def train_steps(model: nn.Module, cfg: RecipeConfig, eval_data: EvalData, seed: int,
                device: torch.device, marks: Collection[int], steps: int | None = None,
                optimizer: torch.optim.Optimizer | None = None,
                ) -> Iterator[tuple[int, dict[str, float]]]:
    """Train ``model`` in place with the recipe, yielding ``(step, test metrics)`` at each
    step of ``marks`` (step 0 measured with calibrated BatchNorm statistics) and stopping
    after the last; the model is in that step's state when it is yielded.

    Batches are ``eval_data.batches(seed)``. The learning rate follows :func:`cosine_lr`
    from ``cfg.lr`` over ``steps`` (default: the last mark). ``optimizer`` replaces the
    recipe's (its learning rate still follows the schedule).
    """
    total = max(marks)
    optimizer = optimizer or make_optimizer(model, cfg)
    batches = eval_data.batches(seed)
    autocast = autocast_for(cfg, device)
    model.train()
    for step in range(total + 1):
        if step in marks:
            measured = (calibrated(model, eval_data.batches(seed), cfg.calibration_batches)
                        if step == 0 else model)
            yield step, measure(measured, eval_data, autocast)
        if step == total:
            return
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps or total, cfg.lr)
        x, y = next(batches)
        with autocast:
            loss = F.cross_entropy(logits(model(x)), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()


def train_and_measure(model: nn.Module, cfg: RecipeConfig, eval_data: EvalData, seed: int,
                      device: torch.device, optimizer: torch.optim.Optimizer | None = None,
                      ) -> dict[str, dict[str, float]]:
    """Train ``model`` in one run (:func:`train_steps`), measuring at every point of
    ``cfg.labels``: ``{label: {"step", metrics...}}``."""
    marks: dict[int, list[str]] = {k: [str(k)] for k in cfg.ks}
    if cfg.epoch:
        marks.setdefault(eval_data.steps_per_epoch, []).append("epoch")
    points: dict[str, dict[str, float]] = {}
    for step, metrics in train_steps(model, cfg, eval_data, seed, device, marks,
                                     optimizer=optimizer):
        for label in marks[step]:
            points[label] = {"step": step, **metrics}
    return {label: points[label] for label in cfg.labels}
