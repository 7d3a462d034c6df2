"""The trainers of both generators: real steps on real data (CIFAR-10, tiny-shakespeare, a
tiny model zoo), checkpoints, exact resume, DDP."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hyperinit
from training.config import DEFAULT_SPREAD, TrainConfig, load_config
from training.run import train
from training.run import trainer as make_trainer
from training.teacher import Teacher, distill_loss
from training.trainer import (
    CHECKPOINT,
    GHNTrainer,
    participation_ratio,
    spread_penalty,
    weight_matrices,
)
from training.trainer import build_arch as sampled_arch
from training.zoo import build_arch, load_zoo, select_checkpoints

TINY = {"ghn": {"hidden": 16, "layers": 1, "heads": 2, "rank": 4, "features": 8,
                "meta_batch": 2, "batch_size": 8, "train_samples": 256, "arch_pool": 4},
        "diffusion": {"hidden": 16, "layers": 1, "heads": 2, "chunk": 16, "graph_layers": 1,
                      "batch_size": 2}}


def tiny_config(out: Path, generator: str = "ghn", **overrides) -> TrainConfig:
    values = {"out": str(out), "generator": generator, "steps": 4, "warmup_steps": 2,
              "log_every": 1, "checkpoint_every": 2, **TINY[generator], **overrides}
    return TrainConfig(**values)


@pytest.fixture(params=["ghn", "diffusion"])
def generator_config(request, tiny_zoo):
    """``tiny_config`` for each generator (the diffusion model learns the tiny zoo)."""
    zoo = {"zoo": tiny_zoo[0].out} if request.param == "diffusion" else {}
    return lambda out, **overrides: tiny_config(out, request.param, **zoo, **overrides)


def test_tiny_run_trains_checkpoints_and_exports(tmp_path, shared_data):
    exported = train(tiny_config(tmp_path / "run"))
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(0 < r["loss"] < 10 and r["lr"] > 0 for r in rows)
    assert (tmp_path / "run/curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "run/config.json").read_text())["steps"] == 4
    ghn = hyperinit.load_generator(exported)
    model = hyperinit.predict("torchvision:resnet18", ghn, num_classes=10)
    assert torch.isfinite(model(torch.randn(2, 3, 32, 32))).all()


def test_text_task_trains(tmp_path, shared_data):
    cfg = tiny_config(tmp_path / "text", task="text", steps=2, block_size=32)
    train(cfg)
    rows = [json.loads(r) for r in (tmp_path / "text/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in rows)


def test_diffusion_trains_on_a_zoo_and_samples(tmp_path, tiny_zoo):
    exported = train(tiny_config(tmp_path / "run", "diffusion", zoo=tiny_zoo[0].out))
    rows = [json.loads(r) for r in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in rows)
    generator = hyperinit.load_generator(exported)
    assert isinstance(generator, hyperinit.WeightDiffusion)
    module = build_arch("vgg-2")
    (state,) = hyperinit.sample(module, generator, n=1, steps=2)
    module.load_state_dict(state, strict=True)
    assert torch.isfinite(module(torch.randn(2, 3, 32, 32))).all()


def test_diffusion_learns_the_last_step_or_the_one_named(tmp_path, tiny_zoo):
    last = make_trainer(tiny_config(tmp_path / "a", "diffusion", zoo=tiny_zoo[0].out))
    named = make_trainer(tiny_config(tmp_path / "b", "diffusion", zoo=tiny_zoo[0].out,
                                     zoo_step=2))
    assert len(last.samples) == len(named.samples) == 4  # 2 archs x 2 runs
    first = last.samples[0][0]
    assert not torch.equal(first, named.samples[0][0])
    with pytest.raises(ValueError, match="no checkpoints of convnext-0 at step 3; its steps "
                                         "are 2, 4"):
        make_trainer(tiny_config(tmp_path / "c", "diffusion", zoo=tiny_zoo[0].out, zoo_step=3))


def test_diffusion_window_options_reach_the_model(tmp_path, tiny_zoo):
    model = make_trainer(tiny_config(tmp_path / "run", "diffusion", zoo=tiny_zoo[0].out,
                                     window=4, train_windows=2, group=2,
                                     token_hidden=8)).model
    assert (model.config.window, model.config.train_windows) == (4, 2)
    assert (model.config.group, model.config.token_hidden) == (2, 8)
    with pytest.raises(ValueError, match="train_windows only apply to generator='diffusion'"):
        TrainConfig(window=4, train_windows=2)


def test_generator_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="set zoo=FOLDER"):
        tiny_config(tmp_path, "diffusion")
    with pytest.raises(ValueError, match="rank, features only apply to generator='ghn'"):
        TrainConfig(generator="diffusion", zoo="z", rank=4, features=8)
    with pytest.raises(ValueError, match="zoo only apply to generator='diffusion'"):
        TrainConfig(zoo="z")
    with pytest.raises(ValueError, match="generator must be 'ghn' or 'diffusion'"):
        TrainConfig(generator="gan")
    with pytest.raises(FileNotFoundError, match="is not a model zoo"):
        make_trainer(tiny_config(tmp_path / "run", "diffusion", zoo=str(tmp_path)))
    with pytest.raises(ValueError, match="noise only applies to generator='ghn'"):
        TrainConfig(generator="diffusion", zoo="z", noise=0.5)
    with pytest.raises(ValueError, match="noise must be at least 0 and below 1"):
        TrainConfig(noise=1.0)
    with pytest.raises(ValueError, match="spread must be at least 0"):
        TrainConfig(spread=-0.1)
    assert TrainConfig().spread == DEFAULT_SPREAD > 0  # measured on images only
    assert TrainConfig(task="text").spread == 0.0
    assert TrainConfig(generator="diffusion", zoo="z").spread == 0.0
    with pytest.raises(ValueError, match="spread only applies to generator='ghn'"):
        TrainConfig(generator="diffusion", zoo="z", spread=0.1)
    with pytest.raises(ValueError, match="needs both teacher=ZOO_FOLDER and distill=W"):
        TrainConfig(distill=0.5)
    with pytest.raises(ValueError, match="needs both teacher=ZOO_FOLDER and distill=W"):
        TrainConfig(teacher="zoo")
    with pytest.raises(ValueError, match="distill must be at least 0"):
        TrainConfig(teacher="zoo", distill=-1.0)
    with pytest.raises(ValueError, match="distill_temperature must be above 0"):
        TrainConfig(teacher="zoo", distill=0.5, distill_temperature=0)
    with pytest.raises(ValueError, match="teaches task='image' only"):
        TrainConfig(task="text", teacher="zoo", distill=0.5)
    with pytest.raises(ValueError, match="teacher only applies to generator='ghn'"):
        TrainConfig(generator="diffusion", zoo="z", teacher="zoo", distill=0.5)


def test_init_starts_from_a_trained_generator(tmp_path, generator_config):
    exported = train(generator_config(tmp_path / "first"))
    trained = hyperinit.load_generator(exported).state_dict()
    tuned = make_trainer(generator_config(tmp_path / "second", init=str(exported), seed=1))
    assert tuned.model.state_dict().keys() == trained.keys()
    assert all(torch.equal(v, trained[k]) for k, v in tuned.model.state_dict().items())
    with pytest.raises(ValueError, match=r"init=.* with \{.*'hidden': 16.*but this run builds"
                                         r".*'hidden': 32.*set generator= and the size"):
        make_trainer(generator_config(tmp_path / "third", init=str(exported), hidden=32))


def test_encoder_init_starts_the_encoder_of_another_decoder(tmp_path, shared_data):
    """``encoder_init`` copies a trained generator's graph encoder, whatever its decoder (a
    0.2 Fourier one here), and leaves the new decoder as built."""
    size = {k: TINY["ghn"][k] for k in ("hidden", "layers", "heads", "rank", "features")}
    old = hyperinit.GraphHyperNetwork(hyperinit.GHNConfig(**size, decoder="fourier"))
    old.save_pretrained(tmp_path / "old")
    fresh = make_trainer(tiny_config(tmp_path / "fresh"))
    started = make_trainer(tiny_config(tmp_path / "run", encoder_init=str(tmp_path / "old")))
    assert started.model.config.decoder == "index"
    for k, v in started.model.encoder.state_dict().items():
        assert torch.equal(v, old.encoder.state_dict()[k])
    for k, v in started.model.decoder.state_dict().items():
        assert torch.equal(v, fresh.model.decoder.state_dict()[k])
    with pytest.raises(ValueError, match=r"encoder_init=.* has no graph encoder of this run's "
                                         r"size \(hidden, layers, heads = 32, 1, 2\)"):
        make_trainer(tiny_config(tmp_path / "wide", hidden=32,
                                 encoder_init=str(tmp_path / "old")))
    with pytest.raises(ValueError, match="init and encoder_init both set"):
        tiny_config(tmp_path / "both", init="ghn-cifar10", encoder_init="ghn-cifar10")


def test_noise_aware_training_and_the_generators_noise(tmp_path, shared_data):
    """``noise=F`` trains on the predictions as ``predict(noise=F)`` makes them, drawn from
    (seed, step, rank), and writes F to the generator; fine-tuning keeps an init's noise."""
    plain, noisy, again = (GHNTrainer(tiny_config(tmp_path / name, **kw)) for name, kw in
                           (("plain", {}), ("noisy", {"noise": 0.5}), ("again", {"noise": 0.5})))
    losses = [t.loss()[1]["task_loss"] for t in (plain, noisy, again)]
    assert losses[1] != losses[0] and losses[1] == losses[2]
    exported = train(tiny_config(tmp_path / "run", steps=2, noise=0.25))
    assert hyperinit.load_generator(exported).defaults.noise == 0.25
    kept = make_trainer(tiny_config(tmp_path / "kept", init=str(exported)))
    assert kept.model.defaults.noise == 0.25
    reset = make_trainer(tiny_config(tmp_path / "reset", init=str(exported), noise=0.0))
    assert reset.model.defaults.noise == 0.0


def test_participation_ratio_counts_the_directions_that_carry_the_energy():
    torch.manual_seed(0)
    rank_one = torch.randn(12, 1) @ torch.randn(1, 3 * 3 * 5)
    flat = torch.linalg.qr(torch.randn(45, 12))[0].T  # 12 orthonormal rows
    assert participation_ratio(rank_one.view(12, 5, 3, 3)) == pytest.approx(1, rel=1e-4)
    assert participation_ratio(flat) == pytest.approx(12, rel=1e-4)
    w = torch.randn(30, 7)
    s2 = torch.linalg.svdvals(w.double()) ** 2
    assert participation_ratio(w) == pytest.approx(float(s2.sum() ** 2 / (s2 ** 2).sum()),
                                                   rel=1e-4)
    assert spread_penalty(flat) == pytest.approx(0, abs=1e-4)
    assert spread_penalty(rank_one) == pytest.approx(math.log(12), rel=1e-3)


def test_spread_term_is_logged_and_spreads_the_predictions(tmp_path, shared_data):
    """``spread`` adds the collapse penalty of every predicted weight matrix to the loss;
    descending on it alone makes the predictions' spectra flatter."""
    trainer = GHNTrainer(tiny_config(tmp_path / "run", spread=1.0, reg=0.0))
    loss, metrics = trainer.loss()
    assert metrics["spread_loss"] > 0
    assert loss.item() == pytest.approx(metrics["task_loss"] + metrics["spread_loss"], rel=1e-5)
    optimizer = torch.optim.Adam(trainer.model.parameters(), lr=1e-2)
    before = metrics["spread_loss"]
    archs = [sampled_arch(trainer.sampler, s, trainer.cfg) for s in trainer.arch_seeds(0)]
    for _ in range(20):
        predicted = trainer.model([a.graph for a in archs])
        penalty = torch.stack([spread_penalty(t) for a, p in zip(archs, predicted, strict=True)
                               for t in weight_matrices(a.graph, p)]).mean()
        optimizer.zero_grad()
        penalty.backward()
        optimizer.step()
    assert penalty.item() < 0.8 * before
    assert "spread_loss" not in GHNTrainer(tiny_config(tmp_path / "plain", spread=0.0)).loss()[1]


def test_resume_is_exact(tmp_path, generator_config):
    straight = make_trainer(generator_config(tmp_path / "a"))
    straight.train()
    interrupted = make_trainer(generator_config(tmp_path / "b"))
    interrupted.out.mkdir(parents=True)
    interrupted.train_step()
    interrupted.train_step()
    interrupted.save_checkpoint()
    del interrupted  # the process "dies" here, after logging step 3 and half a row
    rows = [json.dumps({"step": k, "loss": 2.0, "lr": 1e-3}) for k in (1, 2, 3)]
    (tmp_path / "b/metrics.jsonl").write_text("\n".join(rows) + '\n{"step": 4, "lo')
    resumed = make_trainer(generator_config(tmp_path / "b"))
    resumed.train()
    assert resumed.step == 4
    logged = [json.loads(r) for r in (tmp_path / "b/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4] and "grad_norm" in logged[2]
    # The same computation in the same order; under competing load a CPU kernel can still
    # round a last bit differently (seen once: 3e-8), so that much and no more is allowed.
    for (name, a), b in zip(straight.model.state_dict().items(),
                            resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7, msg=name)


def test_corrupt_checkpoint_on_resume(tmp_path, shared_data):
    (tmp_path / "run").mkdir()
    (tmp_path / "run/checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(hyperinit.CheckpointError, match="resume=false"):
        train(tiny_config(tmp_path / "run"))


def test_bad_data_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="no image data at .*missing.zip: expected a zip"):
        GHNTrainer(tiny_config(tmp_path / "run", data=str(tmp_path / "missing.zip")))
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat/cat.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="train"):
        GHNTrainer(tiny_config(tmp_path / "run", data=str(tmp_path / "flat")))


def test_removed_options_load_at_their_neutral_value_only(tmp_path, shared_data):
    """``lookahead_steps`` and ``orth`` are gone: an old run's config and checkpoint that
    hold them at the value where they did nothing still load and resume; any other value is
    refused by name, so an old run never goes on silently changed."""
    (tmp_path / "old.yaml").write_text("lookahead_steps: 0\nlookahead_lr: 0.05\north: null\n"
                                       "steps: 3\n")
    assert load_config(tmp_path / "old.yaml", ["orth=false"]).steps == 3
    (tmp_path / "on.yaml").write_text("lookahead_steps: 2\n")
    with pytest.raises(ValueError, match=r"on.yaml sets lookahead_steps=2, but lookahead_steps "
                                         r"was removed .* set it to 0"):
        load_config(tmp_path / "on.yaml")
    with pytest.raises(ValueError, match="overrides sets orth=True, but orth was removed"):
        load_config(None, ["orth=true"])
    size = {k: TINY["ghn"][k] for k in ("hidden", "layers", "heads", "rank", "features")}
    hyperinit.GraphHyperNetwork(hyperinit.GHNConfig(**size), hyperinit.PredictDefaults(
        orth=True)).save_pretrained(tmp_path / "orth")
    with pytest.raises(ValueError, match="was trained through orthogonalization"):
        make_trainer(tiny_config(tmp_path / "tuned", init=str(tmp_path / "orth")))
    trainer = make_trainer(tiny_config(tmp_path / "run"))
    trainer.out.mkdir()
    trainer.train_step()
    trainer.save_checkpoint()
    state = torch.load(trainer.out / CHECKPOINT, weights_only=True)
    for removed, resumes in (({"lookahead_steps": 0, "orth": None}, True),
                             ({"lookahead_steps": 1}, False)):
        state["config"].update(removed)
        torch.save(state, trainer.out / CHECKPOINT)
        if resumes:
            assert train(tiny_config(tmp_path / "run", steps=2)).is_dir()
        else:
            with pytest.raises(hyperinit.CheckpointError, match="its config sets "
                                                                "lookahead_steps=1"):
                train(tiny_config(tmp_path / "run", steps=2))


def test_config_files_and_unknown_keys(tmp_path):
    (tmp_path / "c.toml").write_text('task = "text"\nsteps = 7\n')
    (tmp_path / "c.yaml").write_text("steps: 9\nlr: 0.001\n")
    assert load_config(tmp_path / "c.toml", ["steps=8"]).steps == 8
    assert load_config(tmp_path / "c.toml").task == "text"
    assert load_config(tmp_path / "c.yaml").lr == 0.001
    (tmp_path / "bad.toml").write_text("stpes = 3\n")
    with pytest.raises(ValueError, match="did you mean steps"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(ValueError, match="meta_batch"):
        load_config(None, ["meta_bach=2"])
    with pytest.raises(ValueError, match="task must be"):
        load_config(None, ["task=audio"])


DDP_SCRIPT = """
import hashlib, torch.distributed as dist
from training.config import TrainConfig
from training.run import trainer as make_trainer
cfg = TrainConfig(**__CFG__)
trainer = make_trainer(cfg)
trainer.train()
blob = b"".join(p.detach().numpy().tobytes() for p in trainer.model.parameters())
rank = dist.get_rank()
with open(f"{cfg.out}/rank{rank}.txt", "w") as f:  # one file each: stdout lines interleave
    f.write(f"{rank} {trainer.step} {hashlib.sha256(blob).hexdigest()} {trainer.picks(0, 4, 1000)}")
"""


def _torchrun(script: Path, out: Path) -> list[list[str]]:
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", str(script)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return [(out / f"rank{r}.txt").read_text().split(maxsplit=3) for r in (0, 1)]


# the sync and resume logic is the generators' shared trainer: the default run takes one
@pytest.mark.parametrize("generator_config",
                         ["ghn", pytest.param("diffusion", marks=pytest.mark.slow)],
                         indirect=True)
def test_ddp_on_two_gloo_processes_stays_in_sync_and_resumes(tmp_path, generator_config):
    cfg = generator_config(tmp_path / "ddp", steps=2, device="cpu")
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.replace("__CFG__", repr(cfg.to_dict())))
    (r0, r1) = _torchrun(script, tmp_path / "ddp")
    assert r0[0] == "0" and r1[0] == "1" and r0[1] == r1[1] == "2"
    assert r0[2] == r1[2], "ranks hold identical generator weights"
    assert r0[3] != r1[3], "ranks train on different architectures or checkpoints"
    assert (tmp_path / "ddp/generator/model.safetensors").is_file()
    script.write_text(DDP_SCRIPT.replace("__CFG__", repr({**cfg.to_dict(), "steps": 3})))
    (r0, r1) = _torchrun(script, tmp_path / "ddp")
    assert r0[1] == r1[1] == "3" and r0[2] == r1[2]
    rows = (tmp_path / "ddp/metrics.jsonl").read_text().split("\n")
    assert [json.loads(r)["step"] for r in rows if r] == [1, 2, 3]


def test_teacher_averages_the_zoos_tempered_predictions(tiny_zoo, shared_data):
    """The teacher is the zoo's last-step ten-way checkpoints; its soft targets are the mean
    of their tempered softmax outputs, and the distillation loss is 0 at the targets."""
    cfg, _ = tiny_zoo
    teacher = Teacher(cfg.out, torch.device("cpu"))
    last = select_checkpoints(load_zoo(cfg.out))
    assert len(teacher.models) == len(last) > 1
    x = torch.randn(5, 3, 32, 32)
    expected = torch.stack([torch.softmax(e.module().eval()(x) / 3.0, -1) for e in last]).mean(0)
    soft = teacher.soft_targets(x, 3.0)
    torch.testing.assert_close(soft, expected)
    torch.testing.assert_close(soft.sum(-1), torch.ones(5))
    assert distill_loss(3.0 * soft.log(), soft, 3.0).item() == pytest.approx(0, abs=1e-5)
    assert distill_loss(torch.zeros(5, 10), soft, 3.0).item() > 0


def test_a_task_zoo_cannot_teach(tiny_task_zoo):
    with pytest.raises(ValueError, match="no ten-way checkpoints to teach with"):
        Teacher(tiny_task_zoo[0].out, torch.device("cpu"))


def test_distillation_adds_the_teachers_term_and_trains(tmp_path, tiny_zoo, shared_data):
    """``teacher=ZOO distill=W`` adds W times the distillation loss to every step's loss."""
    zoo = tiny_zoo[0].out
    trainer = GHNTrainer(tiny_config(tmp_path / "one", teacher=zoo, distill=0.5, reg=0.0,
                                     spread=0.0))
    loss, metrics = trainer.loss()
    assert metrics["distill_loss"] > 0
    assert loss.item() == pytest.approx(metrics["task_loss"] + 0.5 * metrics["distill_loss"],
                                        rel=1e-5)
    train(tiny_config(tmp_path / "run", teacher=zoo, distill=0.5))
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(math.isfinite(r["distill_loss"]) for r in rows)
