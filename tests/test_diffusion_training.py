"""Weight diffusion end to end on real weights: trained on tiny zoos, with and without tasks
(the slow ones take minutes of CPU training)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_TASK_ZOO, tiny_zoo_config

from hyperinit.diffusion import WeightDiffusion, sample, sample_state_dicts
from training.config import TrainConfig
from training.run import train
from training.tasks import Task, held_out_tasks
from training.zoo import arch_graph, build_arch, build_zoo, load_zoo
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


def test_a_zoo_over_tasks_trains_a_task_conditioned_model(tmp_path, tiny_task_zoo, tiny_zoo):
    """The trainer feeds each checkpoint its recorded task: the descriptor projection starts
    at zero, so samples for different tasks differ only if training fed descriptors."""
    options = {"generator": "diffusion", "steps": 4, "batch_size": 4, "hidden": 16,
               "layers": 1, "heads": 2, "graph_layers": 1, "chunk": 16, "window": 64,
               "checkpoint_every": 4, "device": "cpu"}
    folder = train(TrainConfig(zoo=tiny_task_zoo[0].out, out=str(tmp_path / "tasks"),
                               **options))
    model = WeightDiffusion.from_pretrained(folder)
    assert model.config.task_dim == 10
    graph = arch_graph("bnresnet-1", 3)
    seen = Task.parse(load_zoo(tiny_task_zoo[0].out)[0].record["task"])
    unseen = held_out_tasks(3)[0]
    states = [sample_state_dicts(model, graph, seed=0, steps=2, task=t)[0]
              for t in (seen, unseen, seen.descriptor(), None)]
    name = graph.params[0].name
    assert torch.equal(states[0][name], states[2][name])  # a Task or its descriptor
    assert not torch.equal(states[0][name], states[1][name])
    assert not torch.equal(states[1][name], states[3][name])
    init = sample(build_arch("bnresnet-1", 3), generator=model, task=unseen, steps=2)[0]
    assert init.keys() == build_arch("bnresnet-1", 3).state_dict().keys()
    assert dict(model.iter_tensors(graph, task=seen)).keys() == states[0].keys()
    with pytest.raises(ValueError, match=r"descriptors of 10 values .*got shape \(3,\)"):
        sample_state_dicts(model, graph, task=[1.0, 1.0, 1.0])
    plain = train(TrainConfig(zoo=tiny_zoo[0].out, out=str(tmp_path / "plain"), **options))
    assert WeightDiffusion.from_pretrained(plain).config.task_dim == 0


@pytest.mark.slow
def test_the_task_steers_samples_to_that_tasks_checkpoint(tmp_path, shared_data):
    """Two checkpoints of one architecture, each of its own task: after 300 steps (about
    half a minute of CPU) samples for a task lie nearer that task's checkpoint."""
    cfg = tiny_zoo_config(shared_data, tmp_path / "zoo", **{**TINY_TASK_ZOO,
                                                            "archs": ("vgg-2",), "save_at": (4,)})
    build_zoo(cfg)
    entries = load_zoo(cfg.out)
    assert len({e.task for e in entries}) == 2
    folder = train(TrainConfig(generator="diffusion", zoo=cfg.out, prediction_type="sample",
                               out=str(tmp_path / "run"), steps=300, batch_size=4, lr=1e-3,
                               warmup_steps=20, hidden=64, layers=2, heads=4,
                               checkpoint_every=300, device="cpu"))
    model = WeightDiffusion.from_pretrained(folder)
    graph = arch_graph("vgg-2", 3)
    flat = [torch.cat([e.state_dict()[p.name].flatten() for p in graph.params]) for e in entries]
    for own, entry in enumerate(entries):
        for state in sample_state_dicts(model, graph, n=2, seed=0, task=entry.task):
            theta = torch.cat([state[p.name].flatten() for p in graph.params])
            distance = [((theta - c).norm() / c.norm()).item() for c in flat]
            assert distance[own] < distance[1 - own] - 0.03, (entry.task.name, distance)
