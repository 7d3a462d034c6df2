"""Block-wise weight diffusion: windows of tokens (or of groups of tokens), any model size,
and the old full-attention checkpoints unchanged."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest
import torch
from torch import nn

import graphs
from hyperinit import CheckpointError, GeneratorLimitError
from hyperinit.catalog import SHIPPED
from hyperinit.diffusion import (
    MAX_TOKENS,
    DiffusionConfig,
    WeightDiffusion,
    diffusion_loss,
    sample,
    sample_state_dicts,
    train_start,
)
from training.zoo import build_arch

WINDOWED = DiffusionConfig(chunk=16, hidden=16, layers=2, heads=2, graph_layers=1,
                           positions=16, window=8, train_windows=2, group=1)
# the same 8 tokens per window, as 2 positions of 4 merged tokens
GROUPED = replace(WINDOWED, window=2, group=4)
BOTH = pytest.mark.parametrize("config", [WINDOWED, GROUPED], ids=["tokens", "groups"])


@pytest.fixture(scope="module")
def big() -> graphs.ArchGraph:
    """164k values: 10,250 tokens of 16, past the full-attention limit."""
    return graphs.build(nn.Sequential(nn.Linear(1024, 160)))


def untrained(config: DiffusionConfig = WINDOWED) -> WeightDiffusion:
    """A model whose output depends on its input (the real one starts at zero output)."""
    torch.manual_seed(0)
    model = WeightDiffusion(config).eval()
    nn.init.normal_(model.out.weight, std=0.1)
    return model


@BOTH
def test_a_windowed_model_samples_past_the_full_attention_limit(big, config):
    model = untrained(config)
    assert len(model.tokenizer.layout(big).layer) > MAX_TOKENS
    (state,) = sample_state_dicts(model, big, seed=0, steps=2)
    assert state["0.weight"].shape == (160, 1024) and torch.isfinite(state["0.weight"]).all()


def test_a_full_attention_model_still_refuses_past_its_limit(big):
    with pytest.raises(GeneratorLimitError, match="has 10250 weight tokens.*at most 8192.*ghn"):
        sample_state_dicts(untrained(replace(WINDOWED, window=None)), big, steps=1)


@BOTH
def test_windows_do_not_attend_across_each_other(config):
    model = untrained(config)
    graph = graphs.build(nn.Sequential(nn.Linear(8, 60)))  # 480 + 60 values: 34 tokens
    meta = model.tokenizer.layout(graph)
    (emb,) = model.embed([graph])
    noisy = torch.randn(1, len(meta.layer), 16)
    changed = noisy.clone()
    changed[:, 8:16] += 1.0  # the second window
    with torch.no_grad():
        before, after = (model(x, torch.tensor([500]), [meta], [emb]) for x in (noisy, changed))
    assert torch.equal(before[:, :8], after[:, :8]) and torch.equal(before[:, 16:], after[:, 16:])
    assert not torch.allclose(before[:, 8:16], after[:, 8:16])


@BOTH
def test_a_span_of_windows_predicts_as_the_whole_sequence(config):
    model = untrained(config)
    graph = graphs.build(nn.Sequential(nn.Linear(8, 60)))
    meta = model.tokenizer.layout(graph)
    (emb,) = model.embed([graph])
    noisy = torch.randn(1, len(meta.layer), 16)
    t = torch.tensor([500])
    with torch.no_grad():
        whole = model(noisy, t, [meta], [emb])
        tail = model(noisy[:, 16:], t, [meta], [emb], starts=[16])
    torch.testing.assert_close(tail, whole[:, 16:])
    with pytest.raises(ValueError, match="multiples of the window"):
        model(noisy[:, 4:], t, [meta], [emb], starts=[4])


@BOTH
def test_sampling_in_window_batches_gives_the_values_of_all_at_once(config):
    model = untrained(config)
    graph = graphs.build(nn.Sequential(nn.Linear(64, 60)))  # 244 tokens: 31 windows
    one, all_at_once = (sample_state_dicts(model, graph, n=2, seed=1, steps=2, window_batch=b)
                        for b in (1, 64))
    for a, b in zip(one, all_at_once, strict=True):
        torch.testing.assert_close(a["0.weight"], b["0.weight"])
        torch.testing.assert_close(a["0.bias"], b["0.bias"])


def test_merged_tokens_see_each_other_within_their_window_only():
    model = untrained(GROUPED)
    graph = graphs.build(nn.Sequential(nn.Linear(8, 60)))  # 34 tokens: 9 groups of 4
    meta = model.tokenizer.layout(graph)
    (emb,) = model.embed([graph])
    noisy = torch.randn(1, len(meta.layer), 16)
    changed = noisy.clone()
    changed[:, 9] += 1.0  # a token of the second window's first group
    with torch.no_grad():
        before, after = (model(x, torch.tensor([500]), [meta], [emb]) for x in (noisy, changed))
    moved = (before - after).abs().amax(2)[0] > 0
    assert moved[8:16].all() and not moved[:8].any() and not moved[16:].any()


def test_groups_need_windows_and_a_positive_size():
    with pytest.raises(ValueError, match="group=4 merges tokens for windowed attention"):
        replace(GROUPED, window=None)
    with pytest.raises(ValueError, match="token_hidden must be positive, got 0"):
        replace(GROUPED, token_hidden=0)


@BOTH
def test_training_learns_random_runs_of_windows(big, config):
    torch.manual_seed(0)
    starts = {train_start(config, 10250) for _ in range(200)}
    assert all(s % 8 == 0 and s + 16 <= 10250 + 7 for s in starts) and len(starts) > 100
    assert train_start(config, 16) == 0 and train_start(replace(WINDOWED, window=None),
                                                       10250) == 0
    model = WeightDiffusion(config)
    state = nn.Sequential(nn.Linear(1024, 160)).state_dict()
    loss = diffusion_loss(model, [model.tokenizer.encode(state, big)])
    loss.backward()
    assert torch.isfinite(loss) and model.out.weight.grad.abs().sum() > 0


def test_a_config_from_before_windows_loads_with_full_attention(tmp_path):
    old = untrained(replace(WINDOWED, window=None, sinusoidal_positions=False))
    old.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("window", "sinusoidal_positions", "train_windows", "ranked_task", "class_rows",
                "group", "token_hidden", "snr_boost"):
        del config[key]
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = WeightDiffusion.from_pretrained(tmp_path)
    assert (loaded.config.window, loaded.config.sinusoidal_positions) == (None, False)
    assert not loaded.config.ranked_task and not loaded.config.class_rows  # nor later options
    assert loaded.config.group == 1 and loaded.config.snr_boost == 0
    graph = graphs.build(nn.Sequential(nn.Linear(8, 60)))
    ours, theirs = (sample_state_dicts(m, graph, seed=4, steps=3)[0] for m in (old, loaded))
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert asdict(WeightDiffusion(WINDOWED).config)["window"] == 8  # new files say so


def test_the_shipped_full_attention_model_samples_as_before():
    """Values of the sampler before windows existed (n=2, seed 0, 3 DDIM steps)."""
    states = sample(build_arch("vgg-9"), generator=SHIPPED / "diffusion-vgg-cifar10", n=2,
                    seed=0, steps=3)
    expected = {0: [-0.06036405637860298, -0.0935082882642746, 0.07421799749135971,
                    -0.031170228496193886],
                1: [-0.085514597594738, 0.07924342155456543, 0.07310597598552704,
                    0.010765697807073593]}
    for i, values in expected.items():
        torch.testing.assert_close(states[i]["0.0.weight"].flatten()[:4], torch.tensor(values))
    torch.testing.assert_close(states[0]["8.2.weight"].flatten()[:4], torch.tensor(
        [-0.13473540544509888, -0.08420482277870178, -0.06956944614648819,
         0.12903423607349396]))


def test_sampling_takes_a_shipped_name_and_refuses_a_hypernetwork():
    (state,) = sample(build_arch("vgg-9"), generator="diffusion-vgg-cifar10", steps=1)
    assert set(state) == set(build_arch("vgg-9").state_dict())
    with pytest.raises(CheckpointError, match="ghn-cifar10 is a graph-hypernetwork generator: "
                                              "sampling takes a weight-diffusion one"):
        sample(build_arch("vgg-9"), generator="ghn-cifar10")


def test_schedulers_are_built_as_from_config_builds_them():
    from diffusers import DDIMScheduler

    from hyperinit.diffusion import default_scheduler, scheduler_from_config

    training = default_scheduler("sample")
    ours = scheduler_from_config(DDIMScheduler, training.config, clip_sample_range=4.0)
    theirs = DDIMScheduler.from_config(training.config, clip_sample_range=4.0)
    public = [{k: v for k, v in s.config.items() if not k.startswith("_")} for s in (ours, theirs)]
    assert public[0] == public[1] and torch.equal(ours.alphas_cumprod, theirs.alphas_cumprod)
