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
from training.config import TrainConfig, load_config
from training.trainer import GHNTrainer, loss_after_sgd, task_loss, train
from training.trainer import trainer as make_trainer
from training.zoo import build_arch

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
    with pytest.raises(ValueError, match="lookahead_steps must be at least 0"):
        TrainConfig(lookahead_steps=-1)
    with pytest.raises(ValueError, match="lookahead_steps only applies to generator='ghn'"):
        TrainConfig(generator="diffusion", zoo="z", lookahead_steps=1)
    with pytest.raises(ValueError, match="noise only applies to generator='ghn'"):
        TrainConfig(generator="diffusion", zoo="z", noise=0.5)
    with pytest.raises(ValueError, match="noise must be at least 0 and below 1"):
        TrainConfig(noise=1.0)


def test_loss_after_sgd_is_differentiable_through_the_steps():
    """Its gradient matches finite differences of the loss after two real SGD steps."""
    torch.manual_seed(0)
    module = torch.nn.Linear(5, 3).double()
    batches = [(torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,)))
               for _ in range(3)]
    lr = 0.5

    def after(weight: torch.Tensor) -> torch.Tensor:
        params = {"weight": weight, "bias": module.bias}
        first = task_loss(module, params, *batches[0])
        return loss_after_sgd(module, params, {}, first, batches[1:], lr)

    weight = module.weight.detach().clone().requires_grad_()
    (grad,) = torch.autograd.grad(after(weight), weight)
    direction, eps = torch.randn_like(weight), 3e-3  # the loss is float32 (task_loss)
    numeric = (after(weight + eps * direction) - after(weight - eps * direction)) / (2 * eps)
    # (dropping the second-order terms gives 0.31 here, against 0.066)
    assert (grad * direction).sum().item() == pytest.approx(numeric.item(), rel=1e-3)
    params = {"weight": weight.detach(), "bias": module.bias.detach()}
    for x, y in batches[:2]:  # the same two steps, taken by hand
        params = {k: v.clone().requires_grad_() for k, v in params.items()}
        grads = torch.autograd.grad(task_loss(module, params, x, y), list(params.values()))
        params = {k: (v - lr * g).detach() for (k, v), g in zip(params.items(), grads, strict=True)}
    assert after(weight).item() == pytest.approx(task_loss(module, params, *batches[2]).item())


def test_lookahead_objective_trains(tmp_path, shared_data, monkeypatch):
    train(tiny_config(tmp_path / "run", steps=2, lookahead_steps=1))
    rows = [json.loads(r) for r in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["lookahead_loss"]) and r["loss"] > r["task_loss"] for r in rows)
    # ops PyTorch cannot differentiate twice as they are: fused attention, hardsigmoid
    hardsigmoid = torch.nn.functional.hardsigmoid
    trainer = GHNTrainer(tiny_config(tmp_path / "more", lookahead_steps=1, arch_pool=300))
    monkeypatch.setattr(trainer, "arch_seeds", lambda step: [5, 21])
    assert [trainer._arch(s).name for s in (5, 21)] == ["vit-5", "mobilenet-21"]
    loss, metrics = trainer.loss()
    loss.backward()
    assert math.isfinite(metrics["lookahead_loss"])
    assert torch.nn.functional.hardsigmoid is hardsigmoid  # restored


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
    assert hyperinit.load_generator(exported).config.noise == 0.25
    kept = make_trainer(tiny_config(tmp_path / "kept", init=str(exported)))
    assert kept.model.config.noise == 0.25
    reset = make_trainer(tiny_config(tmp_path / "reset", init=str(exported), noise=0.0))
    assert reset.model.config.noise == 0.0


def test_orth_training_goes_through_the_orthogonalized_prediction(tmp_path, shared_data):
    """``orth=true`` trains on the predictions after noise and orthogonalization: the same
    generator, data and noise give another loss, and the gradient reaches the generator
    through the Newton-Schulz steps, finite. The generator keeps ``orth`` in its config, and
    fine-tuning it keeps it unless told otherwise."""
    plain, orth = (GHNTrainer(tiny_config(tmp_path / name, noise=0.5, **kw))
                   for name, kw in (("plain", {}), ("orth", {"orth": True})))
    orth.model.load_state_dict(plain.model.state_dict())
    loss, metrics = orth.loss()
    assert metrics["task_loss"] != plain.loss()[1]["task_loss"]
    loss.backward()
    grads = [p.grad for p in orth.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    with pytest.raises(ValueError, match="orth only applies to generator='ghn'"):
        TrainConfig(generator="diffusion", zoo="z", orth=True)
    exported = train(tiny_config(tmp_path / "run", steps=2, orth=True))
    assert hyperinit.load_generator(exported).config.orth is True  # predictions get it too
    assert make_trainer(tiny_config(tmp_path / "kept", init=str(exported))).model.config.orth
    off = make_trainer(tiny_config(tmp_path / "off", init=str(exported), orth=False))
    assert off.model.config.orth is False


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
from training.trainer import trainer as make_trainer
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
