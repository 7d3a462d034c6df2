"""Train the weight-diffusion generator on the checkpoints of a model zoo.

Each step draws ``batch_size`` checkpoints (a pure function of seed, step and rank, like
the hypernetwork's architectures), noises their normalized weight tokens at random
timesteps and regresses the noise or the clean tokens, as ``prediction_type`` says
(:func:`hyperinit.diffusion.diffusion_loss`).

A zoo over tasks (``hyperinit zoo build tasks=K``) makes a task-conditioned model: each
checkpoint is fed its recorded task's descriptor (``task_dim`` is the descriptor's length,
10, and ``task_classes`` CIFAR-10's class names, so users may name a task), and checkpoints
without a task, trained on every class, that of the ten-way task. A
zoo without tasks makes an unconditional model, as before. Everything else, from resume to
DDP, is :class:`training.trainer.Trainer`'s.
"""

from __future__ import annotations

import torch

from hyperinit.diffusion import DiffusionConfig, WeightDiffusion, WeightTokenizer, diffusion_loss

from .data import CIFAR10_CLASSES
from .tasks import EVERY_CLASS
from .trainer import Trainer
from .zoo import arch_graph, load_zoo, record_classes, select_checkpoints


class DiffusionTrainer(Trainer):
    """Learns :class:`hyperinit.WeightDiffusion` from ``cfg.zoo`` at ``cfg.zoo_step``."""

    desc = "diffusion"

    def setup(self) -> None:
        entries = select_checkpoints(load_zoo(self.cfg.zoo), self.cfg.zoo_step)
        if not entries:
            raise ValueError(f"the zoo at {self.cfg.zoo} has no checkpoints to learn from")
        self.tasks = None  # the descriptor of each sample's task, for a zoo over tasks
        if any(e.task is not None for e in entries):
            self.tasks = [(e.task or EVERY_CLASS).descriptor() for e in entries]
        tasks = ({"task_dim": len(CIFAR10_CLASSES), "task_classes": CIFAR10_CLASSES}
                 if self.tasks else {})
        self.model_config = DiffusionConfig(**self.cfg.size(), **tasks)
        tokenizer = WeightTokenizer(self.model_config.chunk)
        self.samples = [tokenizer.encode(e.state_dict(),
                                         arch_graph(e.record["arch"], record_classes(e.record)))
                        for e in entries]

    def build_model(self) -> WeightDiffusion:
        return WeightDiffusion(self.model_config)

    def loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        picks = self.picks(self.step, self.cfg.batch_size, len(self.samples))
        tasks = None if self.tasks is None else [self.tasks[i] for i in picks]
        with self.autocast():
            return diffusion_loss(self.model, [self.samples[i] for i in picks], tasks), {}
