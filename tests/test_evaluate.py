"""Init evaluation: rows and reports, determinism, same batches per arm, resume, mimetic init,
a text run, and bad inputs. Tiny runs on the real shared data (a few steps on 256 images)."""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import hyperinit
from hyperinit.commands import eval as eval_command
from training import evaluate as ev
from training import recipe
from training.config import load_config
from training.eval_config import ARMS
from training.evaluate import EvalConfig
from training.results import RESULTS
from training.samplers import held_out

IMAGE_ARCHS = ("vgg-1000001", "convnext-1000000")  # the two smallest sampled CNNs (22k, 16k)
TINY = {"task": "image", "generator": "untrained", "archs": IMAGE_ARCHS, "seeds": (0, 1),
        "ks": (0, 3), "train_samples": 256, "test_samples": 256, "batch_size": 32,
        "device": "cpu"}


def tiny_config(shared_data: Path, out: Path, **options) -> EvalConfig:
    return EvalConfig(**{**TINY, "data": str(shared_data / "cifar10-jpg.zip"), "out": str(out),
                         **options})


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, shared_data):
    """One run of all four arms; records the training batches every call drew, by seed."""
    cfg = tiny_config(shared_data, tmp_path_factory.mktemp("eval") / "image")
    drawn: list[tuple[int, list]] = []
    real_batches = recipe.EvalData.batches

    def spy(self, seed):
        seen: list = []
        drawn.append((seed, seen))
        for x, y in real_batches(self, seed):
            seen.append((x.sum().item(), y.tolist()))
            yield x, y

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(recipe.EvalData, "batches", spy)
        rows = ev.evaluate(cfg)
    return cfg, rows, drawn


def test_rows_and_reports(image_run):
    cfg, rows, _ = image_run
    out = Path(cfg.out)
    assert json.loads((out / "results.json").read_text()) == rows
    assert [(r["arch"], r["arm"], r["seed"]) for r in rows] == [
        (a, arm, s) for a in IMAGE_ARCHS for arm in ARMS for s in (0, 1)]
    for row in rows:
        if row["arm"] == "mimetic":  # CNNs: recorded as not applicable, not run
            assert row["skipped"] == "no self-attention layers" and "at" not in row
            continue
        assert [(k, p["step"]) for k, p in row["at"].items()] == [("0", 0), ("3", 3)]
        for point in row["at"].values():
            assert 0 <= point["accuracy"] <= 1 and math.isfinite(point["loss"])
        assert (row.get("generator") == "untrained@seed0") == (row["arm"] == "predicted")
        assert (row.get("noise") == 0.0) == (row["arm"] == "predicted")  # untrained: 0
    table = (out / "table.md").read_text()
    for column in ("predicted k=0", "default k=3", "orthogonal k=3", "mimetic k=0"):
        assert column in table
    assert all(f"| {a} |" in table for a in IMAGE_ARCHS) and "n/a" in table
    assert "**mean over 2 archs**" in table and "**beats default by > std**" in table
    assert "At k=3, the predicted init beats the default init" in table
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_arms_see_the_same_batches(image_run):
    _, _, drawn = image_run
    assert len(drawn) == 2 * 3 * 2  # archs x arms that apply x seeds
    by_seed = {seed: [seen for s, seen in drawn if s == seed] for seed in (0, 1)}
    for seen in by_seed.values():
        assert len(seen[0]) == 3 and all(other == seen[0] for other in seen)
    assert by_seed[0][0] != by_seed[1][0]


def test_default_arm_is_deterministic(image_run, shared_data, tmp_path):
    _, rows, _ = image_run
    again = ev.evaluate(tiny_config(shared_data, tmp_path / "again", archs=IMAGE_ARCHS[1:],
                                    arms=("default",), seeds=(1,)))
    first = [r for r in rows if r["arm"] == "default" and r["arch"] == IMAGE_ARCHS[1]
             and r["seed"] == 1]
    assert [{**r, "seconds": 0} for r in again] == [{**r, "seconds": 0} for r in first]


def test_resume_runs_only_missing_rows(image_run, shared_data, tmp_path, monkeypatch, capsys):
    cfg, rows, _ = image_run
    out = tmp_path / "resumed"
    shutil.copytree(cfg.out, out)
    results = out / RESULTS
    lines = results.read_text().splitlines()
    results.write_text("\n".join(lines[:-1]) + '\n{"arch": "vgg-10')  # the last row cut short
    ran = []
    real_run_one = ev.run_one

    def counting(cfg, entry, arm, seed, *args):
        ran.append((entry.name, arm, seed))
        return real_run_one(cfg, entry, arm, seed, *args)

    monkeypatch.setattr(ev, "run_one", counting)
    config = tmp_path / "eval.toml"
    config.write_text(f'data = "{shared_data / "cifar10-jpg.zip"}"\nout = "{out}"\n'
                      'archs = ["vgg-1000001", "convnext-1000000"]\nseeds = [0, 1]\n'
                      'ks = [0, 3]\ntrain_samples = 256\ntest_samples = 256\n')
    parser = argparse.ArgumentParser()
    eval_command.register(parser.add_subparsers())
    args = parser.parse_args(["eval", "--generator", "untrained", "--config", str(config),
                              "batch_size=32", "device=cpu"])
    assert args.func(args) == 0
    last = rows[-1]  # rows are written in job order
    assert ran == [(last["arch"], last["arm"], last["seed"])]
    assert "| vgg-1000001 |" in capsys.readouterr().out
    assert len(json.loads((out / "results.json").read_text())) == len(rows)
    with pytest.raises(ValueError, match="other ks"):  # other options: refuse to mix rows
        ev.evaluate(tiny_config(shared_data, out, ks=(0, 5)))
    with pytest.raises(ValueError, match="other noise"):
        ev.evaluate(tiny_config(shared_data, out, noise=0.25))
    config_json = out / "config.json"  # a folder from before noise existed: refused too
    config_json.write_text(json.dumps({k: v for k, v in json.loads(config_json.read_text())
                                       .items() if k != "noise"}))
    with pytest.raises(ValueError, match="other noise"):
        ev.evaluate(tiny_config(shared_data, out))


def test_resume_refuses_a_generator_retrained_in_place(shared_data, tmp_path):
    """Same generator path, other weights: the old rows are not reused as the new one's."""
    folder = tmp_path / "generator"
    small = hyperinit.GHNConfig(hidden=16, layers=1, heads=2, rank=4, features=8)
    cfg = tiny_config(shared_data, tmp_path / "out", generator=str(folder), arms=("predicted",),
                      archs=IMAGE_ARCHS[:1], seeds=(0,), ks=(0,))
    torch.manual_seed(0)
    hyperinit.GraphHyperNetwork(small).save_pretrained(folder)
    (first,) = ev.evaluate(cfg)
    assert ev.evaluate(cfg) == [first]  # unchanged weights: resumed, nothing rerun
    torch.manual_seed(1)
    hyperinit.GraphHyperNetwork(small).save_pretrained(folder)
    with pytest.raises(ValueError, match="other generator_id"):
        ev.evaluate(cfg)


def test_predicted_arm_is_hyperinit_predict_with_the_run_seed():
    """The predicted arm is what a user gets from ``hyperinit.predict(seed=run seed)``: with
    noise, each run seed has its own draw; without, the same prediction."""
    entry = {e.name: e for e in held_out("image")}["vgg-1000001"]
    generator = hyperinit.load_generator("untrained")

    def predicted(seed: int, noise: float) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        model = entry.build()
        assert ev.init_(model, "predicted", seed, noise, generator) is None
        return model.state_dict()

    def same(a: dict, b: dict) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a)

    assert same(predicted(0, 0.0), predicted(1, 0.0))
    assert not same(predicted(0, 0.5), predicted(1, 0.5))
    user = hyperinit.predict_state_dict(entry.build(), generator, seed=1, noise=0.5)
    assert all(torch.allclose(v, user[k], atol=1e-6) for k, v in predicted(1, 0.5).items())


def test_batchnorm_statistics_are_calibrated_at_k0_on_a_copy():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.Flatten())
    batches = iter([(2 + 3 * torch.randn(64, 3, 4, 4), None) for _ in range(4)])
    clone = recipe.calibrated(model, batches, 4)
    norm = clone[0]
    assert norm.running_mean == pytest.approx([2, 2, 2], abs=0.2)
    assert norm.running_var == pytest.approx([9, 9, 9], rel=0.1)
    assert norm.num_batches_tracked == 4
    assert torch.equal(model[0].running_mean, torch.zeros(3)) and model[0].momentum == 0.1
    assert recipe.calibrated(model, batches, 0) is model
    no_norm = torch.nn.Linear(2, 2)
    assert recipe.calibrated(no_norm, batches, 4) is no_norm


def test_mimetic_init():
    entries = {e.name: e for e in held_out("image")}
    torch.manual_seed(0)
    vit = entries["vit-1000001"].build()

    def qk_alignment(model):  # trace(W_q W_k^T) / (|W_q| |W_k|), all heads of every layer
        values = []
        for qkv, proj, _ in ev.attention_layers(model):
            d = proj.shape[0]
            q, k = qkv[:d], qkv[d:2 * d]
            values.append(((q * k).sum() / (q.norm() * k.norm())).item())
        return values

    assert all(abs(v) < 0.1 for v in qk_alignment(vit))
    assert ev.init_(vit, "mimetic", 0, None, None) is None
    assert len(qk_alignment(vit)) == 3 and all(v > 0.5 for v in qk_alignment(vit))
    for qkv, proj, _ in ev.attention_layers(vit):  # W_v W_proj: negatively aligned with I
        d = proj.shape[0]
        assert torch.trace(qkv[2 * d:].T @ proj.T) < 0
    assert ev.init_(entries["vgg-1000001"].build(), "mimetic", 0, None, None) == (
        "no self-attention layers")


def test_text_run(shared_data, tmp_path):
    cfg = EvalConfig(task="text", generator="untrained", archs=("gpt-1000003",), seeds=(0,),
                     arms=("predicted", "default", "mimetic"), ks=(0, 2), epoch=True,
                     batch_size=4, block_size=32, train_samples=8, test_samples=8,
                     device="cpu", data=str(shared_data / "tinyshakespeare.txt"),
                     out=str(tmp_path / "text"))
    rows = ev.evaluate(cfg)
    assert [r["arm"] for r in rows] == ["predicted", "default", "mimetic"]
    for row in rows:
        assert [(k, p["step"]) for k, p in row["at"].items()] == [("0", 0), ("2", 2),
                                                                     ("epoch", 2)]
        for point in row["at"].values():
            assert math.isfinite(point["loss"])
            assert point["perplexity"] == pytest.approx(math.exp(point["loss"]))
    table = (tmp_path / "text" / "table.md").read_text()
    assert "validation loss" in table and "mimetic 1 epoch" in table


def test_bad_inputs(shared_data, tmp_path):
    with pytest.raises(ValueError, match="unknown image architecture.*nope-1.*vit-1000000"):
        ev.evaluate(tiny_config(shared_data, tmp_path, archs=("vgg-1000001", "nope-1")))
    with pytest.raises(ValueError, match=r"unknown arm\(s\) \['xavier'\]"):
        EvalConfig(arms=("default", "xavier"))
    with pytest.raises(ValueError, match="unknown EvalConfig option 'seed'.*did you mean seeds"):
        load_config(None, ["seed=1"], EvalConfig)
    cfg = load_config(None, ["arms=default,predicted", "ks=[50,0]", "task=text"], EvalConfig)
    assert cfg.arms == ("default", "predicted") and cfg.ks == (0, 50) and cfg.lr == 1e-3
