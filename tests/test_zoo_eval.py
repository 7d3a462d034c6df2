"""Zoo evaluation: every method's rows, novelty, the baselines, resume, bad inputs and the CLI.

One tiny zoo on the real shared CIFAR-10 data (vgg-2, 3 runs of 2 steps on 128 images, saved
at steps 1 and 2) and a tiny weight-diffusion model trained for a few steps on its
last checkpoints; the evaluation makes 2 models per method and trains each for 2 steps.
The zoo over tasks is conftest's ``tiny_task_zoo`` (three-way tasks), with a tiny
task-conditioned diffusion model, evaluated the same way on two held-out tasks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
import torch

from hyperinit.commands import zoo as zoo_command
from hyperinit.errors import CheckpointError
from hyperinit.generator import folder_id
from training.config import TrainConfig, load_config
from training.recipe import EvalData
from training.run import train
from training.tasks import Task, held_out_tasks
from training.zoo import ZooConfig, build_arch, build_zoo, head_dims, load_zoo, map_checkpoint
from training.zoo_eval import (
    Checkpoints,
    average,
    coverage,
    evaluate_zoo,
    fitted_gaussian,
    fresh,
    load_checkpoints,
    mean_of,
    nearest_task,
    novelty,
    predictions,
    sample_count,
    to_module,
    training_checkpoints,
    transfer,
)
from training.zoo_eval_config import (
    HELD_OUT_ARCH_METHODS,
    METHODS,
    TASK_METHODS,
    ZooEvalConfig,
)

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
        assert "task" not in row  # a zoo without tasks: rows as they always were
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
    for plot in ("novelty.png", "steps.png"):
        assert (out / plot).stat().st_size > 1000
    assert not list(out.glob("*.tmp"))


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
    # the low-rank Gaussian: half the checkpoints' covariance, along their deviations only
    low = torch.stack([fitted_gaussian(many, seed, lowrank=0.5)["w"] for seed in range(2000)])
    assert sample_count("lowrank-gaussian-0.5", 20, 8) == 8
    assert torch.allclose(low.mean(0), mean, rtol=0.05)
    covariance = (many.flat - mean).T @ (many.flat - mean) / len(many)
    assert torch.allclose(low.T.cov(correction=0), covariance / 4, rtol=0.1)
    assert torch.allclose(low[:, 0], low[:, 1])  # w[0] = w[1] in every checkpoint: so here
    assert not torch.allclose(draws[:, 0], draws[:, 1])  # the diagonal one breaks it


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


def test_a_new_generator_is_measured_beside_the_baselines_already_there(run, tmp_path):
    cfg, rows = run
    out = Path(shutil.copytree(cfg.out, tmp_path / "eval"))
    baselines = [line for line in (out / "results.jsonl").read_text().splitlines()
                 if json.loads(line)["method"] != "diffusion"]
    (out / "results.jsonl").write_text("".join(line + "\n" for line in baselines))
    config = json.loads((out / "config.json").read_text())  # rows of no generator's weights
    (out / "config.json").write_text(json.dumps({**config, "generator_id": "other@0123",
                                                 "diffusion_steps": 3}))
    again = evaluate_zoo(ZooEvalConfig(**{**cfg.to_dict(), "out": str(out)}))
    def untimed(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in row.items() if "seconds" not in k} for row in rows]

    assert untimed(again) == untimed(rows)  # diffusion rows made anew (same weights)
    assert (out / "results.jsonl").read_text().splitlines()[:len(baselines)] == baselines
    assert json.loads((out / "config.json").read_text())["generator_id"] == \
        config["generator_id"]
    with pytest.raises(ValueError, match="other ghn"):  # ghn rows are there: their GHN stays
        evaluate_zoo(ZooEvalConfig(**{**cfg.to_dict(), "out": str(out),
                                      "ghn": str(tmp_path / "other-ghn")}))


def test_a_shipped_generator_is_evaluated_by_name(setup, tmp_path):
    rows = evaluate_zoo(config(setup, tmp_path, generator="diffusion-vgg-cifar10",
                               methods="diffusion", samples=1))
    assert [row["generator"].split("@")[0] for row in rows] == ["diffusion-vgg-cifar10"]
    assert json.loads((tmp_path / "config.json").read_text())["generator_id"] == \
        rows[0]["generator"]


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
    with pytest.raises(CheckpointError, match="unknown generator .*missing'"):
        evaluate_zoo(config(setup, tmp_path, generator=str(tmp_path / "missing")))
    with pytest.raises(CheckpointError, match="ghn-cifar10 is a .* generator: sampling takes"):
        evaluate_zoo(config(setup, tmp_path, generator="ghn-cifar10"))
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


# ----- zoos over tasks ----------------------------------------------------------------------
TASK_ARCH = "bnresnet-1"
TASK_EVAL = {**TINY_EVAL, "archs": (TASK_ARCH,), "tasks": 2, "train_samples": 256,
             "test_samples": 128}


@pytest.fixture(scope="module")
def task_setup(tiny_task_zoo, shared_data, tmp_path_factory) -> dict:
    """The tiny zoo over tasks, a task-conditioned diffusion model trained briefly on it,
    and the evaluation options (no out)."""
    zoo = tiny_task_zoo[0].out
    generator = train(TrainConfig(
        generator="diffusion", zoo=zoo, out=str(tmp_path_factory.mktemp("task_diffusion")),
        steps=4, batch_size=4, hidden=16, layers=1, heads=2, graph_layers=1, chunk=16,
        window=64, checkpoint_every=4, device="cpu"))
    return {**TASK_EVAL, "data": str(shared_data / "cifar10-jpg.zip"), "zoo": zoo,
            "generator": str(generator)}


@pytest.fixture(scope="module")
def task_run(task_setup, tmp_path_factory) -> tuple[ZooEvalConfig, list[dict]]:
    cfg = config(task_setup, tmp_path_factory.mktemp("task_eval") / "eval")
    return cfg, evaluate_zoo(cfg)


def zoo_tasks(zoo: str) -> dict[str, Task]:
    """The task of each run of the zoo's TASK_ARCH, from its records."""
    return {e.record["run_id"]: e.task for e in load_zoo(zoo) if e.record["arch"] == TASK_ARCH}


def test_a_zoo_over_tasks_is_evaluated_on_held_out_tasks_with_every_method(task_run):
    cfg, rows = task_run
    held = held_out_tasks(3)[:2]
    # two checkpoints: mean-16 averages both once per task; every other method makes 2
    assert [(r["task"], r["method"], r["sample"]) for r in rows] == [
        (t.name, m, i) for t in held for m in TASK_METHODS
        for i in range(1 if m == "mean-16" else 2)]
    trained_on = set(zoo_tasks(cfg.zoo).values())
    assert not trained_on & set(held)  # held-out tasks only
    for row in rows:
        assert row["arch"] == TASK_ARCH and row["zoo_step"] == 4 and set(row["at"]) == {"0", "2"}
        for point in row["at"].values():
            assert 0 <= point["accuracy"] <= 1 and math.isfinite(point["accuracy"])
            assert math.isfinite(point["loss"])
        assert 0 <= row["overlap"] <= 1 and row["distance"] > 0
        assert row["nearest"].startswith(f"{TASK_ARCH}_run")
    methods = {m: [r for r in rows if r["method"] == m] for m in TASK_METHODS}
    assert methods["diffusion"][0]["generator"].startswith("generator@")
    assert methods["ghn"][0]["generator"].startswith("ghn-cifar10@")
    # checkpoint + noise: the nearest-task model moved further the larger the noise
    for small, large in zip(methods["nearest-noise-0.06"], methods["nearest-noise-0.12"],
                            strict=True):
        assert small["source"] == large["source"] and large["distance"] > small["distance"]


def test_the_nearest_task_checkpoint_shares_the_most_classes(task_run):
    cfg, rows = task_run
    tasks = zoo_tasks(cfg.zoo)
    for row in (r for r in rows if r["method"].startswith("nearest")):
        held = set(Task.parse(row["task"]).classes)
        shared = {run: len(held & set(t.classes)) for run, t in tasks.items()}
        best = max(shared.values())
        assert row["shared"] == best == shared[row["source"]]
        assert row["source"] == min(run for run, n in shared.items() if n == best)  # ties
        assert row["source_task"] == tasks[row["source"]].name


def test_nearest_task_and_its_mapped_head(task_setup, tmp_path):
    cfg = config(task_setup, tmp_path / "unused").for_zoo(over_tasks=True)
    device = torch.device("cpu")
    ckpts = load_checkpoints(TASK_ARCH, training_checkpoints(cfg)[TASK_ARCH],
                             EvalData(cfg.recipe(), device), device,
                             torch.autocast("cpu", enabled=False))
    assert ckpts.num_classes == 3 and ckpts.predictions.shape[1] == 128
    crafted = dataclasses.replace(ckpts, tasks=[Task((0, 1, 2)), Task((0, 1, 3))])
    assert nearest_task(crafted, Task((1, 3, 5))) == 1  # 2 shared against 1
    assert nearest_task(crafted, Task((0, 1, 5))) == 0  # a tie: the first run
    assert nearest_task(crafted, Task((4, 5, 6))) == 0  # none shared: the first run
    head = head_dims(TASK_ARCH, 3)
    assert len(head) == 2 and all(dim == 0 for dim in head.values())  # the Linear's rows
    state, info = transfer([crafted], TASK_ARCH, Task((1, 3, 5)), seed=7)
    assert info == {"source": crafted.run_ids[1], "source_task": "cifar10-0-1-3", "shared": 2}
    source, new = crafted.states[1], fresh(TASK_ARCH, 7, num_classes=3)
    for name in head:  # classes 1 and 3 are rows 1 and 2 of the source; class 5 is fresh
        assert torch.equal(state[name][0], source[name][1])
        assert torch.equal(state[name][1], source[name][2])
        assert torch.equal(state[name][2], new[name][2])
    assert all(torch.equal(state[k], v) for k, v in source.items() if k not in head)



def test_mean_and_gaussian_map_heads_by_class(task_setup, tmp_path):
    """For a held-out task, each head row is made from the rows of its class in the
    checkpoints whose task has it; a class none has keeps the fresh row."""
    cfg = config(task_setup, tmp_path / "unused").for_zoo(over_tasks=True)
    device = torch.device("cpu")
    ckpts = load_checkpoints(TASK_ARCH, training_checkpoints(cfg)[TASK_ARCH],
                             EvalData(cfg.recipe(), device), device,
                             torch.autocast("cpu", enabled=False))
    crafted = dataclasses.replace(ckpts, tasks=[Task((0, 1, 2)), Task((0, 1, 3))])
    (a, b), new = crafted.states, fresh(TASK_ARCH, 7, num_classes=3)
    mean, info = mean_of(crafted, 7, Task((1, 3, 5)))
    assert info == {"averaged": 2}
    head = head_dims(TASK_ARCH, 3)
    for name in head:  # class 1: both rows 1; class 3: b's row 2 alone; class 5: fresh
        assert torch.allclose(mean[name][0], (a[name][1] + b[name][1]) / 2)
        assert torch.equal(mean[name][1], b[name][2])
        assert torch.equal(mean[name][2], new[name][2])
    body = [k for k, v in a.items() if k not in head and v.is_floating_point()]
    assert all(torch.allclose(mean[k], (a[k] + b[k]) / 2) for k in body)
    gaussian = fitted_gaussian(crafted, 7, Task((1, 3, 5)))
    assert all(not v.isnan().any() for v in gaussian.values() if v.is_floating_point())
    for name in head:  # one checkpoint has class 3: no spread, its row
        assert torch.equal(gaussian[name][1], b[name][2])
        assert torch.equal(gaussian[name][2], new[name][2])
        assert not torch.equal(gaussian[name][0], mean[name][0])
    low = fitted_gaussian(crafted, 7, Task((1, 3, 5)), lowrank=0.5)
    for name in head:
        assert torch.equal(low[name][1], b[name][2]) and torch.equal(low[name][2], new[name][2])
        assert not torch.equal(low[name][0], mean[name][0])
    # without a task: position by position, as before
    assert torch.equal(mean_of(crafted, 7)[0][body[0]], mean[body[0]])


def test_a_copy_of_a_checkpoint_without_its_statistics_overlaps_it_fully(task_setup, tmp_path):
    """What a generator that memorized a checkpoint makes (its parameters, no BatchNorm
    statistics) predicts as the checkpoint does: overlap compares calibrated models."""
    cfg = config(task_setup, tmp_path / "unused").for_zoo(over_tasks=True)
    device, autocast = torch.device("cpu"), torch.autocast("cpu", enabled=False)
    eval_data = EvalData(cfg.recipe(), device).for_task(held_out_tasks(3)[0])
    ckpts = load_checkpoints(TASK_ARCH, training_checkpoints(cfg)[TASK_ARCH], eval_data,
                             device, autocast)
    params = {k: ckpts.states[1][k] for k in ckpts.param_names}
    copy = predictions(to_module(TASK_ARCH, params, 3), eval_data, autocast)
    assert novelty(ckpts.flatten(params), copy, ckpts)["overlap"] == 1.0
    stale = to_module(TASK_ARCH, params, 3).eval()  # the fresh statistics, uncalibrated
    with torch.no_grad():
        raw = torch.cat([stale(x).argmax(-1) for x, _ in eval_data.test_batches()])
    assert not torch.equal(raw, ckpts.predictions[1])

def test_task_reports(task_run):
    cfg, rows = task_run
    out = Path(cfg.out)
    table = (out / "table.md").read_text()
    assert table.startswith("Held-out tasks of a zoo over tasks (2: " +
                            ", ".join(t.name for t in held_out_tasks(3)[:2]))
    for method in TASK_METHODS:
        assert f"| {TASK_ARCH} | {method}" in table
        if method != "diffusion":
            assert f"| **diffusion beats {method} by > std** | 2 tasks |" in table
    # the lead marks and the means over tasks, recomputed from the rows
    held = [t.name for t in held_out_tasks(3)[:2]]

    def accs(method: str, task: str, k: str) -> list[float]:
        return [100 * r["at"][k]["accuracy"] for r in rows
                if r["method"] == method and r["task"] == task]

    def leads(task: str, k: str) -> bool:
        mine, theirs = accs("diffusion", task, k), accs("default", task, k)
        return (statistics.fmean(mine) - statistics.fmean(theirs)
                > max(statistics.stdev(mine), statistics.stdev(theirs)))

    def cells(start: str) -> list[str]:
        line = next(x for x in table.splitlines() if x.startswith(f"| {TASK_ARCH} | {start} |"))
        return [c.strip() for c in line.strip("|").split("|")]

    marks = [f"{sum(leads(t, k) for t in held)}/2" for k in ("0", "2")]
    assert cells("**diffusion beats default by > std**")[2:5] == ["2 tasks", *marks]
    per_seed = [statistics.fmean(accs("default", t, "2")[i] for t in held) for i in range(2)]
    assert cells("default")[2:5:2] == [
        "4", f"{statistics.fmean(per_seed):.1f} ± {statistics.stdev(per_seed):.1f}"]
    nearest = next(r for r in rows if r["method"] == "nearest-task")
    assert (f"| {TASK_ARCH} | {nearest['task']} | {nearest['source_task']} | "
            f"{nearest['shared']} | {nearest['source']} |") in table
    summary = json.loads((out / "results.json").read_text())
    assert len(summary) == 2 * len(TASK_METHODS) and {s["task"] for s in summary} == {
        t.name for t in held_out_tasks(3)[:2]}
    for plot in ("novelty.png", "steps.png"):
        assert (out / plot).stat().st_size > 1000


def test_guided_samples_are_rows_of_their_own(task_run, tmp_path):
    cfg, rows = task_run
    out = Path(shutil.copytree(cfg.out, tmp_path / "eval"))
    config = json.loads((out / "config.json").read_text())
    del config["diffusion_guidance"]  # rows made before the option: unguided
    (out / "config.json").write_text(json.dumps(config))
    assert evaluate_zoo(ZooEvalConfig(**{**cfg.to_dict(), "out": str(out)})) == rows
    with pytest.raises(ValueError, match="other diffusion_guidance"):
        evaluate_zoo(ZooEvalConfig(**{**cfg.to_dict(), "out": str(out),
                                      "diffusion_guidance": 0.0}))
    shipped = {**cfg.to_dict(), "generator": "diffusion-resnet-cifar10-tasks",  # one that
               "methods": ("diffusion",), "samples": 1, "tasks": 1}  # has learned tasks
    plain = evaluate_zoo(ZooEvalConfig(**{**shipped, "out": str(tmp_path / "plain")}))
    free = evaluate_zoo(ZooEvalConfig(**{**shipped, "out": str(tmp_path / "free"),
                                         "diffusion_guidance": 0.0}))
    assert [r["task"] for r in free] == [r["task"] for r in plain]
    assert all(f["distance"] != g["distance"] for f, g in zip(free, plain, strict=True))
    assert "(2 DDIM steps, guidance 0)" in (tmp_path / "free" / "table.md").read_text()
    with pytest.raises(ValueError, match="diffusion_guidance must be at least 0"):
        ZooEvalConfig(**{**cfg.to_dict(), "diffusion_guidance": -1.0})


def test_a_task_evaluation_resumes_through_the_cli(task_run, capsys, tmp_path):
    cfg, rows = task_run
    out = Path(shutil.copytree(cfg.out, tmp_path / "eval"))
    lines = (out / "results.jsonl").read_text()
    overrides = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                 for k, v in {**cfg.to_dict(), "out": str(out)}.items() if v is not None]
    parser = argparse.ArgumentParser()
    zoo_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["zoo", "eval", *overrides])
    assert args.func(args) == 0
    assert capsys.readouterr().out.startswith("Held-out tasks of a zoo over tasks")
    assert (out / "results.jsonl").read_text() == lines  # nothing ran again


# ----- held-out architectures -----------------------------------------------------------
HELD_ARCH = "bnresnet-7"  # not in the tiny zoo over tasks: narrower, other depths


@pytest.fixture(scope="module")
def held_run(task_run, tmp_path_factory) -> tuple[ZooEvalConfig, list[dict]]:
    """The task evaluation resumed with a held-out arch: only its jobs run."""
    cfg, _ = task_run
    out = shutil.copytree(cfg.out, tmp_path_factory.mktemp("held_eval") / "eval")
    held = dataclasses.replace(cfg, out=str(out), held_out_archs=(HELD_ARCH,))
    return held, evaluate_zoo(held)


def test_held_out_archs_get_the_methods_that_make_their_shapes(task_run, held_run):
    (_, before), (cfg, rows) = task_run, held_run
    held = held_out_tasks(3)[:2]
    assert [(r["arch"], r["task"], r["method"], r["sample"]) for r in rows] == [
        (arch, t.name, m, i) for t in held
        for arch, methods in ((TASK_ARCH, TASK_METHODS), (HELD_ARCH, HELD_OUT_ARCH_METHODS))
        for m in methods for i in range(1 if m == "mean-16" else 2)]
    zoo_rows = [r for r in rows if r["arch"] == TASK_ARCH]
    assert sorted(zoo_rows, key=json.dumps) == sorted(before, key=json.dumps)  # resumed
    for row in (r for r in rows if r["arch"] == HELD_ARCH):
        assert row["held_out_arch"] is True and row["zoo_step"] is None
        assert row["distance"] is None and 0 <= row["overlap"] <= 1
        assert row["overlap_run"].startswith(f"{TASK_ARCH}_run")
        assert all(math.isfinite(p["loss"]) for p in row["at"].values())
    assert "held_out_arch" not in zoo_rows[0]
    # the held-out arch's nearest-task model is the zoo arch's, from the same source
    for mine in (r for r in rows if r["arch"] == HELD_ARCH and r["method"] == "nearest-task"):
        theirs = next(r for r in zoo_rows if (r["task"], r["method"], r["sample"]) ==
                      (mine["task"], "nearest-task", mine["sample"]))
        assert (mine["source"], mine["shared"]) == (theirs["source"], theirs["shared"])
    table = (Path(cfg.out) / "table.md").read_text()
    label = f"{HELD_ARCH} (held out)"
    for method in HELD_OUT_ARCH_METHODS:
        assert f"| {label} | {method} | 4 |" in table
    assert f"| {label} | mean-16" not in table and f"| {TASK_ARCH} | mean-16" in table
    assert f"| {label} | **diffusion beats nearest-task by > std** | 2 tasks |" in table
    assert "weight selection" in table.split("\n\n")[0]


def test_held_out_only_makes_models_of_the_held_out_archs_alone(held_run, tmp_path):
    cfg, rows = held_run
    out = shutil.copytree(cfg.out, tmp_path / "eval")
    alone = evaluate_zoo(dataclasses.replace(cfg, out=str(out), held_out_only=True))
    assert alone == [r for r in rows if r["arch"] == HELD_ARCH]  # read back, in job order
    table = (out / "table.md").read_text()
    assert f"| {HELD_ARCH} (held out) | diffusion |" in table and f"| {TASK_ARCH} |" not in table
    assert f"checkpoints of {cfg.zoo} at each arch's last step, on" in table
    with pytest.raises(ValueError, match="held_out_only evaluates the held_out_archs alone"):
        dataclasses.replace(cfg, held_out_archs=None, held_out_only=True)


def test_weight_selection_maps_a_checkpoint_onto_other_shapes():
    torch.manual_seed(0)
    source = build_arch(TASK_ARCH, 3).state_dict()
    state = map_checkpoint(source, Task((0, 1, 2)), HELD_ARCH, Task((1, 2, 7)), seed=3)
    torch.manual_seed(3)
    new = build_arch(HELD_ARCH, 3).state_dict()
    assert state.keys() == new.keys()
    assert all(state[k].shape == v.shape for k, v in new.items())
    head = head_dims(HELD_ARCH, 3)
    copied = 0
    for name, value in state.items():
        theirs = source.get(name)
        if theirs is None or theirs.dim() != value.dim():
            assert torch.equal(value, new[name])  # nothing to select from: fresh
            continue
        block = tuple(slice(0, min(a, b))
                      for a, b in zip(value.shape, theirs.shape, strict=True))
        if name in head:  # classes 1 and 2 are the source's rows 1 and 2; class 7 is fresh
            for row in (0, 1):
                assert torch.equal(value[row][block[1:]], theirs[row + 1][block[1:]])
            assert torch.equal(value[2], new[name][2])
            continue
        assert torch.equal(value[block], theirs[block])
        rest = torch.ones(value.shape, dtype=torch.bool)
        rest[block] = False
        assert torch.equal(value[rest], new[name][rest])  # beyond the block: fresh
        copied += value[block].numel()
    assert copied > 0
    assert 0 < coverage(TASK_ARCH, HELD_ARCH, 3) < 1 == coverage(HELD_ARCH, HELD_ARCH, 3)


def test_bad_task_inputs(task_setup, setup, tmp_path):
    with pytest.raises(ValueError, match="checkpoint, noise-0.06 are for zoos without tasks; "
                                         "the zoo at .* is over tasks"):
        evaluate_zoo(config(task_setup, tmp_path, methods="checkpoint,noise-0.06"))
    with pytest.raises(ValueError, match="nearest-task are for zoos over tasks"):
        evaluate_zoo(config(setup, tmp_path, methods="nearest-task"))
    with pytest.raises(ValueError, match="was built without tasks: leave tasks out"):
        evaluate_zoo(config(setup, tmp_path, tasks=2))
    seen = next(iter(zoo_tasks(task_setup["zoo"]).values())).name
    with pytest.raises(ValueError, match=f"{seen} is not held out"):
        config(task_setup, tmp_path, tasks=seen)
    five = held_out_tasks(5)[0].name
    with pytest.raises(ValueError, match=f"{five}: the zoo's models have 3-way heads"):
        evaluate_zoo(config(task_setup, tmp_path, tasks=five))
    with pytest.raises(ValueError, match="tasks must be at least 1"):
        config(task_setup, tmp_path, tasks=0)
    with pytest.raises(ValueError, match=r"is unconditional \(task_dim 0\)"):
        evaluate_zoo(config(task_setup, tmp_path / "out", generator=setup["generator"]))
    with pytest.raises(ValueError, match="vgg-2 is not held out: the zoo at .* trained its "
                                         r"graph \(as vgg-2\)"):
        evaluate_zoo(config(task_setup, tmp_path, held_out_archs="vgg-2"))
    with pytest.raises(ValueError, match="held_out_archs is for zoos over tasks"):
        evaluate_zoo(config(setup, tmp_path, held_out_archs=HELD_ARCH))
    with pytest.raises(ValueError, match="unknown architecture 'resnet50'"):
        config(task_setup, tmp_path, held_out_archs="resnet50")
    named = held_out_tasks(3)[1].name
    assert config(task_setup, tmp_path, tasks=named.replace("cifar10-", "")).tasks == (named,)
    assert not list(tmp_path.glob("*.json*"))  # refused before anything was written
