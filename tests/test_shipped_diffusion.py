"""The shipped task-conditioned weight-diffusion generator, through the public API: an init
for a five-way task it never saw starts far above chance, on an architecture of its family
it never saw too, and a full-size ResNet-18 is taken whole."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import load_file

import hyperinit
from hyperinit.cli import main
from training.recipe import EvalData, RecipeConfig, train_steps
from training.tasks import held_out_tasks
from training.zoo import build_arch

GENERATOR = "diffusion-resnet-cifar10-tasks"
ARCH = "python:training.zoo:build_arch"


@pytest.fixture(scope="module")
def task_data(shared_data) -> tuple[RecipeConfig, EvalData]:
    recipe = RecipeConfig(task="image", train_samples=640, test_samples=1000,
                          calibration_batches=5, device="cpu")
    return recipe, EvalData(recipe, torch.device("cpu"))


def zero_shot_accuracy(model: torch.nn.Module, recipe: RecipeConfig, data: EvalData) -> float:
    """Test accuracy before any training step, BatchNorm statistics calibrated."""
    (_, metrics), = train_steps(model, recipe, data, seed=0, device=torch.device("cpu"),
                                marks=[0])
    return metrics["accuracy"]


def test_it_ships_conditioned_on_cifar10_classes():
    generator = hyperinit.load_generator(GENERATOR)
    assert isinstance(generator, hyperinit.WeightDiffusion)
    assert generator.task_classes[3] == "cat" and generator.config.group > 1


@pytest.mark.parametrize("task", held_out_tasks(5)[:2], ids=lambda t: t.name)
def test_an_init_for_a_held_out_task_starts_far_above_chance(task, task_data):
    recipe, data = task_data
    model = hyperinit.predict(ARCH, GENERATOR, task=task, num_classes=5, name="bnresnet-1")
    accuracy = zero_shot_accuracy(model, recipe, data.for_task(task))
    assert accuracy > 0.4, f"{task.name}: {accuracy:.3f} (chance 0.2)"


def test_seeds_give_different_inits_for_a_task():
    """Trained with low-noise timesteps weighed up (snr_boost), the denoiser keeps the noise
    it starts from: samples of one task differ as the zoo's runs do (about 11% apart), where
    a model trained without it gave one model per task (0.6% apart)."""
    task = held_out_tasks(5)[0]
    first, second = hyperinit.sample(build_arch("bnresnet-1", 5), GENERATOR, task=task, n=2)
    flat = [torch.cat([v.flatten() for v in s.values() if v.is_floating_point()])
            for s in (first, second)]
    assert (flat[0] - flat[1]).norm() / flat[0].norm() > 0.05


def test_a_held_out_architecture_of_its_family_starts_above_chance(task_data):
    """bnresnet-15 (ReLU, blocks 1 + 2) is in none of the zoo's runs (its twin with SiLU,
    bnresnet-29, is): the graph encoder places its tensors. On this task its samples start
    at 57-59% (on cifar10-0-1-3-5-9 at 37-39%; see the card)."""
    recipe, data = task_data
    task = held_out_tasks(5)[1]
    model = hyperinit.predict(ARCH, GENERATOR, task=task, num_classes=5, name="bnresnet-15")
    accuracy = zero_shot_accuracy(model, recipe, data.for_task(task))
    assert accuracy > 0.4, f"{task.name}: {accuracy:.3f} (chance 0.2)"


def test_predict_writes_an_init_for_a_named_task(tmp_path):
    out = tmp_path / "init.safetensors"
    assert main(["predict", ARCH, "--config", '{"name": "bnresnet-1"}', "--num-classes", "5",
                 "--generator", GENERATOR, "--task", "cifar10-0-1-3-5-9", "--out",
                 str(out)]) == 0
    with safe_open(out, "pt") as f:
        assert json.loads(f.metadata()["hyperinit.task"])["name"] == "cifar10-0-1-3-5-9"
    build_arch("bnresnet-1", 5).load_state_dict(load_file(out))


@pytest.mark.slow
def test_a_resnet18_is_sampled_whole():
    (state,) = hyperinit.sample("torchvision:resnet18", GENERATOR, num_classes=10)
    model = torchvision.models.resnet18(num_classes=10)
    model.load_state_dict(state)
    assert all(torch.isfinite(v).all() for v in state.values())
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 10)
