"""Architecture samplers: sampled models run on real data, trace cleanly and are reproducible."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import graphs
from training.data import TextBatches, load_cifar10, load_text, normalize
from training.samplers import (
    HELD_OUT_SEED_START,
    BNResNet,
    ConvNeXtLike,
    GPT2Like,
    GPTLike,
    Mixed,
    Sampler,
    VGGLike,
    held_out,
    image_samplers,
    mixed,
    zoo_samplers,
)

SAMPLERS = [*zoo_samplers(), GPTLike(), GPT2Like()]
SEEDS = range(6)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def batches(shared_data) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One real batch per kind: 8 CIFAR-10 test images, 4 blocks of tiny-shakespeare."""
    images, labels = load_cifar10(shared_data / "cifar10-jpg.zip", split="test")
    pick = torch.arange(0, 10000, 1250)  # one image of each of 8 classes
    text = load_text(shared_data / "tinyshakespeare.txt")
    return {"image": (normalize(images[pick]), labels[pick]),
            "text": next(TextBatches(text.train, batch_size=4, block_size=64))}


def param_names(module: nn.Module) -> set[str]:
    return {name for name, _ in module.named_parameters(remove_duplicate=False)}


def check_graph(module: nn.Module, example: torch.Tensor) -> graphs.ArchGraph:
    graph = graphs.build(module, example)
    names = graph.param_names()
    assert len(names) == len(set(names)) and set(names) == param_names(module)
    assert not graph.unrecognized and not graph.unused
    return graph


@pytest.fixture(scope="module")
def traced(batches) -> dict[str, list[tuple[str, nn.Module, graphs.ArchGraph]]]:
    """Every sampler's architectures for SEEDS, each run on real data and traced."""
    out = {}
    for sampler in SAMPLERS:
        x, y = batches[sampler.kind]
        out[sampler.tag] = []
        for seed in SEEDS:
            name, module = sampler.sample(seed)
            output = module(x)
            logits = output if isinstance(output, torch.Tensor) else output.logits  # HF GPT-2
            expected = (len(x), 10) if sampler.kind == "image" else (*x.shape, 65)
            assert logits.shape == expected and torch.isfinite(logits).all(), name
            loss = nn.functional.cross_entropy(logits.flatten(0, -2), y.flatten())
            loss.backward()
            assert all(p.grad is not None for p in module.parameters()), f"{name}: unused params"
            out[sampler.tag].append((name, module, check_graph(module, x[:2])))
    return out


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: s.tag)
def test_samples_run_trace_and_respect_limits(sampler: Sampler, traced):
    for seed, (name, module, graph) in zip(SEEDS, traced[sampler.tag], strict=True):
        assert name == f"{sampler.tag}-{seed}"
        assert graph.num_params == sum(p.numel() for p in module.parameters())
        assert graph.num_params <= sampler.max_params
        if sampler.max_macs is not None:
            assert sampler.macs(module) <= sampler.max_macs
    hashes = [graph.arch_hash for _, _, graph in traced[sampler.tag]]
    assert len(set(hashes)) >= len(SEEDS) - 1, "different seeds give mostly different models"


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: s.tag)
def test_same_seed_same_architecture(sampler: Sampler, traced):
    name, module, graph = traced[sampler.tag][2]
    again_name, again = sampler.sample(SEEDS[2])
    assert again_name == name and str(again) == str(module)
    assert graphs.build(again, sampler.example_input()).arch_hash == graph.arch_hash


def test_families_cover_their_design_space(traced):
    ops = {tag: {n.op for _, _, g in runs for n in g.nodes} for tag, runs in traced.items()}
    assert {"conv", "max_pool", "avg_pool", "concat", "add"} <= ops["randcnn"]
    assert {"layer_norm", "gelu", "scale"} <= ops["convnext"]
    assert {"mul", "hardsigmoid"} <= ops["mobilenet"]  # squeeze-and-excite
    for tag in ("vit", "gpt"):
        assert {"attention", "layer_norm", "gelu"} <= ops[tag]
    assert {"token", "pos_embedding"} <= ops["vit"]
    assert {"embedding", "pos_embedding"} <= ops["gpt"]
    groups = {n.attrs.get("groups", 1) for _, _, g in traced["mobilenet"] for n in g.nodes}
    assert max(groups) > 1  # depthwise convolutions
    tied = [m for _, m, _ in traced["gpt"] if m.lm_head.weight is m.wte.weight]
    assert 0 < len(tied) < len(SEEDS)
    hf = [(m, g) for _, m, g in traced["hfgpt2"]]  # gpt2-char's layout: Conv1D, (in, out)
    assert all(p.in_out for _, g in hf for p in g.params if p.name.endswith("c_attn.weight"))
    assert 0 < sum(m.config.tie_word_embeddings for m, _ in hf) < len(SEEDS)


def test_bnresnets_are_batchnorm_resnets_of_several_widths_and_depths(traced):
    runs = traced["bnresnet"]
    norms = {n.op for _, _, g in runs for n in g.nodes if "norm" in n.op}
    assert norms == {"batch_norm"} and all(
        {"conv", "add", "batch_norm"} <= {n.op for n in g.nodes} for _, _, g in runs)
    widths = {m[0][0].out_channels for _, m, _ in runs}
    depths = {sum(1 for n in g.nodes if n.op == "conv") for _, _, g in runs}
    assert len(widths) >= 2 and len(depths) >= 3
    assert all(len(g.params) > 0 and g.num_params < 500_000 for _, _, g in runs)


def test_zoo_families_leave_the_training_mixture_alone():
    assert [s.tag for s in zoo_samplers()] == [*(s.tag for s in image_samplers()), "bnresnet"]
    assert "bnresnet" not in {s.tag for s, _ in mixed("image").parts}
    with pytest.raises(ValueError, match="reserved for held_out"):
        BNResNet().sample(HELD_OUT_SEED_START)


def test_macs_count_a_known_model():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 32 * 32, 10))
    assert VGGLike().macs(model) == 32 * 32 * 8 * 27 + 8 * 32 * 32 * 10
    with torch.device("meta"):
        on_meta = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8))
    assert VGGLike().macs(on_meta) == 32 * 32 * 8 * 27 and on_meta.training


def test_reserved_seeds_are_refused_and_rngs_draw_training_seeds():
    sampler = VGGLike()
    for seed in (HELD_OUT_SEED_START, HELD_OUT_SEED_START + 5, -1):
        with pytest.raises(ValueError, match="reserved for held_out"):
            sampler.sample(seed)
    name, _ = sampler.sample(random.Random(0))
    assert name == sampler.sample(random.Random(0))[0]
    assert int(name.split("-")[1]) < HELD_OUT_SEED_START


def test_mixed_draws_by_weight_and_names_rebuild():
    tiny_vgg = VGGLike(widths=(8,), stages=(1, 2), convs=(1, 1))
    tiny_convnext = ConvNeXtLike(widths=(8,), stages=(1, 1), blocks=(1, 1))
    mix = Mixed(((tiny_vgg, 3.0), (tiny_convnext, 1.0)))
    names = [mix.sample(seed)[0] for seed in range(80)]
    vgg = sum(n.startswith("vgg-") for n in names)
    assert 45 <= vgg <= 75 and names == [mix.sample(seed)[0] for seed in range(80)]
    name, module = mix.sample(11)
    sampler = tiny_vgg if name.startswith("vgg-") else tiny_convnext
    assert str(sampler.sample(11)[1]) == str(module) and name.endswith("-11")
    with pytest.raises(ValueError, match="one kind with positive weights"):
        Mixed(((tiny_vgg, 1.0), (GPTLike(), 1.0)))
    with pytest.raises(ValueError, match="one kind with positive weights"):
        Mixed(((tiny_vgg, 0.0),))


def test_default_mixtures():
    image = mixed("image")
    assert image.kind == "image" and sum(w for _, w in image.parts) == pytest.approx(1)
    assert [s.tag for s, _ in image.parts] == [s.tag for s in image_samplers()]
    text = mixed("text")
    assert text.kind == "text" and [s.tag for s, _ in text.parts] == ["gpt", "hfgpt2"]
    with pytest.raises(ValueError, match="'image' or 'text'"):
        mixed("audio")


@pytest.mark.parametrize("kind", ["image", "text"])
def test_held_out_is_stable_reserved_and_traceable(kind, traced, batches):
    entries = held_out(kind)
    names = [e.name for e in entries]
    assert names == [e.name for e in held_out(kind)] and len(set(names)) == len(names)
    sampled = [e for e in entries if e.name.rsplit("-", 1)[-1].isdigit()]
    assert len(sampled) == (24 if kind == "image" else 8)
    assert all(int(e.name.rsplit("-", 1)[1]) >= HELD_OUT_SEED_START for e in sampled)
    training = {g.arch_hash for runs in traced.values() for _, _, g in runs}
    x = batches[kind][0][:2]
    for entry in entries:
        with graphs.meta_init():  # the real models are full size: trace them on meta
            module = entry.build()
        graph = check_graph(module, x)
        assert graph.arch_hash not in training, entry.name
    # Entries are rebuilt identically on each call.
    first = entries[0]
    assert str(first.build()) == str(held_out(kind)[0].build())


def test_real_held_out_models_are_adapted_to_cifar():
    entries = {e.name: e for e in held_out("image")}
    assert set(entries) >= {"resnet18-cifar", "resnet50-cifar", "mobilenet_v3_small-cifar",
                            "convnext_tiny-cifar", "vit_b_16-cifar"}
    with graphs.meta_init():
        resnet = entries["resnet18-cifar"].build()
        vit = entries["vit_b_16-cifar"].build()
        gpt2 = held_out("text")[-1].build()
    assert resnet.conv1.kernel_size == (3, 3) and isinstance(resnet.maxpool, nn.Identity)
    assert resnet.fc.out_features == 10
    assert vit.patch_size == 4 and vit.encoder.pos_embedding.shape == (1, 65, 768)
    assert len(vit.encoder.layers) == 12
    assert gpt2.config.vocab_size == 65 and gpt2.config.n_layer == 12


def test_a_fresh_sampler_builds_the_same_weights_as_a_used_one():
    """Its first build computes the held-out structures; that must not use torch's RNG, or
    a zoo run's init would depend on what the process had built before."""
    used = BNResNet()
    used.sample(0)
    weights = []
    for sampler in (BNResNet(), used):
        torch.manual_seed(7)
        weights.append(sampler.sample(3)[1].state_dict()["0.0.weight"])
    assert torch.equal(*weights)
