"""Evaluate initializations: train held-out architectures briefly from each init and compare.

For every held-out architecture (``training.samplers.held_out``), init "arm" and seed, the
model is built, initialized, trained with one fixed recipe for ``max(ks)`` steps, and
measured on the test split at every step count in ``ks`` (0 = the init itself, zero-shot).
The arms:

* ``predicted``: parameters from the generator, as ``hyperinit.predict`` gives them with the
  run's seed and ``noise`` (default: the generator's own);
* ``default``: the freshly built module, i.e. PyTorch's (or the model's own) default init;
* ``orthogonal``: ``nn.init.orthogonal_`` (gain 1) on every weight of two or more dimensions,
  zero biases; norm layers and other parameters (positions, class tokens) keep their default;
* ``mimetic``: default init, then the attention weights of Trockman & Kolter (2023), for
  models with self-attention only (for others the row is recorded as skipped).

Everything random is a function of the seed alone, never of the arm: the module is built
after ``torch.manual_seed(seed)``, the RNG is re-seeded before training (dropout), and the
batch stream is ``ImageBatches``/``TextBatches`` with ``seed=seed``. So the arms of a seed
differ only in their initial parameters.

The recipe (fixed, so numbers compare across runs; every value is an option):

* images: SGD, momentum 0.9, Nesterov, lr 0.05, weight decay 5e-4, batch 128, crop + flip;
* text: AdamW, betas (0.9, 0.99), lr 1e-3, weight decay 0.1, batch 32 blocks of 128
  characters, gradients clipped at norm 1 (nanoGPT's shakespeare-char recipe);
* both: cosine decay from ``lr`` to 0 over the run, no warmup; weight decay on tensors of
  two or more dimensions only; bf16 autocast on CUDA.

An init has no BatchNorm running statistics (a generator predicts parameters, not data
statistics; a default init has mean 0, variance 1), so in eval mode BatchNorm would
normalize with values that never saw data. At k=0 every arm is therefore measured on a
copy whose running statistics are estimated from ``calibration_batches`` training batches
(no parameter changes, no gradients), as GHN-2 measures predicted parameters; the copy is
discarded, so training starts from the init itself. Later points use the statistics
training accumulated.

Results are appended to ``OUT/results.jsonl`` as each (arch, arm, seed) finishes, and a
restarted run skips the rows already there. At the end ``results.json``, ``table.md`` and
``curves.png`` summarize them.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import time
from collections.abc import Iterable, Iterator
from copy import deepcopy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import graphs
import hyperinit
from graphs.draw import save_figure
from hyperinit.predict import calibrate_batchnorm, resolve_noise
from hyperinit.safetensors_io import atomic_path

from . import data, samplers

ARMS = ("predicted", "default", "orthogonal", "mimetic")
RESULTS = "results.jsonl"
# Per-task defaults of the options left as None (see the module docstring).
TASK_DEFAULTS: dict[str, dict[str, int | float]] = {
    "image": {"batch_size": 128, "lr": 0.05, "weight_decay": 5e-4, "grad_clip": 0.0},
    "text": {"batch_size": 32, "lr": 1e-3, "weight_decay": 0.1, "grad_clip": 1.0},
}
EVAL_BATCH = {"image": 500, "text": 64}  # test images / blocks per forward pass
MAX_BLOCK_SIZE = 256  # positions of the held-out GPTs (samplers.GPTLike, gpt2-char)
# Trockman & Kolter (2023): W_q W_k^T ~ a1 Z1 + b1 I and W_v W_proj ~ a2 Z2 - b2 I.
MIMETIC = {"alpha1": 0.7, "beta1": 0.7, "alpha2": 0.4, "beta2": 0.4}
# Options that change the numbers of a row: a resumed run must keep them. "generator_id"
# is the generator's name and weights hash, so a folder retrained in place is not mixed in.
ROW_OPTIONS = ("task", "generator", "generator_id", "data", "ks", "epoch",
               "calibration_batches", "noise", "batch_size", "block_size", "lr", "weight_decay",
               "grad_clip", "train_samples", "test_samples", "amp")


@dataclass
class EvalConfig:
    """What to evaluate and how. ``None`` options take the task's default (``TASK_DEFAULTS``).

    Lists can be given as JSON (``ks=[0,50]``) or comma-separated (``arms=default,predicted``).
    """

    task: str = "image"  # "image" (CIFAR-10) or "text" (char-level tiny-shakespeare)
    generator: str | None = None  # checkpoint folder or shipped name; None: hyperinit's default
    data: str | None = None  # dataset path; None: the shared CIFAR-10 zip / tiny-shakespeare
    out: str = "runs/eval"
    # what to run
    archs: tuple[str, ...] | None = None  # held-out names; None: all of held_out(task)
    max_archs: int | None = None  # keep only the first N of them
    arms: tuple[str, ...] = ARMS
    seeds: tuple[int, ...] = (0, 1, 2)
    ks: tuple[int, ...] = (0, 50, 200)  # measure after these many steps (0: no training)
    epoch: bool = False  # also measure after one epoch of the training set
    calibration_batches: int = 10  # k=0: estimate BatchNorm statistics from this many batches
    noise: float | None = None  # the predicted arm's hyperinit.predict noise; None: the generator's
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
        if self.archs is not None:
            self.archs = _as_tuple(self.archs)
        self.arms = _as_tuple(self.arms)
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ValueError(f"unknown arm(s) {unknown}: arms are {', '.join(ARMS)}")
        self.seeds = _as_tuple(int(s) for s in _as_tuple(self.seeds))
        self.ks = tuple(sorted(_as_tuple(int(k) for k in _as_tuple(self.ks))))
        if not self.seeds or not self.ks or self.ks[0] < 0:
            raise ValueError(f"need at least one seed and one k >= 0, got seeds={self.seeds} "
                             f"ks={self.ks}")
        if self.calibration_batches < 0:
            raise ValueError(f"calibration_batches must be at least 0, got "
                             f"{self.calibration_batches}")
        for name in ("max_archs", "batch_size", "block_size", "train_samples", "test_samples"):
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


def _as_tuple(value: Any) -> tuple:
    """Distinct items, in order, of an iterable, one value, or a comma-separated string."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    elif not isinstance(value, Iterable):
        value = [value]
    return tuple(dict.fromkeys(value))


# ----- architectures and inits -------------------------------------------------------------
def select_archs(cfg: EvalConfig) -> list[samplers.HeldOut]:
    """The held-out entries named by ``cfg.archs`` (all if None), cut to ``cfg.max_archs``."""
    entries = samplers.held_out(cfg.task)
    if cfg.archs is not None:
        by_name = {e.name: e for e in entries}
        unknown = [a for a in cfg.archs if a not in by_name]
        if unknown:
            raise ValueError(f"unknown {cfg.task} architecture(s) {', '.join(unknown)}: "
                             f"held-out names are {', '.join(by_name)}")
        entries = [by_name[a] for a in cfg.archs]
    return entries[:cfg.max_archs]


@torch.no_grad()
def orthogonal_(model: nn.Module) -> nn.Module:
    """Orthogonal weights (every ``*weight`` of 2+ dims) and zero biases; the rest as built."""
    for name, p in model.named_parameters():
        leaf = name.rpartition(".")[2]
        if leaf.endswith("weight") and p.dim() >= 2:
            nn.init.orthogonal_(p)
        elif leaf.endswith("bias"):
            nn.init.zeros_(p)
    return model


def attention_layers(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """``(qkv, proj, heads)`` of each self-attention layer, as ``(out, in)`` weight views.

    ``qkv`` is ``(3d, d)`` with rows ``[q; k; v]`` and heads contiguous within each, ``proj``
    is ``(d, d)``. Found by structure: the samplers' ``SelfAttention``, torch's
    ``nn.MultiheadAttention`` (torchvision's ViT), and GPT-2's ``c_attn``/``c_proj``, whose
    ``Conv1D`` weights are stored ``(in, out)`` and so are returned transposed.
    """
    found = []
    for m in model.modules():
        if isinstance(m, samplers.SelfAttention):
            found.append((m.qkv.weight, m.proj.weight, m.heads))
        elif isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
            found.append((m.in_proj_weight, m.out_proj.weight, m.num_heads))
        elif (hasattr(m, "c_attn") and hasattr(m, "c_proj") and hasattr(m, "num_heads")
              and not getattr(m, "is_cross_attention", False)):
            found.append((m.c_attn.weight.T, m.c_proj.weight.T, m.num_heads))
    return found


def _factor(m: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L, R)``, both ``(d, rank)``: ``L @ R.T`` is the best rank-``rank`` approximation."""
    u, s, vh = torch.linalg.svd(m)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, vh[:rank].T * root


@torch.no_grad()
def mimetic_(model: nn.Module, alpha1: float = 0.7, beta1: float = 0.7, alpha2: float = 0.4,
             beta2: float = 0.4) -> int:
    """Mimetic init (Trockman & Kolter 2023) of every self-attention layer; returns how many.

    Trained attention has ``W_q W_k^T`` close to a positive identity (tokens attend to
    similar tokens) and ``W_v W_proj`` close to a negative one. Per head, ``W_q W_k^T`` is
    set to the best rank-``head_dim`` approximation of ``alpha1 Z1 + beta1 I``; over all
    heads together ``W_v W_proj = alpha2 Z2 - beta2 I`` exactly, with ``Z ~ N(0, I/d)``
    (row-vector convention ``x W``; torch stores ``W^T``). Biases keep their values.
    """
    layers = attention_layers(model)
    for qkv, proj, heads in layers:
        d = proj.shape[0]
        head_dim, eye = d // heads, torch.eye(d)
        q, k, v = qkv[:d], qkv[d:2 * d], qkv[2 * d:]
        for h in range(heads):
            wq, wk = _factor(alpha1 * torch.randn(d, d) / math.sqrt(d) + beta1 * eye, head_dim)
            rows = slice(h * head_dim, (h + 1) * head_dim)
            q[rows], k[rows] = wq.T, wk.T
        wv, wproj = _factor(alpha2 * torch.randn(d, d) / math.sqrt(d) - beta2 * eye, d)
        v.copy_(wv.T)
        proj.copy_(wproj)
    return len(layers)


def init_(model: nn.Module, arm: str, seed: int, noise: float | None,
          generator: hyperinit.Generator | None) -> str | None:
    """Apply ``arm``'s init to a freshly built ``model``; the reason if it does not apply."""
    if arm == "predicted":
        hyperinit.predict(model, generator, seed=seed, noise=noise)
    elif arm == "orthogonal":
        orthogonal_(model)
    elif arm == "mimetic" and mimetic_(model, **MIMETIC) == 0:
        return "no self-attention layers"
    return None


# ----- data ---------------------------------------------------------------------------------
class EvalData:
    """A task's training and test data on the device, with the seeded batch streams."""

    def __init__(self, cfg: EvalConfig, device: torch.device) -> None:
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


# ----- training and measuring ---------------------------------------------------------------
def _logits(out: Any) -> torch.Tensor:
    """Logits flattened to ``(N, classes)`` (transformers models return a ModelOutput)."""
    logits = out if isinstance(out, torch.Tensor) else out.logits
    return logits.reshape(-1, logits.shape[-1]).float()


@torch.no_grad()
def measure(model: nn.Module, eval_data: EvalData, autocast: torch.autocast) -> dict[str, float]:
    """Test accuracy and loss (image) or validation loss and perplexity (text), in eval mode."""
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for x, y in eval_data.test_batches():
        with autocast:
            logits = _logits(model(x))
        y = y.reshape(-1)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(-1) == y).sum().item()
        count += len(y)
    model.train()
    loss = loss_sum / count
    if eval_data.cfg.task == "image":
        return {"accuracy": correct / count, "loss": loss}
    return {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf}


def calibrated(model: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
               num_batches: int) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are the average over
    ``num_batches`` training batches; ``model`` itself if it has no BatchNorm to calibrate."""
    if num_batches == 0 or not any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                   and m.track_running_stats for m in model.modules()):
        return model
    inputs = (x for x, _ in itertools.islice(batches, num_batches))
    return calibrate_batchnorm(deepcopy(model), inputs)


def _optimizer(model: nn.Module, cfg: EvalConfig) -> torch.optim.Optimizer:
    """SGD+Nesterov (image) or AdamW (text), decaying only tensors of 2+ dims."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    if cfg.task == "image":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))


def train_and_measure(model: nn.Module, cfg: EvalConfig, eval_data: EvalData, seed: int,
                      device: torch.device, optimizer: torch.optim.Optimizer | None = None,
                      ) -> dict[str, dict[str, float]]:
    """Train ``model`` in one run, measuring at every point of ``cfg.labels``.

    ``optimizer`` replaces the recipe's (its learning rate still follows the cosine
    schedule from ``cfg.lr``)."""
    marks: dict[int, list[str]] = {k: [str(k)] for k in cfg.ks}
    if cfg.epoch:
        marks.setdefault(eval_data.steps_per_epoch, []).append("epoch")
    total = max(marks)
    optimizer = optimizer or _optimizer(model, cfg)
    batches = eval_data.batches(seed)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=cfg.amp and device.type == "cuda")
    points: dict[str, dict[str, float]] = {}
    model.train()
    for step in range(total + 1):
        for label in marks.get(step, []):
            measured = (calibrated(model, eval_data.batches(seed), cfg.calibration_batches)
                        if step == 0 else model)
            points[label] = {"step": step, **measure(measured, eval_data, autocast)}
        if step == total:
            break
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))
        x, y = next(batches)
        with autocast:
            loss = F.cross_entropy(_logits(model(x)), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
    return {label: points[label] for label in cfg.labels}


def run_one(cfg: EvalConfig, entry: samplers.HeldOut, arm: str, seed: int,
            generator: hyperinit.Generator | None, eval_data: EvalData,
            device: torch.device) -> dict[str, Any]:
    """One result row: build, init, train and measure ``entry`` with ``arm`` and ``seed``."""
    row: dict[str, Any] = {"arch": entry.name, "arm": arm, "seed": seed}
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = entry.build()
    skipped = init_(model, arm, seed, cfg.noise, generator)
    if skipped:
        return {**row, "skipped": skipped}
    if arm == "predicted":
        row["generator"] = generator.id
        row["noise"] = resolve_noise(generator, cfg.noise)
    row["params"] = sum(p.numel() for p in model.parameters())
    torch.manual_seed(seed)  # dropout and the like: the same stream for every arm
    points = train_and_measure(model.to(device), cfg, eval_data, seed, device)
    return {**row, "seconds": round(time.perf_counter() - start, 2), "at": points}


# ----- the run ------------------------------------------------------------------------------
def evaluate(cfg: EvalConfig) -> list[dict[str, Any]]:
    """Run every (arch, arm, seed) not yet in ``OUT/results.jsonl``; write the reports.

    Returns the rows of this config's selection, in (arch, arm, seed) order.
    """
    entries = select_archs(cfg)
    device = _device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    generator = hyperinit.load_generator(cfg.generator) if "predicted" in cfg.arms else None
    noise = cfg.noise if generator is None else resolve_noise(generator, cfg.noise)
    weights = None if generator is None else generator.id
    check_resumable({**cfg.to_dict(), "noise": noise, "generator_id": weights}, out, ROW_OPTIONS)
    done = load_rows(out / RESULTS, ("arch", "arm", "seed"))
    jobs = [(e, arm, seed) for e in entries for arm in cfg.arms for seed in cfg.seeds]
    todo = [j for j in jobs if (j[0].name, j[1], j[2]) not in done]
    if todo:
        eval_data = EvalData(cfg, device)
        bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=f"eval {cfg.task}")
        with open(out / RESULTS, "a") as f:
            for entry, arm, seed in todo:
                bar.set_postfix_str(f"{entry.name} {arm} seed {seed}")
                row = run_one(cfg, entry, arm, seed, generator, eval_data, device)
                f.write(json.dumps(row) + "\n")
                f.flush()
                done[entry.name, arm, seed] = row
                bar.update(1)
        bar.close()
    rows = [done[e.name, arm, seed] for e, arm, seed in jobs]
    write_reports(cfg, rows, out)
    return rows


def _device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' but no GPU is visible")
        return torch.device("cuda")
    return torch.device("cpu")


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically (temp file, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def check_resumable(config: dict[str, Any], out: Path, options: tuple[str, ...]) -> None:
    """Write ``config`` to ``OUT/config.json``; refuse an ``out`` whose rows (``results.jsonl``)
    were made with other values of ``options``, the ones that change a row's numbers."""
    path = out / "config.json"
    if path.is_file() and (out / RESULTS).is_file():
        theirs = json.loads(path.read_text())
        changed = [k for k in options if theirs.get(k) != config[k]]
        if changed:
            raise ValueError(
                f"{out} holds results made with other {', '.join(changed)} "
                f"({', '.join(f'{k}={theirs.get(k)!r}' for k in changed)}): use another out "
                "folder, or delete it to start over")
    write_text(path, json.dumps(config, indent=2))


def load_rows(path: Path, key: tuple[str, ...]) -> dict[tuple, dict[str, Any]]:
    """Finished rows by the values of ``key``. A line cut short by a crash is dropped for
    good (the file is rewritten without it)."""
    if not path.is_file():
        return {}
    rows, lines = {}, []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows[tuple(row[k] for k in key)] = row
        lines.append(line)
    write_text(path, "".join(line + "\n" for line in lines))
    return rows


# ----- reports ------------------------------------------------------------------------------
def write_reports(cfg: EvalConfig, rows: list[dict[str, Any]], out: Path) -> str:
    """``results.json``, ``table.md`` and ``curves.png`` in ``out``; returns the table."""
    write_text(out / "results.json", json.dumps(rows, indent=1))
    table = make_table(cfg, rows)
    write_text(out / "table.md", table)
    plot_curves(cfg, rows, out / "curves.png")
    return table


def _metric(cfg: EvalConfig) -> tuple[str, bool, float, str]:
    """(row key, higher is better, display scale, description) of the headline metric."""
    if cfg.task == "image":
        return "accuracy", True, 100.0, "CIFAR-10 test accuracy (%)"
    return "loss", False, 1.0, "validation loss (nats per character)"


def _values(cfg: EvalConfig, rows: list[dict[str, Any]],
            ) -> dict[tuple[str, str, str], dict[int, float]]:
    """Headline metric by (arch, arm, label), as {seed: value}, for the rows that ran."""
    key, _, scale, _ = _metric(cfg)
    values: dict[tuple[str, str, str], dict[int, float]] = {}
    for row in rows:
        for label, point in row.get("at", {}).items():
            values.setdefault((row["arch"], row["arm"], label), {})[row["seed"]] = (
                point[key] * scale)
    return values


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _groups(cfg: EvalConfig, rows: list[dict[str, Any]]) -> list[tuple[list[str], list[str], str]]:
    """``(archs, arms, name)`` sets to average over, so every mean compares like with like.

    The first group is all archs with the arms that ran on all of them; an arm that ran on
    fewer (mimetic: attention models only) adds a group of its archs, with every arm that
    ran on those.
    """
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    ran = {arm: {r["arch"] for r in rows if r["arm"] == arm and "at" in r} for arm in cfg.arms}
    groups = []
    for arm in cfg.arms:
        subset = [a for a in archs if a in ran[arm]]
        if not subset or any(subset == g for g, _, _ in groups):
            continue
        covering = [m for m in cfg.arms if ran[m] >= set(subset)]
        partial = [m for m in covering if ran[m] != set(archs)]
        name = (f"{len(subset)} archs" if len(subset) == len(archs)
                else f"{len(subset)} archs where {', '.join(partial)} ran")
        groups.append((subset, covering, name))
    return sorted(groups, key=lambda g: -len(g[0]))


def _over_archs(values: dict[tuple[str, str, str], dict[int, float]], archs: list[str],
                arm: str, label: str) -> tuple[float, float]:
    """Mean over ``archs`` per seed, then mean and std of that over the seeds."""
    ran = [values[a, arm, label] for a in archs]
    seeds = sorted(set.intersection(*(set(v) for v in ran)))
    return _mean_std([statistics.fmean(v[s] for v in ran) for s in seeds])


def make_table(cfg: EvalConfig, rows: list[dict[str, Any]]) -> str:
    """Markdown: mean ± std over seeds per arch, arm and k; means over archs (see
    :func:`_groups`); and on how many archs each arm beats ``default`` by more than the
    larger of the two seed stds."""
    _, higher, _, description = _metric(cfg)
    values = _values(cfg, rows)
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    skipped = {(r["arch"], r["arm"]) for r in rows if "skipped" in r}
    columns = [(arm, label) for arm in cfg.arms for label in cfg.labels]
    width = 3 if cfg.task == "text" else 1

    def fmt(mean_std: tuple[float, float]) -> str:
        return f"{mean_std[0]:.{width}f} ± {mean_std[1]:.{width}f}"

    def beats(arch: str, arm: str, label: str) -> bool | None:
        if (arch, arm, label) not in values or (arch, "default", label) not in values:
            return None
        (m1, s1), (m0, s0) = (_mean_std(list(values[arch, a, label].values()))
                              for a in (arm, "default"))
        return (m1 - m0 if higher else m0 - m1) > max(s1, s0)

    head = ["arch"] + [f"{arm} k={label}" if label != "epoch" else f"{arm} 1 epoch"
                       for arm, label in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in archs:
        cells = ["n/a" if (a, arm) in skipped else fmt(_mean_std(list(values[a, arm, lb].values())))
                 for arm, lb in columns]
        lines.append("| " + " | ".join([a, *cells]) + " |")
    for group, arms, name in _groups(cfg, rows):
        cells = [fmt(_over_archs(values, group, arm, lb)) if arm in arms else ""
                 for arm, lb in columns]
        lines.append("| " + " | ".join([f"**mean over {name}**", *cells]) + " |")
    beat_cells = []
    for arm, label in columns:
        wins = [w for w in (beats(a, arm, label) for a in archs) if w is not None]
        beat_cells.append("—" if arm == "default" or not wins else f"{sum(wins)}/{len(wins)}")
    lines.append("| " + " | ".join(["**beats default by > std**", *beat_cells]) + " |")
    summary = ""
    if "predicted" in cfg.arms and "default" in cfg.arms:
        k = "200" if 200 in cfg.ks else str(cfg.ks[-1])
        wins = [w for w in (beats(a, "predicted", k) for a in archs) if w is not None]
        summary = (f"\nAt k={k}, the predicted init beats the default init by more than the "
                   f"seed std on {sum(wins)} of {len(wins)} architectures.\n")
    better = "higher" if higher else "lower"
    title = (f"{description}, mean ± std over seeds {', '.join(map(str, cfg.seeds))}, after k "
             f"training steps ({better} is better). Generator: {cfg.generator or 'default'}; "
             f"lr {cfg.lr}, batch {cfg.batch_size}, weight decay {cfg.weight_decay}.\n\n")
    return title + "\n".join(lines) + "\n" + summary


def plot_curves(cfg: EvalConfig, rows: list[dict[str, Any]], path: Path) -> Path:
    """Headline metric against training steps per arm, one panel per group of archs (see
    :func:`_groups`): the mean over the group, with its std over seeds as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, _, _, description = _metric(cfg)
    values = _values(cfg, rows)
    steps = {label: point["step"] for r in rows for label, point in r.get("at", {}).items()}
    groups = _groups(cfg, rows)
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(6 * max(1, len(groups)), 4),
                             squeeze=False)
    for ax, (archs, arms, name) in zip(axes[0], groups, strict=False):
        xs = [steps[label] for label in cfg.labels]
        for arm in arms:
            means, stds = zip(*(_over_archs(values, archs, arm, label) for label in cfg.labels),
                              strict=True)
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=arm,
                        color=f"C{cfg.arms.index(arm)}")  # one color per arm in every panel
        ax.set(xlabel="training steps", ylabel=description, title=f"{cfg.task}: mean over {name}")
        ax.legend()
    fig.suptitle("error bars: std over seeds of the mean over archs", fontsize=9)
    save_figure(fig, path)
    return path


def compare_inits(spec: graphs.ArchSpec, init: str | Path, steps: int,
                  data_path: str | None = None) -> str:
    """Train ``spec`` from the init file and from PyTorch's default init, with the same data
    and seed, for ``steps`` SGD steps on CIFAR-10 (5,000 training and 1,000 test images),
    and return a small markdown table of test accuracy. A quick look, not an evaluation:
    ``hyperinit eval`` is that."""
    from hyperinit.safetensors_io import read_state

    if spec.source not in ("torchvision", "timm", "python"):
        raise ValueError(f"--compare trains CIFAR-10 image classifiers; {spec.label} is not one")
    cfg = EvalConfig(task="image", data=data_path, seeds=(0,), ks=(0, steps), batch_size=64,
                     train_samples=5000, test_samples=1000, device="cpu")
    eval_data = EvalData(cfg, torch.device("cpu"))
    state = read_state([init])  # tied aliases restored
    results = {}
    for arm in ("predicted", "default"):
        torch.manual_seed(0)
        model = spec.build(meta=False)
        if arm == "predicted":
            model.load_state_dict(state, strict=True)
        results[arm] = train_and_measure(model, cfg, eval_data, 0, torch.device("cpu"))
    lines = [f"| init | test accuracy, no training | after {steps} steps |", "|---|--:|--:|"]
    for arm, points in results.items():
        lines.append(f"| {arm} | {100 * points['0']['accuracy']:.1f}% | "
                     f"{100 * points[str(steps)]['accuracy']:.1f}% |")
    return "\n".join(lines)
