"""Which trainer a config asks for, and running it: what ``hyperinit train`` calls.

It sits above both trainers (``training.trainer`` and ``training.diffusion_trainer``, which
builds on the first), so neither has to import the other's subclass.
"""

from __future__ import annotations

from pathlib import Path

from .config import TrainConfig
from .trainer import GHNTrainer, Trainer


def trainer(cfg: TrainConfig) -> Trainer:
    """The trainer of ``cfg.generator``."""
    if cfg.generator == "diffusion":
        from .diffusion_trainer import DiffusionTrainer  # imports diffusers: only when asked

        return DiffusionTrainer(cfg)
    return GHNTrainer(cfg)


def train(cfg: TrainConfig) -> Path:
    """Train a generator as ``cfg`` says; returns its exported folder (load_generator-ready)."""
    return trainer(cfg).train()
