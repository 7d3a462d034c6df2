"""Zoo evaluation: every method's rows, novelty, the baselines, resume, bad inputs and the CLI.

One tiny zoo on the real shared CIFAR-10 data (vgg-2, 3 runs of 2 steps on 128 images, saved
at steps 1 and 2) and a tiny weight-diffusion model trained for a few steps on its
last checkpoints; the evaluation makes 2 models per method and trains each for 2 steps.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from hyperinit.commands import zoo as zoo_command
from hyperinit.generator import folder_id
from training.config import TrainConfig, load_config
from training.recipe import EvalData
from training.run import train
from training.zoo import ZooConfig, build_arch, build_zoo
from training.zoo_eval import (
    Checkpoints,
    average,
    evaluate_zoo,
    fitted_gaussian,
    load_checkpoints,
    mean_of,
    novelty,
    sample_count,
    training_checkpoints,
)
from training.zoo_eval_config import METHODS, ZooEvalConfig

pytestmark = pytest.mark.usefixtures("one_thread")

ARCH = "vgg-2"
TINY_ZOO = {"archs": (ARCH,), "models_per_arch": 3, "steps": 2, "save_at": (1, 2),
            "lrs": (0.02, 0.05), "weight_decays": (5e-4,), "batch_sizes": (32,),
            "train_samples": 128, "test_samples": 64, "device": "cpu"}
TINY_EVAL = {"samples": 2, "ks": (0, 2), "diffusion_steps": 2, "train_samples": 128,
             "test_samples": 64, "batch_size": 32, "device": "cpu"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, shared_data) -> dict[str, str]:
    """The zoo, a briefly fitted diffusion model, and the evaluation options (no out)."""
    root = tmp_path_factory.mktemp("zoo_eval")
    data = str(shared_data / "cifar10-jpg.zip")
    build_zoo(ZooConfig(**TINY_ZOO, data=data, out=str(root / "zoo")))
    # enough steps for the stats head to learn the tensors' scales
    generator = train(TrainConfig(generator="diffusion", zoo=str(root / "zoo"), zoo_step=2,
                                  out=str(root / "diffusion"), steps=20, lr=1e-2, warmup_steps=1,
                                  batch_size=3, hidden=32, layers=1, heads=2, graph_layers=1,
                                  checkpoint_every=20))
    return {**TINY_EVAL, "data": data, "zoo": str(root / "zoo"),
            "generator": str(generator)}


def config(setup: dict, out: Path, **options) -> ZooEvalConfig:
    return ZooEvalConfig(**{**setup, "out": str(out), **options})


@pytest.fixture(scope="module")
def run(setup, tmp_path_factory) -> tuple[ZooEvalConfig, list[dict]]:
    cfg = config(setup, tmp_path_factory.mktemp("zoo_eval_out") / "eval")
    return cfg, evaluate_zoo(cfg)


def by_method(rows: list[dict]) -> dict[str, list[dict]]:
    return {m: [r for r in rows if r["method"] == m] for m in METHODS}


def test_rows_and_reports(run):
    cfg, rows = run
    # 3 checkpoints: checkpoint makes min(2, 3) rows, mean-16 averages all 3 once
    assert [(r["method"], r["sample"]) for r in rows] == [
        (m, i) for m in METHODS for i in range(1 if m == "mean-16" else 2)]
    for row in rows:
        assert row["arch"] == ARCH and row["zoo_step"] == 2 and set(row["at"]) == {"0", "2"}
        for point in row["at"].values():
            assert 0 <= point["accuracy"] <= 1 and math.isfinite(point["accuracy"])
        assert row["sample_seconds"] > 0
        assert 0 <= row["overlap"] <= 1 and row["distance"] > 0
        assert row["nearest"].startswith(f"{ARCH}_run") and row["overlap_run"]
    out = Path(cfg.out)
    assert len((out / "results.jsonl").read_text().splitlines()) == len(rows)
    summary = json.loads((out / "results.json").read_text())
    assert [s["method"] for s in summary] == list(METHODS)
    noise = next(s for s in summary if s["method"] == "noise-0.06")
    accs = [r["at"]["2"]["accuracy"] for r in by_method(rows)["noise-0.06"]]
    assert noise["models"] == 2 and noise["accuracy"]["2"]["mean"] == pytest.approx(sum(accs) / 2)
    table = (out / "table.md").read_text()
    assert "| vgg-2 | mean-16 (all 3) | 1 |" in table
    assert "checkpoints of " + cfg.zoo + " at step 2 (vgg-2)" in table
    assert all(f"| {m} " in table for m in METHODS)
    assert (out / "novelty.png").stat().st_size > 1000 and not list(out.glob("*.tmp"))


def test_checkpoint_rows_are_the_checkpoints(run, setup):
    cfg, rows = run
    entries = training_checkpoints(cfg)[ARCH]
    assert [e.record["step"] for e in entries] == [2, 2, 2]  # step None: the last saved
    for i, row in enumerate(by_method(rows)["checkpoint"]):
        record = entries[i].record
        assert row["source"] == record["run_id"]
        # novelty against the other checkpoints only: never itself
        assert row["nearest"] != record["run_id"] and row["overlap_run"] != record["run_id"]
        assert row["distance"] > 0.01
        # buffers and parameters loaded as saved: the zoo's own test accuracy, same subset
        assert row["at"]["0"]["accuracy"] == pytest.approx(record["metrics"]["accuracy"])


def test_noise_and_generators(run):
    _, rows = run
    methods = by_method(rows)
    small, large = ([r["distance"] for r in methods[m]] for m in ("noise-0.06", "noise-0.12"))
    assert sum(large) / 2 > sum(small) / 2 > 0
    assert [r["source"] for r in methods["noise-0.12"]] == [r["source"] for r in
                                                             methods["checkpoint"]]
    for row in methods["diffusion"]:
        assert row["sample_seconds_one"] > 0 and row["generator"].startswith("generator@")
    assert methods["ghn"][0]["generator"].startswith("ghn-cifar10@")
    # default inits are far from every trained checkpoint
    assert min(r["distance"] for r in methods["default"]) > max(small)


def test_novelty_of_a_checkpoint(setup, tmp_path):
    cfg = config(setup, tmp_path / "unused")
    entries = training_checkpoints(cfg)[ARCH]
    ckpts = load_checkpoints(ARCH, entries, EvalData(cfg.recipe(), torch.device("cpu")),
                             torch.device("cpu"), torch.autocast("cpu", enabled=False))
    assert ckpts.flat.shape == (3, sum(p.numel() for p in build_arch(ARCH).parameters()))
    assert ckpts.predictions.shape == (3, 64)
    itself = novelty(ckpts.flat[1], ckpts.predictions[1], ckpts)
    assert itself == {"distance": 0.0, "nearest": ckpts.run_ids[1], "overlap": 1.0,
                      "overlap_run": ckpts.run_ids[1]}
    others = novelty(ckpts.flat[1], ckpts.predictions[1], ckpts, exclude=1)
    assert others["distance"] > 0 and others["nearest"] != ckpts.run_ids[1]
    one = Checkpoints(ARCH, 2, ckpts.run_ids[:1], ckpts.states[:1], ckpts.param_names,
                      ckpts.flat[:1], ckpts.predictions[:1])
    assert novelty(ckpts.flat[0], ckpts.predictions[0], one, exclude=0)["distance"] is None
    # the step option picks the checkpoints of that step
    assert {e.record["step"] for e in training_checkpoints(config(setup, tmp_path, step=1))[ARCH]} \
        == {1}


def fake_checkpoints(n: int) -> Checkpoints:
    """``n`` checkpoints of one 3-element parameter ``w`` (= j, j, j*j) and a step counter."""
    states = [{"w": torch.tensor([j, j, j * j], dtype=torch.float32),
               "count": torch.tensor(j)} for j in range(n)]
    return Checkpoints("fake", 0, [f"run{j}" for j in range(n)], states, ["w"],
                       torch.stack([s["w"] for s in states]), torch.zeros(n, 4))


def test_mean_and_gaussian_baselines():
    few = fake_checkpoints(3)
    state, info = mean_of(few, seed=0)
    assert info == {"averaged": 3} and torch.allclose(state["w"], torch.tensor([1.0, 1.0, 5 / 3]))
    assert state["count"] == 0  # integer buffers come from the first checkpoint
    assert sample_count("mean-16", 3, 8) == 1 and sample_count("mean-16", 17, 8) == 8
    assert sample_count("checkpoint", 3, 8) == 3 and sample_count("gaussian", 3, 8) == 8
    many = fake_checkpoints(20)
    means = [mean_of(many, seed)[0]["w"] for seed in range(4)]
    assert all(mean_of(many, s)[1] == {"averaged": 16} for s in range(2))
    assert len({tuple(m.tolist()) for m in means}) > 1  # each seed its own 16
    assert torch.equal(average(many.states)["w"], many.flat.mean(0))
    draws = torch.stack([fitted_gaussian(many, seed)["w"] for seed in range(1000)])
    mean, std = many.flat.mean(0), many.flat.std(0, correction=0)
    assert torch.allclose(draws.mean(0), mean, rtol=0.05)
    assert torch.allclose(draws.std(0), std, rtol=0.1)


def test_resume(run, tmp_path):
    cfg, rows = run
    out = Path(shutil.copytree(cfg.out, tmp_path / "eval"))
    lines = (out / "results.jsonl").read_text()
    with open(out / "results.jsonl", "a") as f:
        f.write('{"arch": "vgg-2", "meth')  # a row cut short by a crash
    again = evaluate_zoo(ZooEvalConfig(**{**cfg.to_dict(), "out": str(out)}))
    assert again == rows and (out / "results.jsonl").read_text() == lines
    with pytest.raises(ValueError, match="other seed, diffusion_steps"):
        evaluate_zoo(ZooEvalConfig(**{**cfg.to_dict(), "out": str(out), "seed": 1,
                                      "diffusion_steps": 3}))
    config = json.loads((out / "config.json").read_text())
    assert config["ghn_models"] == "one prediction"
    (out / "config.json").write_text(json.dumps({**config, "ghn_models": None}))  # older rows
    with pytest.raises(ValueError, match="other ghn_models"):
        evaluate_zoo(ZooEvalConfig(**{**cfg.to_dict(), "out": str(out)}))
    assert config["generator_id"] == folder_id(cfg.generator)  # the weights' hash, and
    retrained = {**config, "generator_id": "diffusion@0123456789ab"}  # rows of other weights:
    (out / "config.json").write_text(json.dumps(retrained))
    with pytest.raises(ValueError, match="other generator_id"):
        evaluate_zoo(ZooEvalConfig(**{**cfg.to_dict(), "out": str(out)}))


def test_bad_inputs(setup, tmp_path):
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['p-diff'\]: methods are "
                                         "diffusion, checkpoint"):
        config(setup, tmp_path, methods="diffusion,p-diff")
    with pytest.raises(ValueError, match="generator is required"):
        config(setup, tmp_path, generator=None)
    assert config(setup, tmp_path, generator=None, methods="default").generator is None
    with pytest.raises(ValueError, match="zoo is required"):
        config(setup, tmp_path, zoo="")
    with pytest.raises(ValueError, match="unknown architecture 'resnet18'"):
        config(setup, tmp_path, archs="resnet18")
    with pytest.raises(FileNotFoundError, match="generator .*missing is not a folder"):
        evaluate_zoo(config(setup, tmp_path, generator=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="no checkpoints of convnext-0; it has vgg-2"):
        evaluate_zoo(config(setup, tmp_path, archs="vgg-2,convnext-0"))
    with pytest.raises(ValueError, match="no checkpoints of vgg-2 at step 3; its steps are 1, 2"):
        evaluate_zoo(config(setup, tmp_path, step=3))
    with pytest.raises(FileNotFoundError, match="not a model zoo"):
        evaluate_zoo(config(setup, tmp_path, zoo=str(tmp_path)))
    assert not list(tmp_path.iterdir())  # nothing written before the inputs are checked


def test_cli(run, capsys, tmp_path):
    cfg, rows = run
    out = Path(shutil.copytree(cfg.out, tmp_path / "eval"))
    overrides = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                 for k, v in {**cfg.to_dict(), "out": str(out)}.items() if v is not None]
    assert load_config(None, overrides, ZooEvalConfig).to_dict() == {**cfg.to_dict(),
                                                                    "out": str(out)}
    parser = argparse.ArgumentParser()
    zoo_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["zoo", "eval", *overrides])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("CIFAR-10 test accuracy (%)")
    assert f"results in {out}/: results.jsonl" in printed and "| vgg-2 | diffusion | 2 |" in printed
    assert [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()] == rows


def test_a_zoo_over_tasks_is_refused_until_task_evaluation_exists(tiny_task_zoo, tmp_path):
    cfg = ZooEvalConfig(zoo=tiny_task_zoo[0].out, out=str(tmp_path / "eval"),
                        methods=("checkpoint",), samples=1, ks=(0,), device="cpu")
    with pytest.raises(ValueError, match="trained on task cifar10-.*zoos over tasks"):
        evaluate_zoo(cfg)
