"""Train a generator: the loop both generators share, and the graph hypernetwork's step.

:class:`Trainer` is the loop: setup (distributed, data, model, optimizer), resume, steps,
checkpointing. :class:`GHNTrainer` predicts parameters for a meta-batch of architectures,
runs the same data batch through each, and backpropagates the averaged loss into the
hypernetwork; ``training.diffusion_trainer.DiffusionTrainer`` denoises zoo checkpoints;
``training.run`` picks the one a config asks for.
Launch on many processes with ``torchrun``: each rank draws its own architectures (or
checkpoints) and data, ``DistributedDataParallel`` averages the gradients, rank 0 writes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from math import prod
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import graphs
from hyperinit import (
    CheckpointError,
    GHNConfig,
    GraphHyperNetwork,
    PredictDefaults,
    load_generator,
)
from hyperinit.predict import add_noise
from hyperinit.safetensors_io import atomic_path, replace_folder

from . import data, samplers
from .config import TrainConfig, drop_removed
from .recipe import cosine_lr
from .results import write_text
from .teacher import Teacher, distill_loss

CHECKPOINT = "checkpoint.pt"
GENERATOR_DIR = "generator"
METRICS = "metrics.jsonl"


@dataclass
class Arch:
    """A training architecture: its structure (parameters on meta), buffers, and graph."""

    name: str
    module: nn.Module
    buffers: dict[str, torch.Tensor]
    graph: graphs.ArchGraph


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio * lr`` (a pure function of step)."""
    return cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio)


def task_logits(module: nn.Module, state: dict[str, torch.Tensor], x: torch.Tensor,
                ) -> torch.Tensor:
    """``module``'s logits, run with ``state`` as its parameters and buffers, one row per
    label (a text model's positions flattened)."""
    out = functional_call(module, state, (x,))
    logits = out if isinstance(out, torch.Tensor) else out.logits
    return logits.reshape(-1, logits.shape[-1]).float()


class Trainer:
    """One run of one generator: ``Trainer(cfg).train()``. Rank 0 logs and checkpoints.

    This class is the loop both generators share (learning-rate schedule, gradient
    averaging across ranks, clipping, checkpoints, exact resume, metrics, time limit).
    A subclass says what is trained and what one step's loss is: :meth:`setup`,
    :meth:`build_model`, :meth:`loss`, and the state of its data stream.
    """

    desc = "train"  # the progress bar's label

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.rank, self.world = _init_distributed(cfg)
        self.device = _device(cfg)
        self.out = Path(cfg.out)
        self.setup()
        torch.manual_seed(cfg.seed)
        self.model = self.build_model().to(self.device)
        if cfg.init:
            self.load_init(cfg.init)
        if cfg.encoder_init:
            self.load_encoder(cfg.encoder_init)
        # What a step runs: the loss, or on many ranks the loss under DDP, which starts every
        # rank from rank 0's weights and averages the gradients in backward.
        self.objective = self.loss if self.world == 1 else DistributedDataParallel(
            _Objective(self.model, self.loss), device_ids=_device_ids(self.device),
            find_unused_parameters=True)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr,
                                           weight_decay=cfg.weight_decay)
        self.step = 0

    # ----- what a subclass provides -------------------------------------------------------
    def setup(self) -> None:
        """Load data (and anything else) before the model exists."""

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        """This step's loss to backpropagate, and extra metrics to log."""
        raise NotImplementedError

    def data_state(self) -> dict[str, Any]:
        """What the data stream needs to resume exactly (saved in the checkpoint)."""
        return {}

    def load_data_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`data_state`."""

    def autocast(self) -> torch.autocast:
        """bfloat16 autocast on GPU when ``cfg.amp``; a no-op on CPU."""
        return torch.autocast("cuda", dtype=torch.bfloat16,
                              enabled=self.cfg.amp and self.device.type == "cuda")

    def picks(self, step: int, n: int, population: int) -> list[int]:
        """``n`` draws from ``range(population)`` for a step on this rank: a pure function
        of (seed, step, rank), so resuming needs no sampler state and ranks differ."""
        rng = random.Random(f"{self.cfg.seed}-{step}-{self.rank}")
        return [rng.randrange(population) for _ in range(n)]

    def load_init(self, name: str) -> None:
        """Start from a trained generator's weights (fine-tune it): it must be the generator
        this run builds, at the same size."""
        source = load_generator(name)
        if source.defaults.orth:
            raise ValueError(f"init={name!r} was trained through orthogonalization (orth: true "
                             "in its config.json), which training no longer does: start from "
                             "another generator")
        if type(source) is not type(self.model) or _size(source) != _size(self.model):
            raise ValueError(
                f"init={name!r} is a {type(source).__name__} with {_size(source)}, "
                f"but this run builds a {type(self.model).__name__} with "
                f"{_size(self.model)}: set generator= and the size options to match")
        self.model.load_state_dict(source.state_dict())
        if self.cfg.noise is None:
            self.model.defaults.noise = source.defaults.noise  # the init's default noise

    def load_encoder(self, name: str) -> None:
        """Start the graph encoder from a trained generator's, whatever its decoder."""
        source = load_generator(name)
        if not isinstance(source, GraphHyperNetwork) or any(
                getattr(source.config, k) != getattr(self.model.config, k)
                for k in ("hidden", "layers", "heads")):
            raise ValueError(f"encoder_init={name!r} has no graph encoder of this run's size "
                             f"(hidden, layers, heads = {self.model.config.hidden}, "
                             f"{self.model.config.layers}, {self.model.config.heads})")
        self.model.encoder.load_state_dict(source.encoder.state_dict())

    # ----- one step -----------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        lr = lr_at(self.step, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, extra = self.objective()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.step += 1
        return {"step": self.step, "loss": loss.item(), **extra, "grad_norm": float(grad_norm),
                "lr": lr}

    # ----- the loop -----------------------------------------------------------------------
    def train(self) -> Path:
        """Run until ``cfg.steps``; returns the exported generator folder."""
        cfg = self.cfg
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text(self.out / "config.json", json.dumps(cfg.to_dict(), indent=2))
        if cfg.resume and (self.out / CHECKPOINT).is_file():
            self.load_checkpoint(self.out / CHECKPOINT)
        bar = tqdm(total=cfg.steps, initial=self.step, disable=self.rank != 0, desc=self.desc)
        start = time.perf_counter()
        while self.step < cfg.steps:
            if cfg.max_seconds is not None and time.perf_counter() - start > cfg.max_seconds:
                self.save_checkpoint()  # out of time: stop here, resume in a later run
                break
            metrics = self.train_step()
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}")
            if self.rank == 0 and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                metrics["seconds"] = round(time.perf_counter() - start, 2)
                with open(self.out / METRICS, "a") as f:
                    f.write(json.dumps(metrics) + "\n")
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.save_checkpoint()
        bar.close()
        if self.world > 1:
            dist.barrier()
        return self.out / GENERATOR_DIR

    # ----- checkpoints --------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Rank 0 writes the full training state and an exported generator, atomically."""
        if self.rank != 0:
            return
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data": self.data_state(),
            "torch_rng": torch.get_rng_state(),
            "config": self.cfg.to_dict(),
        }
        with atomic_path(self.out / CHECKPOINT) as tmp:
            torch.save(state, tmp)
        staging = self.out / f".{GENERATOR_DIR}.tmp"
        for leftover in (staging, staging.with_name(f"{staging.name}.old")):  # a crash's
            shutil.rmtree(leftover, ignore_errors=True)
        self.model.save_pretrained(staging)
        replace_folder(staging, self.out / GENERATOR_DIR)
        from .plots import plot_metrics

        plot_metrics(self.out / METRICS, self.out / "curves.png")

    def load_checkpoint(self, path: Path) -> None:
        """Restore everything :meth:`save_checkpoint` wrote (our own file: weights only)."""
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
            drop_removed(state["config"], "its config")
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.load_data_state(state["data"])
        except Exception as err:  # noqa: BLE001 - any damage means the same thing to the user
            raise CheckpointError(
                f"cannot resume from {path}: {err}. Delete it (or pass resume=false) to start "
                "over") from err
        torch.set_rng_state(state["torch_rng"].cpu())
        self.step = int(state["step"])
        if self.rank == 0:
            self._drop_metrics_after(self.step)

    def _drop_metrics_after(self, step: int) -> None:
        """Forget the rows a stopped run logged after its last checkpoint (and a row cut
        short): the resumed run logs those steps again, so every step appears once."""
        path = self.out / METRICS
        if not path.is_file():
            return
        lines = path.read_text().splitlines()
        keep = []
        for line in lines:
            try:
                row_step = json.loads(line)["step"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
            if row_step <= step:
                keep.append(line)
        if keep != lines:
            write_text(path, "".join(line + "\n" for line in keep))


class GHNTrainer(Trainer):
    """The graph hypernetwork: each step predicts parameters for a meta-batch of sampled
    architectures, runs the same data batch through each, and averages the task loss."""

    def setup(self) -> None:
        self.desc = f"ghn {self.cfg.task}"
        self.sampler = samplers.mixed(self.cfg.task)
        self.batches = self._batches()
        self.teacher = Teacher(self.cfg.teacher, self.device) if self.cfg.teacher else None
        self._pool: dict[int, Arch] = {}
        if self.cfg.prebuild_workers > 0:  # before CUDA starts: worker processes fork
            self._prebuild(self.cfg.prebuild_workers)

    def build_model(self) -> GraphHyperNetwork:
        options = {} if self.cfg.noise is None else {"noise": self.cfg.noise}
        return GraphHyperNetwork(GHNConfig(**self.cfg.size()), PredictDefaults(**options))

    def _batches(self):
        cfg, seed = self.cfg, self.cfg.seed * 1000 + self.rank
        if cfg.task == "image":
            images, labels = data.load_cifar10(cfg.data, "train")
            if cfg.train_samples:  # a fixed random subset: the files are sorted by class
                keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
                images, labels = images[keep[:cfg.train_samples]], labels[keep[:cfg.train_samples]]
            return data.ImageBatches(images.to(self.device), labels.to(self.device),
                                     cfg.batch_size, seed=seed)
        corpus = data.load_text(cfg.data)
        return data.TextBatches(corpus.train.to(self.device), cfg.batch_size, cfg.block_size,
                                seed=seed)

    def data_state(self) -> dict[str, Any]:
        return self.batches.state_dict()

    def load_data_state(self, state: dict[str, Any]) -> None:
        self.batches.load_state_dict(state)

    def _arch(self, seed: int) -> Arch:
        """The architecture of a pool seed, built on first use and kept."""
        if seed not in self._pool:
            self._pool[seed] = build_arch(self.sampler, seed, self.cfg)
        arch = self._pool[seed]
        if arch.buffers and next(iter(arch.buffers.values())).device != self.device:
            arch.buffers = {k: v.to(self.device) for k, v in arch.buffers.items()}
        return arch

    def _prebuild(self, workers: int) -> None:
        """Build the whole pool in worker processes (sampling and tracing cost CPU time)."""
        from concurrent.futures import ProcessPoolExecutor

        seeds = range(self.cfg.arch_pool)
        with ProcessPoolExecutor(workers) as pool:
            built = pool.map(build_arch, [self.sampler] * len(seeds), seeds,
                             [self.cfg] * len(seeds), chunksize=8)
            self._pool = dict(zip(seeds, tqdm(built, total=len(seeds), desc="architectures",
                                                disable=self.rank != 0), strict=True))

    def arch_seeds(self, step: int) -> list[int]:
        """The architectures of a step on this rank."""
        return self.picks(step, self.cfg.meta_batch, self.cfg.arch_pool)

    def loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        archs = [self._arch(s) for s in self.arch_seeds(self.step)]
        x, y = next(self.batches)
        temperature = cfg.distill_temperature
        soft = self.teacher.soft_targets(x, temperature) if self.teacher else None
        with self.autocast():
            predicted = self.model([a.graph for a in archs])
            if cfg.noise:
                # seeded by (seed, step, rank), like the picks: a resumed run draws the same
                rng = torch.Generator().manual_seed(self.picks(self.step, 1, 2**62)[0])
                predicted = [as_predicted(a.graph, t, cfg.noise, rng)
                             for a, t in zip(archs, predicted, strict=True)]
            losses, distill = [], []
            for arch, tensors in zip(archs, predicted, strict=True):
                # Predicted tensors come out of autocast in bf16; parameters are kept fp32
                # like any model's (BatchNorm insists), and autocast still runs the math in
                # bf16.
                params, buffers = _fp32(tensors), _fresh(arch.buffers)
                logits = task_logits(arch.module, {**params, **buffers}, x)
                losses.append(F.cross_entropy(logits, y.reshape(-1)))
                if soft is not None:
                    distill.append(distill_loss(logits, soft, temperature))
            task = torch.stack(losses).mean()
            norm = sum(t.float().norm() for p in predicted for t in p.values()) / len(archs)
        metrics = {"task_loss": task.item(), "param_norm": norm.item()}
        loss = task + cfg.reg * norm
        if distill:
            kd = torch.stack(distill).mean()
            metrics["distill_loss"] = kd.item()
            loss = loss + cfg.distill * kd
        if cfg.spread:
            matrices = [t for a, p in zip(archs, predicted, strict=True)
                        for t in weight_matrices(a.graph, p)]
            collapse = torch.stack([spread_penalty(t) for t in matrices]).mean()
            metrics["spread_loss"] = collapse.item()
            loss = loss + cfg.spread * collapse
        return loss, metrics


def participation_ratio(weight: torch.Tensor) -> torch.Tensor:
    """``(sum s^2)^2 / sum s^4`` of the singular values ``s`` of ``weight`` viewed as output
    channels by the rest: how many directions carry its energy (1 for rank one, the smaller
    side for a flat spectrum). Differentiable; from the Gram matrix of the smaller side."""
    w = weight.float().flatten(1)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return torch.diagonal(gram).sum() ** 2 / (gram * gram).sum().clamp_min(1e-30)


def spread_penalty(weight: torch.Tensor) -> torch.Tensor:
    """``-log`` of the participation ratio's share of its largest value: 0 for a flat
    spectrum, ``log(min(out, in))`` for rank one."""
    return -torch.log(participation_ratio(weight) / min(weight.flatten(1).shape))


def weight_matrices(graph: graphs.ArchGraph, tensors: dict[str, torch.Tensor],
                    ) -> list[torch.Tensor]:
    """The predicted weights the spread term covers: every weight matrix or kernel with more
    than one row and column."""
    return [tensors[p.name] for p in graph.params
            if p.role == "weight" and len(p.shape) >= 2 and min(p.shape[0], prod(p.shape[1:])) > 1]


def as_predicted(graph: graphs.ArchGraph, tensors: dict[str, torch.Tensor], noise: float,
                 rng: torch.Generator) -> dict[str, torch.Tensor]:
    """Predicted tensors with ``noise``, as ``hyperinit.predict`` gives them (tied names stay
    one tensor), differentiable in the prediction."""
    out = {}
    for p in graph.params:
        out[p.name] = add_noise(tensors[p.name], p.role, noise, rng)
        out.update(dict.fromkeys(p.tied, out[p.name]))
    return out


def _size(generator: nn.Module) -> dict[str, Any]:
    """A generator's network config: what the shapes of its weights depend on."""
    return asdict(generator.config)


def build_arch(sampler: samplers.Mixed, seed: int, cfg: TrainConfig) -> Arch:
    """Sample on CPU (for real buffer values), trace its graph, keep only the structure."""
    name, module = sampler.sample(seed)
    example = (torch.zeros(2, 3, 32, 32) if cfg.task == "image"
               else torch.zeros(2, cfg.block_size, dtype=torch.long))
    graph = graphs.build(module, example, name=name)
    buffers = dict(module.named_buffers())
    return Arch(name, module.to("meta").train(), buffers, graph)


def _fp32(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in tensors.items()}


def _fresh(buffers: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies of the buffers, so BatchNorm's running-stat updates never accumulate."""
    return {k: v.clone() for k, v in buffers.items()}


class _Objective(nn.Module):
    """A trainer's loss as the forward of a module that holds the generator, so that
    ``DistributedDataParallel`` can wrap it: a step's loss calls the generator's methods in
    whatever way it needs (the diffusion loss calls several), not one ``forward``."""

    def __init__(self, model: nn.Module, loss: Any) -> None:
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss()


def _device_ids(device: torch.device) -> list[int] | None:
    """DDP's ``device_ids``: this rank's GPU, or None on CPU."""
    return [device.index] if device.type == "cuda" else None


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' but no GPU is visible")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def _init_distributed(cfg: TrainConfig) -> tuple[int, int]:
    """Join the process group ``torchrun`` set up (nccl on GPU, gloo on CPU), if any."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        gpu = cfg.device != "cpu" and torch.cuda.is_available()
        if gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if gpu else "gloo")
    return dist.get_rank(), dist.get_world_size()
