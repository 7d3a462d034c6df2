"""Weight diffusion end to end on real weights: slow (minutes of CPU training)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from training.config import TrainConfig
from training.run import train
from training.zoo_eval import ZooEvalConfig, evaluate_zoo


@pytest.mark.slow
def test_a_model_of_one_checkpoint_samples_it_back(tmp_path, tiny_zoo, shared_data):
    """Trained on a single checkpoint, samples must land on it: the tokenizer, stats head,
    DDIM sampler and decoding together lose nothing (a check of the pipeline, not of
    generalization)."""
    zoo = Path(tiny_zoo[0].out)
    run = next((zoo / "models").glob("*/vgg-2_run000"))
    one = tmp_path / "zoo" / "models" / run.parent.name / run.name
    shutil.copytree(run, one)
    generator = train(TrainConfig(generator="diffusion", zoo=str(tmp_path / "zoo"),
                                  prediction_type="sample", out=str(tmp_path / "run"),
                                  steps=800, batch_size=4, lr=1e-3, warmup_steps=20, hidden=64,
                                  layers=2, heads=4, checkpoint_every=800, device="cpu"))
    rows = evaluate_zoo(ZooEvalConfig(
        generator=str(generator), zoo=str(tmp_path / "zoo"), out=str(tmp_path / "eval"),
        methods=("diffusion", "checkpoint"), samples=2, ks=(0,), test_samples=1000,
        data=str(shared_data / "cifar10-jpg.zip"), device="cpu"))
    checkpoint = next(r for r in rows if r["method"] == "checkpoint")["at"]["0"]["accuracy"]
    for row in (r for r in rows if r["method"] == "diffusion"):
        assert row["distance"] < 0.2 and row["overlap"] > 0.8
        assert abs(row["at"]["0"]["accuracy"] - checkpoint) < 0.03
