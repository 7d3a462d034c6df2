"""Soft targets for distillation: the averaged predictions of a model zoo's classifiers.

A generator trained on hard labels alone gets one bit of signal per image. A teacher's
soft targets say also which wrong classes are close (Hinton et al., 2015), which a
generator that starts at chance can use long before it gets the labels right. The
teacher here is a model zoo (``hyperinit zoo build``): its ten-way checkpoints at each
architecture's last saved step, their tempered softmax outputs averaged (an ensemble).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .zoo import load_zoo, select_checkpoints


class Teacher:
    """A model zoo's trained ten-way classifiers as one averaged soft-target source."""

    def __init__(self, zoo: str | Path, device: torch.device) -> None:
        entries = [e for e in select_checkpoints(load_zoo(zoo)) if e.task is None]
        if not entries:
            raise ValueError(f"the zoo at {zoo} has no ten-way checkpoints to teach with (a "
                             "zoo built with tasks= has only k-way ones): build one without "
                             "tasks")
        self.models = [e.module().to(device).eval() for e in entries]

    @torch.no_grad()
    def soft_targets(self, x: torch.Tensor, temperature: float) -> torch.Tensor:
        """The mean over the teacher's models of ``softmax(logits / temperature)``."""
        return torch.stack([F.softmax(m(x).float() / temperature, dim=-1)
                            for m in self.models]).mean(0)


def distill_loss(logits: torch.Tensor, targets: torch.Tensor, temperature: float,
                 ) -> torch.Tensor:
    """``T^2 * KL(targets || softmax(logits / T))``, batch mean: the T^2 keeps its gradient
    on the scale of the cross-entropy's whatever the temperature."""
    log_probs = F.log_softmax(logits.float() / temperature, dim=-1)
    return temperature ** 2 * F.kl_div(log_probs, targets, reduction="batchmean")
