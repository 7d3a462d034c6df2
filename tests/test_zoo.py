"""Model zoos: layout and dataset card, records, resume, stats, the loader's checks, the CLI,
and zoos over tasks.

One tiny zoo on the real shared CIFAR-10 data (2 small sampled CNNs x 2 runs, 4 steps on 256
images, saved at steps 2 and 4) is built once, and one like it over three-way tasks; tests
that damage them work on a copy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_TASK_ZOO, TINY_ZOO, tiny_zoo_config
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import graphs
from hyperinit.commands import zoo as zoo_command
from training.config import load_config
from training.data import load_cifar10, normalize
from training.recipe import EvalData, RecipeConfig
from training.tasks import Task, held_out_tasks, training_tasks
from training.zoo import (
    ZooConfig,
    arch_hash,
    build_arch,
    build_zoo,
    format_stats,
    head_dims,
    load_zoo,
    parent_seed,
    plan_runs,
    zoo_stats,
)

ARCHS = TINY_ZOO["archs"]


@pytest.fixture
def zoo(tiny_zoo) -> tuple[ZooConfig, int]:
    return tiny_zoo


@pytest.fixture
def zoo_copy(zoo, tmp_path) -> Path:
    return Path(shutil.copytree(zoo[0].out, tmp_path / "zoo"))


def records(folder: str | Path) -> list[dict]:
    return [json.loads(line) for line in (Path(folder) / "records.jsonl").read_text().splitlines()]


def test_layout_and_card(zoo):
    cfg, written = zoo
    out = Path(cfg.out)
    assert written == 8
    weights = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.safetensors"))
    assert weights == sorted(r["file"] for r in records(out))
    assert len(weights) == 8 and all((out / w).with_suffix(".json").is_file() for w in weights)
    assert not list(out.rglob("*.tmp"))
    _, front, body = (out / "README.md").read_text().split("---\n", 2)
    card = yaml.safe_load(front)
    assert card["license"] == "apache-2.0" and card["tags"] == ["hyperinit", "model-zoo"]
    assert card["configs"] == [{"config_name": "default",
                                "data_files": [{"split": "train", "path": "records.jsonl"}]}]
    assert "8 checkpoints of 4 runs over 2 architectures" in body


def test_records(zoo):
    cfg, _ = zoo
    out = Path(cfg.out)
    rows = records(out)
    assert {(r["arch"], r["step"]) for r in rows} == {(a, k) for a in ARCHS for k in (2, 4)}
    for r in rows:
        assert r == json.loads((out / r["file"]).with_suffix(".json").read_text())
        assert r["file"] == f"models/{r['arch_hash']}/{r['run_id']}/step-{r['step']}.safetensors"
        assert r["arch_hash"] == arch_hash(r["arch"])
        assert graphs.build(graphs.resolve(r["spec"])).arch_hash == r["arch_hash"]
        assert r["dataset"] == {"name": "cifar10", "source": "cifar10-jpg.zip",
                                "train_samples": 256, "test_samples": 128}
        hp = r["hyperparameters"]
        assert hp["lr"] in cfg.lrs and hp["weight_decay"] in cfg.weight_decays
        assert hp["batch_size"] == 32 and hp["steps"] == 4
        assert r["epoch"] == r["step"] * 32 / 256
        assert 0 <= r["metrics"]["accuracy"] <= 1 and r["metrics"]["loss"] > 0
        assert r["params"] == sum(p.numel() for p in build_arch(r["arch"]).parameters())
        with safe_open(out / r["file"], "pt") as f:
            meta = f.metadata()
        assert meta["format"] == "pt" and meta["hyperinit.arch_hash"] == r["arch_hash"]
        assert json.loads(meta["hyperinit.arch"]) == r["spec"]
        assert meta["hyperinit.seed"] == str(r["seed"])
    seeds = {r["run_id"]: r["seed"] for r in rows}
    assert len(seeds) == 4 and len(set(seeds.values())) == 4


def test_resume_skips_done_and_redoes_missing(zoo, zoo_copy):
    cfg, _ = zoo
    cfg = tiny_zoo_config(Path(cfg.data).parent, zoo_copy)
    mtimes = {p: p.stat().st_mtime_ns for p in zoo_copy.rglob("step-*")}
    start = time.perf_counter()
    assert build_zoo(cfg) == 0
    assert time.perf_counter() - start < 5
    assert mtimes == {p: p.stat().st_mtime_ns for p in zoo_copy.rglob("step-*")}
    # A build stopped after one run's step 2: only its step 4 is trained and written again,
    # and the same seed gives the same weights.
    run = next(zoo_copy.glob("models/*/vgg-2_run001"))
    before = load_file(run / "step-4.safetensors")
    (run / "step-4.json").unlink()
    (run / "step-4.safetensors").unlink()
    assert build_zoo(cfg) == 1
    after = load_file(run / "step-4.safetensors")
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    changed = [p for p, t in mtimes.items() if p.stat().st_mtime_ns != t]
    assert sorted(p.name for p in changed) == ["step-4.json", "step-4.safetensors"]
    assert len(records(zoo_copy)) == 8


def test_resume_refuses_other_options(zoo, zoo_copy):
    cfg = tiny_zoo_config(Path(zoo[0].data).parent, zoo_copy, lrs=(0.3,))
    with pytest.raises(ValueError, match="other options"):
        build_zoo(cfg)


def test_stats(zoo):
    cfg, _ = zoo
    rows = records(cfg.out)
    stats = zoo_stats(cfg.out)
    assert stats["checkpoints"] == 8 and stats["runs"] == 4 and stats["per_step"] == {2: 4, 4: 4}
    for r in rows:
        a = stats["archs"][r["arch_hash"]]
        assert a["archs"] == [r["arch"]] and a["runs"] == 2 and a["checkpoints"] == 4
        assert a["params"] == r["params"]
        accs = [s["metrics"]["accuracy"] for s in rows
                if s["arch"] == r["arch"] and s["step"] == r["step"]]
        assert a["accuracy"][r["step"]] == pytest.approx(
            {"mean": sum(accs) / 2, "min": min(accs), "max": max(accs), "count": 2})
    text = format_stats(stats)
    assert "checkpoints per step: 2: 4, 4: 4" in text
    assert len([line for line in text.splitlines() if "vgg-2" in line]) == 2


def test_loader_round_trip(zoo):
    out = Path(zoo[0].out)
    entries = load_zoo(out)
    assert sorted(e.record["file"] for e in entries) == sorted(r["file"] for r in records(out))
    for entry in entries:
        state = entry.state_dict()
        model = build_arch(entry.record["arch"])
        model.load_state_dict(state, strict=True)
        assert all(torch.equal(v, state[k]) for k, v in entry.module().state_dict().items())
    digest = arch_hash("vgg-2")
    assert {e.record["arch"] for e in load_zoo(out, arch_hash=digest)} == {"vgg-2"}


def test_loader_mixed_shapes(zoo_copy):
    path = next(zoo_copy.glob("models/*/vgg-2_run001/step-4.safetensors"))
    state = load_file(path)
    name = next(k for k, v in state.items() if v.dim() == 4)
    state[name] = torch.zeros(3, *state[name].shape[1:])
    save_file(state, path)
    with pytest.raises(ValueError, match=r"mixed shapes.*vgg-2_run000.*vgg-2_run001"):
        load_zoo(zoo_copy)


def test_loader_skips_missing_and_corrupt(zoo_copy):
    runs = sorted(zoo_copy.glob("models/*/*"))
    (runs[0] / "step-2.json").unlink()  # weights without a record
    (runs[1] / "step-4.safetensors").unlink()  # a record without weights
    corrupt = runs[2] / "step-2.safetensors"
    corrupt.write_bytes(corrupt.read_bytes()[:1000])  # truncated
    (runs[3] / "step-4.json").write_text("{not json")
    with pytest.warns(UserWarning, match="skipped 4 file") as caught:
        entries = load_zoo(zoo_copy)
    message = str(caught[0].message)
    assert f"{runs[0]}/step-2.safetensors has no record" in message
    assert f"{runs[1]}/step-4.json has no checkpoint" in message
    assert "step-2 of " + str(runs[2]) in message and "step-4 of " + str(runs[3]) in message
    assert len(entries) == 4
    for entry in entries:
        build_arch(entry.record["arch"]).load_state_dict(entry.state_dict(), strict=True)


def test_config_and_errors(shared_data, tmp_path):
    cfg = load_config(None, ["archs=vgg-2,convnext-0", "save_at=[4,2]", "lrs=0.1"], ZooConfig)
    assert cfg.archs == ("vgg-2", "convnext-0") and cfg.save_at == (2, 4) and cfg.lrs == (0.1,)
    with pytest.raises(ValueError, match="unknown architecture 'resnet18'"):
        ZooConfig(archs=("resnet18",))
    with pytest.raises(ValueError, match="save_at"):
        ZooConfig(steps=4, save_at=(8,))
    with pytest.raises(FileNotFoundError, match="not a model zoo"):
        load_zoo(tmp_path)


def test_cli(zoo, zoo_copy, capsys, tmp_path):
    parser = argparse.ArgumentParser()
    zoo_command.register(parser.add_subparsers(dest="command"))
    overrides = [f"{k}={json.dumps(v)}" for k, v in {**TINY_ZOO, "data": zoo[0].data,
                                                      "out": str(zoo_copy)}.items()]
    args = parser.parse_args(["zoo", "build", *overrides])
    assert args.func(args) == 0
    assert capsys.readouterr().out.startswith(f"0 checkpoints written to {zoo_copy}\n8 ")
    args = parser.parse_args(["zoo", "stats", zoo[0].out])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("8 checkpoints of 4 runs over 2 architectures")
    assert "convnext-0" in out and "vgg-2" in out
    args = parser.parse_args(["zoo", "stats", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="records.jsonl"):
        args.func(args)


# ----- zoos over tasks ------------------------------------------------------------------------
def test_a_task_zoo_trains_each_run_on_its_task_with_a_k_way_head(tiny_task_zoo):
    cfg, written = tiny_task_zoo
    out = Path(cfg.out)
    assert written == 8
    rows = records(out)
    allowed = set(training_tasks(3))
    assert {r["task"] for r in rows} <= {t.name for t in allowed}
    eval_data = EvalData(RecipeConfig(task="image", data=cfg.data, train_samples=256,
                                      test_samples=128, device="cpu"), torch.device("cpu"))
    for r in rows:
        task = Task.parse(r["task"])
        assert r["arch_hash"] == arch_hash(r["arch"], 3) != arch_hash(r["arch"])
        assert r["file"].startswith(f"models/{r['arch_hash']}/")
        assert r["spec"]["kwargs"] == {"name": r["arch"], "num_classes": 3}
        assert graphs.build(graphs.resolve(r["spec"])).arch_hash == r["arch_hash"]
        images = eval_data.for_task(task)
        assert (r["dataset"]["train_samples"], r["dataset"]["test_samples"]) == (
            len(images.train[0]), len(images.test[0]))
        assert 0 < len(images.test[0]) < 128 and set(images.test[1].tolist()) <= {0, 1, 2}
        assert r["params"] == sum(p.numel() for p in build_arch(r["arch"], 3).parameters())
        with safe_open(out / r["file"], "pt") as f:
            assert f.metadata()["hyperinit.task"] == r["task"]
    # the runs' seeds and hyperparameters are those of the same zoo without tasks
    plain = {r.run_id: (r.seed, r.lr) for r in plan_runs(replace(cfg, tasks=None))}
    assert {r["run_id"]: (r["seed"], r["hyperparameters"]["lr"]) for r in rows} == {
        k: v for k, v in plain.items() if k in {r["run_id"] for r in rows}}
    assert "8 checkpoints of 4 runs over 2 architectures on " in format_stats(zoo_stats(out))


def test_task_zoo_entries_rebuild_with_their_task_head(tiny_task_zoo, shared_data):
    entries = load_zoo(tiny_task_zoo[0].out)
    images, _ = load_cifar10(shared_data / "cifar10-jpg.zip", split="test")
    for entry in entries:
        assert entry.task == Task.parse(entry.record["task"])
        model = entry.module().eval()
        assert model(normalize(images[:4])).shape == (4, 3)


def test_a_task_zoo_resumes_and_refuses_other_tasks(tiny_task_zoo, tmp_path):
    cfg = tiny_task_zoo[0]
    folder = Path(shutil.copytree(cfg.out, tmp_path / "zoo"))
    cfg = replace(cfg, out=str(folder))
    assert build_zoo(cfg) == 0
    run = next(folder.glob("models/*/bnresnet-1_run001"))
    before = load_file(run / "step-4.safetensors")
    (run / "step-4.json").unlink()
    assert build_zoo(cfg) == 1
    after = load_file(run / "step-4.safetensors")
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    drawn = json.loads((run / "step-4.json").read_text())["task"]
    other = next(t.name for t in training_tasks(3) if t.name != drawn)
    with pytest.raises(ValueError, match="other options"):
        build_zoo(replace(cfg, tasks=(other,)))


def test_held_out_tasks_are_never_drawn():
    for ways in (2, 5):
        runs = plan_runs(ZooConfig(archs=("vgg-2",), models_per_arch=400, tasks=ways))
        drawn, pool = {r.task for r in runs}, set(training_tasks(ways))
        assert not drawn & set(held_out_tasks(ways))
        assert drawn <= pool and len(drawn) > len(pool) // 2  # spread over the pool
    held = held_out_tasks(5)[0]
    for given in ((held.name,), [f"cifar10-{'-'.join(map(str, held.classes))}", "0,1"],
                  ",".join(held.class_names).replace(",", "-")):
        with pytest.raises(ValueError, match="held out for evaluation"):
            ZooConfig(tasks=given)


def test_task_options():
    assert ZooConfig(tasks="5").tasks == 5 and ZooConfig(tasks=None).task_pool() is None
    cfg = load_config(None, ['tasks=["0,1", "cifar10-9-2"]'], ZooConfig)
    assert cfg.tasks == ("cifar10-0-1", "cifar10-2-9")
    assert cfg.task_pool() == [Task((0, 1)), Task((2, 9))]
    assert ZooConfig(tasks=10).task_pool() == [Task(tuple(range(10)))]
    with pytest.raises(ValueError, match="ways must be 2 to 10"):
        ZooConfig(tasks=11)
    with pytest.raises(ValueError, match="unknown class 'zebra'"):
        ZooConfig(tasks=("zebra-cat",))
    with pytest.raises(ValueError, match="num_classes must be 2 to 10"):
        build_arch("vgg-2", num_classes=1)


@pytest.mark.parametrize("parent_steps", [0, 2])
def test_runs_of_a_parent_start_from_its_weights(shared_data, tmp_path, parent_steps):
    """Every run of an arch starts from its parent (step 0 saves the start): one body for
    all, each head the parent's rows of the run's classes; with parent_steps 0 the parent is
    the module built from its seed, with more it has trained on all ten classes."""
    cfg = tiny_zoo_config(shared_data, tmp_path / "zoo", **{
        **TINY_TASK_ZOO, "archs": ("bnresnet-1",), "models_per_arch": 3, "save_at": (0, 2),
        "parent_steps": parent_steps})
    assert build_zoo(cfg) == 6
    torch.manual_seed(parent_seed(cfg, "bnresnet-1"))
    untrained = build_arch("bnresnet-1").state_dict()
    starts = [e for e in load_zoo(cfg.out) if e.record["step"] == 0]
    heads = head_dims("bnresnet-1", 3)
    tasks = {e.task for e in starts}
    assert len(starts) == 3 and len(tasks) > 1
    bodies = [{k: v for k, v in e.state_dict().items() if k not in heads} for e in starts]
    parent = {}
    for entry, body in zip(starts, bodies, strict=True):
        assert entry.record["hyperparameters"]["parent"] == {
            "seed": parent_seed(cfg, "bnresnet-1"), "steps": parent_steps}
        assert body.keys() == bodies[0].keys()
        assert all(torch.equal(body[k], bodies[0][k]) for k in body)
        for name, dim in heads.items():
            rows = entry.state_dict()[name].unbind(dim)
            for cls, row in zip(entry.task.classes, rows, strict=True):
                assert torch.equal(parent.setdefault((name, cls), row), row)
    trained_moved = any(not torch.equal(bodies[0][k], untrained[k]) for k in bodies[0]
                        if bodies[0][k].is_floating_point())
    assert trained_moved == (parent_steps > 0)
    # the runs then train apart, and a build with another parent refuses the folder
    ends = [e.state_dict() for e in load_zoo(cfg.out) if e.record["step"] == 2]
    assert not torch.equal(ends[0]["0.0.weight"], ends[1]["0.0.weight"])
    with pytest.raises(ValueError, match="other options"):
        build_zoo(replace(cfg, parent_steps=parent_steps + 1))


def test_parent_steps_must_be_none_or_at_least_zero():
    assert ZooConfig(parent_steps=None).parent_steps is None
    with pytest.raises(ValueError, match="parent_steps must be None"):
        ZooConfig(parent_steps=-1)
