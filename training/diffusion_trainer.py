"""Train the weight-diffusion generator on the checkpoints of a model zoo.

Each step draws ``batch_size`` checkpoints (a pure function of seed, step and rank, like
the hypernetwork's architectures), noises their normalized weight tokens at random
timesteps and regresses the noise or the clean tokens, as ``prediction_type`` says
(:func:`hyperinit.diffusion.diffusion_loss`). Everything
else, from resume to DDP, is :class:`training.trainer.Trainer`'s.
"""

from __future__ import annotations

import torch

from hyperinit.diffusion import DiffusionConfig, WeightDiffusion, WeightTokenizer, diffusion_loss

from .trainer import Trainer
from .zoo import arch_graph, load_zoo, select_checkpoints


class DiffusionTrainer(Trainer):
    """Learns :class:`hyperinit.WeightDiffusion` from ``cfg.zoo`` at ``cfg.zoo_step``."""

    desc = "diffusion"

    def setup(self) -> None:
        self.model_config = DiffusionConfig(**self.cfg.size())
        entries = select_checkpoints(load_zoo(self.cfg.zoo), self.cfg.zoo_step)
        if not entries:
            raise ValueError(f"the zoo at {self.cfg.zoo} has no checkpoints to learn from")
        tokenizer = WeightTokenizer(self.model_config.chunk)
        self.samples = [tokenizer.encode(e.state_dict(), arch_graph(e.record["arch"]))
                        for e in entries]

    def build_model(self) -> WeightDiffusion:
        return WeightDiffusion(self.model_config)

    def loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        picks = self.picks(self.step, self.cfg.batch_size, len(self.samples))
        with self.autocast():
            return diffusion_loss(self.model, [self.samples[i] for i in picks]), {}
