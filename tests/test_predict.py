"""The hypernetwork engine: predicted state dicts, files, checkpoints and bad inputs."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
import torch
import torchvision
from huggingface_hub import load_torch_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.func import functional_call

import graphs
import hyperinit
from hyperinit.catalog import SHIPPED, default_generator
from hyperinit.decoder import matrix_shape, normalized_product
from hyperinit.predict import NOISE_CHUNK, add_noise, default_gain, orth_names, orthogonalize
from training.samplers.blocks import ConvNeXtBlock

TINY = hyperinit.GHNConfig(hidden=16, layers=1, heads=2, rank=4, features=8)
# One or two of each family; the slow tier runs all 80 torchvision classifiers with each
# shipped hypernetwork.
FAST_TORCHVISION = ["resnet18", "mobilenet_v3_small", "squeezenet1_0", "shufflenet_v2_x0_5",
                    "regnet_x_400mf", "mnasnet0_5", "efficientnet_b0", "densenet121",
                    "googlenet", "convnext_tiny", "swin_t", "vit_b_32", "maxvit_t"]
HF = {"gpt2": {"n_layer": 2, "n_embd": 64, "n_head": 4},
      "llama": {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
                "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000},
      "bert": {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
               "intermediate_size": 128},
      "vit": {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
              "intermediate_size": 128, "image_size": 32, "patch_size": 4},
      "t5": {"num_layers": 2, "d_model": 64, "d_ff": 128, "num_heads": 4, "d_kv": 16}}


@pytest.fixture(scope="module")
def ghn() -> hyperinit.GraphHyperNetwork:
    torch.manual_seed(0)
    return hyperinit.GraphHyperNetwork(TINY).eval()


def check_prediction(spec: graphs.ArchSpec, ghn) -> None:
    """Keys, shapes and dtypes equal the model's state dict, and a forward pass is finite."""
    state = hyperinit.predict_state_dict(spec, ghn)
    reference = spec.build().state_dict()
    assert list(state) and set(state) == set(reference)
    for name, tensor in state.items():
        assert tensor.shape == reference[name].shape, name
        assert tensor.dtype == reference[name].dtype, name
        assert tensor.device.type == "cpu" and torch.isfinite(tensor.float()).all(), name
    model = spec.build()
    model.load_state_dict(state, strict=True, assign=True)
    inputs = spec.example_inputs()
    if isinstance(inputs, dict):
        inputs = {k: torch.randn_like(v) if v.is_floating_point() else v
                  for k, v in inputs.items()}
    with torch.no_grad():
        out = model(**inputs) if isinstance(inputs, dict) else model(torch.randn_like(inputs))
    logits = out if isinstance(out, torch.Tensor) else out[0]
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", FAST_TORCHVISION)
def test_torchvision_prediction(name, ghn):
    check_prediction(graphs.resolve(f"torchvision:{name}", num_classes=10), ghn)


# ----- the shipped hypernetworks ------------------------------------------------------------
SHIPPED_GHNS = [name for name in hyperinit.list_generators() if name.startswith("ghn-")]


def test_the_shipped_generators_are_there():
    assert {"ghn-cifar10", "ghn-shakespeare"} <= set(SHIPPED_GHNS)
    assert default_generator() == "ghn-cifar10"
    shipped = hyperinit.load_generator("ghn-cifar10").defaults  # from its config.json
    assert shipped.noise == 0.0 and shipped.max_numel == 512 * 512 and shipped.max_gain == 1.0
    assert shipped.scale_by_depth


def test_the_shipped_generators_are_package_data():
    """Every file of the checkout's checkpoints/ matches pyproject.toml's package-data for
    the hyperinit.checkpoints package it is mapped to, so a wheel carries it (``.ci/wheel``
    predicts with the installed one)."""
    root = Path(hyperinit.__file__).parents[1]
    assert root / "checkpoints" == SHIPPED
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"]["hyperinit.checkpoints"] == "checkpoints"
    patterns = setuptools["package-data"]["hyperinit.checkpoints"]
    files = [p.relative_to(SHIPPED).as_posix() for p in SHIPPED.rglob("*") if p.is_file()]
    assert files and all(any(fnmatch(f, pattern) for pattern in patterns) for f in files)


def test_every_shipped_checkpoint_is_at_most_25_mb():
    """The project's limit for a shipped generator's weights (a wheel carries them all)."""
    sizes = {p.parent.name: p.stat().st_size for p in SHIPPED.glob("*/model.safetensors")}
    assert sizes and all(size <= 25 * 2**20 for size in sizes.values()), sizes


@pytest.fixture(scope="module", params=SHIPPED_GHNS)
def shipped(request) -> hyperinit.GraphHyperNetwork:
    return hyperinit.load_generator(request.param)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "squeezenet1_0",
                                  "efficientnet_b0"])
def test_shipped_generators_predict_torchvision(name, shipped):
    check_prediction(graphs.resolve(f"torchvision:{name}", num_classes=10), shipped)


@pytest.mark.slow
@pytest.mark.parametrize("name", torchvision.models.list_models(module=torchvision.models))
def test_shipped_generators_predict_every_torchvision_classifier(name, shipped):
    check_prediction(graphs.resolve(f"torchvision:{name}", num_classes=10), shipped)


@pytest.mark.parametrize("model_type", HF)
def test_transformers_prediction(model_type, ghn):
    check_prediction(graphs.resolve(f"hf:{model_type}", **HF[model_type]), ghn)


def test_tied_weights_stay_tied(ghn):
    model = hyperinit.predict("hf:gpt2", ghn, **HF["gpt2"])
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.weight.device.type == "cpu"


@pytest.mark.parametrize("numel", [2, 17, 1000, NOISE_CHUNK + 1, 2 * NOISE_CHUNK + 15,
                                   3 * NOISE_CHUNK + 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_noise_drawn_in_chunks_is_the_differentiable_formula_bytewise(numel, dtype):
    """Prediction mixes noise chunk by chunk (no gradient); training goes through the
    formula. Both give the same bytes and leave the generator in the same state."""
    weight = torch.randn(numel, generator=torch.Generator().manual_seed(1)).to(dtype)
    rngs = [torch.Generator().manual_seed(7) for _ in range(3)]
    formula = add_noise(weight.clone().requires_grad_(), "weight", 0.3, rngs[0])
    chunked = add_noise(weight, "weight", 0.3, rngs[1])
    assert formula.requires_grad and torch.equal(chunked, formula.detach())
    owned = weight.clone()
    assert add_noise(owned, "weight", 0.3, rngs[2], inplace=True) is not weight
    assert torch.equal(owned, chunked)  # mixed into the tensor itself
    after = [torch.randn(4, generator=rng) for rng in rngs]
    assert all(torch.equal(after[0], other) for other in after[1:])


def test_tied_weights_are_written_once_and_tied_again_on_load(tmp_path, ghn):
    """GPT-2's output layer is its token embedding: the file holds it once, under the first
    name, with ``lm_head.weight -> transformer.wte.weight`` in the metadata (as
    huggingface_hub writes shared tensors); read_state and safetensors' load_model (the
    README's one-liner for plain safetensors users) restore the tie."""
    from safetensors.torch import load_model

    from hyperinit.safetensors_io import read_state

    path = tmp_path / "gpt2.safetensors"
    hyperinit.save_init("hf:gpt2", path, ghn, seed=2, **HF["gpt2"])
    expected = hyperinit.predict_state_dict("hf:gpt2", ghn, seed=2, **HF["gpt2"])
    with safe_open(path, "pt") as f:
        written, meta = set(f.keys()), f.metadata()
    assert "lm_head.weight" not in written and "transformer.wte.weight" in written
    assert meta["lm_head.weight"] == "transformer.wte.weight"
    embedding = expected["transformer.wte.weight"]
    assert path.stat().st_size < sum(t.nbytes for t in expected.values()) - embedding.nbytes / 2
    state = read_state([path])
    assert state.keys() == expected.keys()
    assert state["lm_head.weight"] is state["transformer.wte.weight"]
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    model = graphs.resolve("hf:gpt2", **HF["gpt2"]).build(meta=False)
    load_model(model, path)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert torch.equal(model.lm_head.weight, embedding)


def test_gpt2_conv1d_weights_get_their_fan_in_from_the_first_axis(ghn):
    """transformers' Conv1D stores (in, out): predicted like a linear layer, then transposed.
    An untrained generator's gain is about 1, so every weight's std is about 1/sqrt(fan-in);
    with the axes swapped c_fc and the MLP's c_proj would be off by 2x."""
    graph = graphs.build(graphs.resolve("hf:gpt2", **HF["gpt2"]))
    fc = next(p for p in graph.params if p.name.endswith("h.0.mlp.c_fc.weight"))
    assert fc.in_out and fc.shape == (64, 256) and fc.out_in_shape == (256, 64)
    model = hyperinit.predict("hf:gpt2", ghn, **HF["gpt2"])
    conv1d = [(n, p) for n, p in model.named_parameters() if n.endswith("c_fc.weight")
              or n.endswith("c_proj.weight") or n.endswith("c_attn.weight")]
    assert len(conv1d) == 8  # 2 layers: c_attn, attn.c_proj, c_fc, mlp.c_proj
    for name, weight in conv1d:
        assert weight.std().item() * weight.shape[0] ** 0.5 == pytest.approx(1, abs=0.1), name


@pytest.mark.parametrize("role", ["weight", "scale"])
def test_a_transposed_tensor_is_built_in_its_stored_layout(ghn, role):
    """Conv1D weights are stored (in, out): the decoder builds B @ A.T instead of copying
    the transpose of A @ B.T (other roles are copied); the values agree to rounding and the
    result is contiguous."""
    torch.manual_seed(0)
    uv, vector, log_gain = torch.randn(2, 8, 4), torch.randn(9), torch.tensor(0.3)
    plain = ghn.decoder.tensor(uv, vector, log_gain, role, (96, 40))
    stored = ghn.decoder.tensor(uv, vector, log_gain, role, (96, 40), transposed=True)
    assert stored.is_contiguous() and stored.shape == plain.T.shape
    torch.testing.assert_close(stored, plain.T)


def test_gpt2_sequence_classifier_takes_batches(ghn):
    model = hyperinit.predict("hf:gpt2", ghn, num_classes=3, **HF["gpt2"])
    assert model.config.pad_token_id == model.config.eos_token_id
    logits = model(torch.randint(0, 100, (4, 12))).logits
    assert logits.shape == (4, 3) and torch.isfinite(logits).all()


def test_partially_traced_models_get_every_parameter(ghn):
    spec = graphs.resolve("hf:t5", num_classes=3, **HF["t5"])  # pools at the EOS token
    with pytest.warns(graphs.PartialGraphWarning, match="classification_head"):
        state = hyperinit.predict_state_dict(spec, ghn)
    expected = spec.build().state_dict()
    params = dict(spec.build().named_parameters(remove_duplicate=False))
    assert set(params) <= set(state)
    for name in params:
        assert state[name].shape == expected[name].shape and torch.isfinite(state[name]).all()


def test_predict_fills_a_real_module_in_place(ghn):
    model = torchvision.models.resnet18(num_classes=10)
    model.bn1.running_mean.fill_(3.0)
    before = model.conv1.weight.clone()
    assert hyperinit.predict(model, ghn) is model
    assert not torch.equal(before, model.conv1.weight)
    assert torch.equal(model.bn1.running_mean, torch.zeros(64))
    expected = hyperinit.predict_state_dict("torchvision:resnet18", ghn, num_classes=10)
    assert torch.equal(model.conv1.weight, expected["conv1.weight"])


def test_output_statistics_follow_the_layer(ghn):
    state = hyperinit.predict_state_dict("torchvision:resnet18", ghn, num_classes=10)
    conv = state["layer1.0.conv1.weight"]  # fan-in 64*3*3
    assert 0.3 / math.sqrt(576) < conv.std() < 3 / math.sqrt(576)
    assert abs(conv.mean()) < 0.1 * conv.std()
    assert (state["bn1.weight"] - 1).abs().max() < 1 and state["bn1.bias"].abs().max() <= 0.1
    assert torch.equal(state["bn1.running_var"], torch.ones(64))


def test_same_seed_same_bytes_other_seed_other_noise(tmp_path, ghn):
    """A seed gives fixed bytes; it draws the noise only, so with none every seed agrees."""
    paths = [tmp_path / f"{i}.safetensors" for i in range(4)]
    for path, seed, noise in zip(paths, (7, 7, 8, 8), (0.3, 0.3, 0.3, 0.0), strict=True):
        hyperinit.save_init("torchvision:resnet18", path, ghn, seed=seed, noise=noise,
                            num_classes=10)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    a, c = load_file(paths[0]), load_file(paths[2])
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])
    assert abs(a["conv1.weight"].std() / c["conv1.weight"].std() - 1) < 0.05
    plain = hyperinit.predict_state_dict("torchvision:resnet18", ghn, seed=0, noise=0,
                                         num_classes=10)
    assert all(torch.equal(v, plain[k]) for k, v in load_file(paths[3]).items())


def test_noise_replaces_a_fraction_of_each_weights_variance(ghn):
    """sqrt(1 - f) * w + sqrt(f) * std(w) * eps: same std, correlation sqrt(1 - f) with w;
    biases and norm parameters are the prediction's."""
    plain, noisy = (hyperinit.predict_state_dict("torchvision:resnet18", ghn, noise=f,
                                                 num_classes=10) for f in (0.0, 0.36))
    for name in ("conv1.weight", "layer3.0.conv2.weight", "fc.weight"):
        w, v = plain[name].flatten(), noisy[name].flatten()
        assert abs(v.std() / w.std() - 1) < 0.05, name
        assert abs(torch.corrcoef(torch.stack([w, v]))[0, 1] - 0.8) < 0.05, name
    for name in ("bn1.weight", "bn1.bias", "fc.bias"):
        assert torch.equal(plain[name], noisy[name]), name


def test_saved_generators_get_the_usual_file_permissions(tmp_path):
    """safetensors writes 0600; an exported generator is as readable as any other new file."""
    hyperinit.GraphHyperNetwork(TINY).save_pretrained(tmp_path / "ghn")
    tiny = hyperinit.DiffusionConfig(chunk=16, hidden=16, layers=1, heads=2, graph_layers=1)
    hyperinit.WeightDiffusion(tiny).save_pretrained(tmp_path / "wd")
    umask = os.umask(0)
    os.umask(umask)
    for folder in ("ghn", "wd"):
        mode = (tmp_path / folder / "model.safetensors").stat().st_mode & 0o777
        assert mode == 0o666 & ~umask, oct(mode)


def test_noise_defaults_to_the_generators_and_is_recorded(tmp_path):
    torch.manual_seed(0)
    ghn = hyperinit.GraphHyperNetwork(TINY, hyperinit.PredictDefaults(noise=0.5)).eval()
    ghn.save_pretrained(tmp_path / "gen")
    loaded = hyperinit.load_generator(tmp_path / "gen")
    assert loaded.defaults.noise == 0.5 and loaded.config == TINY  # beside the network's
    assert json.loads((tmp_path / "gen" / "config.json").read_text())["defaults"]["noise"] == 0.5
    default, explicit = (hyperinit.predict_state_dict("torchvision:resnet18", loaded,
                                                      num_classes=10, **kw)
                         for kw in ({}, {"noise": 0.5}))
    assert all(torch.equal(v, explicit[k]) for k, v in default.items())
    [path] = hyperinit.save_init("torchvision:resnet18", tmp_path / "i.safetensors", loaded,
                                 noise=0.25, num_classes=10)
    with safe_open(path, "pt") as f:
        assert f.metadata()["hyperinit.noise"] == "0.25"


@pytest.mark.parametrize("noise", [-0.1, 1.5])
def test_noise_outside_zero_to_one_is_refused(tmp_path, ghn, noise):
    with pytest.raises(ValueError, match="noise must be between 0 and 1"):
        hyperinit.save_init("torchvision:resnet18", tmp_path / "i.safetensors", ghn,
                            noise=noise, num_classes=10)
    assert list(tmp_path.iterdir()) == []


def test_weights_larger_than_max_numel_get_he_init(tmp_path, ghn):
    """ResNet-18's layer3/4 kernels hold 294,912 to 2,359,296 values: with
    ``max_numel=512*512`` they get He init, the rest is the prediction."""
    limited = hyperinit.GraphHyperNetwork(TINY, hyperinit.PredictDefaults(max_numel=512 * 512))
    limited.load_state_dict(ghn.state_dict())
    limited.eval().save_pretrained(tmp_path / "gen")
    loaded = hyperinit.load_generator(tmp_path / "gen")
    assert loaded.defaults.max_numel == 262144 and loaded.id.endswith("+max_numel=262144")
    full = hyperinit.predict_state_dict("torchvision:resnet18", ghn, num_classes=10)
    mixed = hyperinit.predict_state_dict("torchvision:resnet18", loaded, num_classes=10)
    large = {k for k, v in full.items() if v.numel() > 512 * 512}
    assert large == {f"layer{i}.{block}.conv{j}.weight"
                     for i in (3, 4) for block in (0, 1) for j in (1, 2)}
    for name, value in mixed.items():
        if name in large:
            he = (2 / value[0].numel()) ** 0.5
            assert value.mean().abs() < 0.02 * he and not torch.equal(value, full[name])
            assert value.std().item() == pytest.approx(he, rel=0.02), name
        else:
            assert torch.equal(value, full[name]), name
    other_seed = hyperinit.predict_state_dict("torchvision:resnet18", loaded, num_classes=10,
                                              seed=1)
    assert not torch.equal(other_seed["layer4.1.conv2.weight"], mixed["layer4.1.conv2.weight"])
    [path] = hyperinit.save_init("torchvision:resnet18", tmp_path / "i.safetensors", loaded,
                                 num_classes=10)
    with safe_open(path, "pt") as f:
        assert f.metadata()["hyperinit.max_numel"] == "262144"
        assert f.metadata()["hyperinit.generator"].endswith("+max_numel=262144")


def test_default_gain_is_the_largest_singular_value_of_the_default_init():
    """To leading order: within 12% of the measured value even for a 64 x 27 kernel."""
    torch.manual_seed(0)
    for shape in [(128, 128, 3, 3), (64, 3, 3, 3), (10, 512), (512, 512)]:
        layer = (torch.nn.Conv2d(shape[1], shape[0], 3) if len(shape) == 4
                 else torch.nn.Linear(shape[1], shape[0]))
        matrix = layer.weight.detach().flatten(1)
        measured = float(torch.linalg.matrix_norm(matrix, 2))
        assert default_gain(*matrix.shape) == pytest.approx(measured, rel=0.12), shape


def _plain_cnn(norm: bool) -> torch.nn.Sequential:
    """Three 3x3 convolutions (the last of 64 x 64 x 9 = 36,864 values) and a linear head,
    with or without BatchNorm after each convolution."""
    layers: list[torch.nn.Module] = []
    for cin, cout in ((3, 32), (32, 64), (64, 64)):
        layers += [torch.nn.Conv2d(cin, cout, 3)]
        layers += [torch.nn.BatchNorm2d(cout)] if norm else []
        layers += [torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(64, 10))


def test_max_gain_caps_every_predicted_weight_but_the_head(tmp_path, ghn):
    """In a network without normalization layers, ``max_gain`` G scales every predicted
    weight but the head down to a largest singular value of at most G times the default
    init's; weights below that, the head and the weights left to He init (``max_numel``)
    are as they would be without it. With BatchNorm nothing changes."""
    for folder, gain in (("he", None), ("capped", 0.5)):
        made = hyperinit.GraphHyperNetwork(TINY, hyperinit.PredictDefaults(max_numel=20000,
                                                                           max_gain=gain))
        made.load_state_dict(ghn.state_dict())
        made.eval().save_pretrained(tmp_path / folder)
    loaded = hyperinit.load_generator(tmp_path / "capped")
    assert loaded.defaults.max_gain == 0.5 and loaded.id.endswith("+max_numel=20000+max_gain=0.5")
    he = hyperinit.load_generator(tmp_path / "he")
    full = hyperinit.predict_state_dict(_plain_cnn(norm=False), he)
    limited = hyperinit.predict_state_dict(_plain_cnn(norm=False), loaded)
    scaled = 0
    for name, value in limited.items():
        if value.dim() < 2 or name in ("4.weight", "8.weight"):  # the He-init conv, the head
            assert torch.equal(value, full[name]), name
            continue
        matrix = value.flatten(1)
        limit = 0.5 * default_gain(*matrix.shape)
        gain = float(torch.linalg.matrix_norm(matrix, 2))
        if torch.equal(value, full[name]):
            assert gain <= limit, name
        else:
            scale = value.norm() / full[name].norm()
            assert gain == pytest.approx(limit, rel=1e-4) and scale < 1, name
            assert torch.allclose(value, full[name] * scale, rtol=1e-5, atol=1e-7), name
            scaled += 1
    assert scaled > 0
    normalized = [hyperinit.predict_state_dict(_plain_cnn(norm=True), g) for g in (he, loaded)]
    assert all(torch.equal(v, normalized[0][k]) for k, v in normalized[1].items())
    [path] = hyperinit.save_init(_plain_cnn(norm=False), tmp_path / "i.safetensors", loaded)
    with safe_open(path, "pt") as f:
        assert f.metadata()["hyperinit.max_gain"] == "0.5"


def _convnext(blocks: int) -> torch.nn.Sequential:
    """A patchify stem, ``blocks`` ConvNeXt blocks (each with a layer scale) and a head."""
    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 2, 2),
                               *(ConvNeXtBlock(16, 2) for _ in range(blocks)),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(16, 10))


def test_scale_by_depth_divides_each_layer_scale_by_the_root_of_their_number(tmp_path, ghn):
    for folder, by_depth in (("plain", False), ("deep", True)):
        made = hyperinit.GraphHyperNetwork(TINY, hyperinit.PredictDefaults(
            scale_by_depth=by_depth))
        made.load_state_dict(ghn.state_dict())
        made.eval().save_pretrained(tmp_path / folder)
    plain, deep = (hyperinit.load_generator(tmp_path / f) for f in ("plain", "deep"))
    assert deep.defaults.scale_by_depth and deep.id.endswith("+scale_by_depth=True")
    assert "scale_by_depth" not in plain.id
    for blocks in (1, 4, 9):
        full = hyperinit.predict_state_dict(_convnext(blocks), plain)
        scaled = hyperinit.predict_state_dict(_convnext(blocks), deep)
        gammas = [name for name in full if name.endswith("gamma")]
        assert len(gammas) == blocks
        for name, value in scaled.items():
            expected = full[name] / blocks ** 0.5 if name in gammas else full[name]
            assert torch.allclose(value, expected, rtol=1e-6, atol=0), name
    cnn = [hyperinit.predict_state_dict(_plain_cnn(norm=True), g) for g in (plain, deep)]
    assert all(torch.equal(v, cnn[0][k]) for k, v in cnn[1].items())  # no layer scales
    [path] = hyperinit.save_init(_convnext(2), tmp_path / "i.safetensors", deep)
    with safe_open(path, "pt") as f:
        assert f.metadata()["hyperinit.scale_by_depth"] == "True"


BAD_LIMITS = [("max_numel", value, "max_numel must be a whole number")
              for value in (0, 2.5, "wide", True)]
BAD_LIMITS += [("max_gain", value, "max_gain must be a number above 0")
               for value in (0, -1.0, float("inf"), "high", True)]
BAD_LIMITS += [("scale_by_depth", value, "scale_by_depth must be true or false")
               for value in (1, "yes", None)]


@pytest.mark.parametrize(("key", "value", "message"), BAD_LIMITS)
def test_a_bad_limit_in_config_json_is_refused(tmp_path, ghn, key, value, message):
    ghn.save_pretrained(tmp_path / "gen")
    config = json.loads((tmp_path / "gen" / "config.json").read_text())
    config["defaults"][key] = value
    (tmp_path / "gen" / "config.json").write_text(json.dumps(config))
    with pytest.raises(hyperinit.CheckpointError, match=message):
        hyperinit.load_generator(tmp_path / "gen")


def test_save_load_round_trip_and_metadata(tmp_path, ghn):
    path = tmp_path / "init.safetensors"
    [written] = hyperinit.save_init("torchvision:resnet18", path, ghn, seed=3, num_classes=10)
    assert written == path and sorted(os.listdir(tmp_path)) == ["init.safetensors"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temp file's private 0600
    expected = hyperinit.predict_state_dict("torchvision:resnet18", ghn, seed=3, num_classes=10)
    loaded = load_file(path)
    assert set(loaded) == set(expected)
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt" and meta["hyperinit.seed"] == "3"
    assert meta["hyperinit.version"] == hyperinit.__version__
    assert json.loads(meta["hyperinit.arch"]) == {
        "source": "torchvision", "name": "resnet18", "kwargs": {"num_classes": 10}}
    assert meta["hyperinit.arch_hash"] == graphs.build(
        graphs.resolve("torchvision:resnet18", num_classes=10)).arch_hash
    assert meta["hyperinit.generator"] == "in-memory@unsaved"
    torchvision.models.resnet18(num_classes=10).load_state_dict(loaded, strict=True)


def test_dtype_option(tmp_path, ghn):
    path = tmp_path / "half.safetensors"
    hyperinit.save_init("torchvision:resnet18", path, ghn, num_classes=10, dtype="bfloat16")
    state = load_file(path)
    assert state["conv1.weight"].dtype == torch.bfloat16
    assert state["bn1.num_batches_tracked"].dtype == torch.int64
    with pytest.raises(ValueError, match="float16"):
        hyperinit.save_init("torchvision:resnet18", tmp_path / "x.safetensors", ghn,
                            dtype="float8")


def test_sharded_output_loads_with_huggingface_hub(tmp_path, ghn):
    folder = tmp_path / "init"
    files = hyperinit.save_init("hf:gpt2", folder, ghn, max_shard_size=200_000, **HF["gpt2"])
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted({*index["weight_map"].values()})
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert [f.name for f in files] == [*shards, "model.safetensors.index.json"]
    model = graphs.resolve("hf:gpt2", **HF["gpt2"]).build().to_empty(device="cpu")
    model.tie_weights()  # to_empty unties; transformers ties again before it loads
    # The tied lm_head.weight is written once, as transformer.wte.weight: huggingface_hub's
    # strict mode counts it missing, as for files its own save_torch_state_dict writes.
    result = load_torch_model(model, folder, strict=False)
    assert set(result.missing_keys) == {"lm_head.weight"} and not result.unexpected_keys
    expected = hyperinit.predict_state_dict("hf:gpt2", ghn, **HF["gpt2"])
    assert torch.equal(model.transformer.h[1].mlp.c_fc.weight,
                       expected["transformer.h.1.mlp.c_fc.weight"])
    assert torch.equal(model.lm_head.weight, expected["lm_head.weight"])
    small = hyperinit.save_init("hf:gpt2", tmp_path / "one", ghn, **HF["gpt2"])
    assert [f.name for f in small] == ["model.safetensors"]


def _periodic(w: torch.Tensor) -> bool:
    """Whether some period p dividing the rows makes the tensor repeat along its rows
    (checked on the first 8 columns: a tiled tensor repeats in every column)."""
    rows, w = w.shape[0], w[:, :8]
    return any(torch.allclose(w[p:], w[:-p], rtol=1e-4, atol=1e-7)
               for p in range(1, rows // 2 + 1) if rows % p == 0)


def test_normalized_product_equals_standardizing_the_full_matrix():
    torch.manual_seed(0)
    a = (torch.randn(300, 8) + 0.5).requires_grad_()
    b = (torch.randn(70, 8) - 0.2).requires_grad_()
    weights = torch.randn(300, 70)
    full = a @ b.T
    expected = (full - full.mean()) / full.std() * 0.3
    got = normalized_product(a, b, torch.tensor(0.3))
    assert torch.allclose(got, expected, atol=1e-5)
    grads = torch.autograd.grad((got * weights).sum(), (a, b))
    expected_grads = torch.autograd.grad((expected * weights).sum(), (a, b))
    for g, e in zip(grads, expected_grads, strict=True):
        assert torch.allclose(g, e, atol=1e-4)


def test_no_tensor_is_a_tiled_block(ghn):
    state = hyperinit.predict_state_dict("torchvision:resnet18", ghn, num_classes=10)
    checked = 0
    for name, tensor in state.items():
        if not name.endswith("weight") or tensor.dim() < 2:
            continue
        view = tensor.reshape(matrix_shape(tuple(tensor.shape)))
        assert not _periodic(view) and not _periodic(view.T), name
        checked += 1
    assert checked == 21


def test_widths_never_seen_work(ghn):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4099), torch.nn.ReLU(),
                                torch.nn.Linear(4099, 5))
    state = hyperinit.predict_state_dict(model, ghn)
    assert state["0.weight"].shape == (4099, 3) and torch.linalg.matrix_rank(
        state["2.weight"]) == min(5, TINY.rank)


def test_differentiable_path_trains_the_generator(ghn):
    spec = graphs.resolve("torchvision:resnet18", num_classes=10)
    graph, model = graphs.build(spec), spec.build()
    buffers = {k: v for k, v in model.state_dict().items() if k.endswith(("mean", "var"))}
    trainable = hyperinit.GraphHyperNetwork(TINY)
    (params,) = trainable([graph])
    model.train()
    out = functional_call(model, {**params, **buffers}, (torch.randn(4, 3, 32, 32),))
    torch.nn.functional.cross_entropy(out, torch.arange(4)).backward()
    grads = [p.grad for p in trainable.parameters() if p.grad is not None]
    assert len(grads) > 10 and all(torch.isfinite(g).all() for g in grads)


def test_calibrate_batchnorm_estimates_statistics(ghn):
    batches = [torch.randn(8, 3, 32, 32) * 2 + 1 for _ in range(3)]
    model = hyperinit.predict("torchvision:resnet18", ghn, num_classes=10, calibration=batches)
    assert abs(model.bn1.running_var.mean() - 1) > 0.05  # not the reset value any more
    assert model.bn1.num_batches_tracked == 3 and model.bn1.momentum == 0.1


# ----- checkpoints -----------------------------------------------------------------------
def test_generator_checkpoint_round_trip(tmp_path, ghn):
    ghn.save_pretrained(tmp_path / "gen")
    assert sorted(os.listdir(tmp_path / "gen")) == ["README.md", "config.json",
                                                    "model.safetensors"]
    loaded = hyperinit.load_generator(tmp_path / "gen")
    assert loaded.config == TINY
    a = hyperinit.predict_state_dict("torchvision:resnet18", ghn, num_classes=10)
    b = hyperinit.predict_state_dict("torchvision:resnet18", loaded, num_classes=10)
    assert all(torch.equal(a[k], b[k]) for k in a)
    path = tmp_path / "x.safetensors"
    hyperinit.save_init("torchvision:resnet18", path, tmp_path / "gen", num_classes=10)
    with safe_open(path, "pt") as f:
        assert f.metadata()["hyperinit.generator"].startswith("gen@")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "mismatch", "missing", "config"])
def test_bad_checkpoints_give_clear_errors(tmp_path, ghn, damage):
    folder = tmp_path / "gen"
    ghn.save_pretrained(folder)
    weights = folder / "model.safetensors"
    if damage == "garbage":
        weights.write_bytes(b"\x00not a safetensors file" * 10)
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "mismatch":
        save_file(hyperinit.GraphHyperNetwork(hyperinit.GHNConfig(hidden=32)).state_dict(),
                  weights)
    elif damage == "missing":
        weights.unlink()
    else:
        (folder / "config.json").write_text('{"config": {"hidden": "wide"}}')
    with pytest.raises(hyperinit.CheckpointError, match=str(folder.name)):
        hyperinit.load_generator(folder)


def test_a_config_json_of_0_3_keeps_noise_and_orth_as_prediction_defaults(tmp_path, ghn):
    """hyperinit 0.3 wrote ``noise`` and ``orth`` among the network's sizes and no ``kind``:
    such a file loads as a graph hypernetwork with those as its defaults, predicting as a
    file of today's layout does."""
    folder = tmp_path / "old"
    ghn.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**dataclasses.asdict(TINY), "noise": 0.5,
                                                    "orth": False}))
    old = hyperinit.load_generator(folder)
    assert old.config == TINY and old.defaults == hyperinit.PredictDefaults(noise=0.5)
    new = hyperinit.GraphHyperNetwork(TINY, hyperinit.PredictDefaults(noise=0.5))
    new.load_state_dict(ghn.state_dict())
    a, b = (hyperinit.predict_state_dict("torchvision:resnet18", g, num_classes=10, seed=1)
            for g in (old, new.eval()))
    assert all(torch.equal(v, b[k]) for k, v in a.items())


def test_the_kind_in_config_json_picks_the_class(tmp_path, ghn):
    tiny = hyperinit.DiffusionConfig(chunk=16, hidden=16, layers=1, heads=2, graph_layers=1)
    hyperinit.WeightDiffusion(tiny).save_pretrained(tmp_path / "wd")
    ghn.save_pretrained(tmp_path / "ghn")
    assert type(hyperinit.Generator.from_pretrained(tmp_path / "wd")) is hyperinit.WeightDiffusion
    assert type(hyperinit.load_generator(tmp_path / "ghn")) is hyperinit.GraphHyperNetwork
    with pytest.raises(hyperinit.CheckpointError, match="holds a weight-diffusion generator, "
                                                        "not a graph-hypernetwork"):
        hyperinit.GraphHyperNetwork.from_pretrained(tmp_path / "wd")
    config = json.loads((tmp_path / "ghn" / "config.json").read_text())
    (tmp_path / "ghn" / "config.json").write_text(json.dumps({**config, "kind": "gan"}))
    with pytest.raises(hyperinit.CheckpointError, match="unknown generator kind 'gan': known "
                                                        "kinds are graph-hypernetwork"):
        hyperinit.load_generator(tmp_path / "ghn")


def test_a_generator_folder_without_config_json_is_refused(tmp_path):
    """Its weights alone would load with default settings: ghn-cifar10 would predict its
    weights wider than 512 instead of leaving them to He init."""
    folder = tmp_path / "ghn"
    shutil.copytree(SHIPPED / "ghn-cifar10", folder)
    (folder / "config.json").unlink()
    with pytest.raises(hyperinit.CheckpointError, match=f"{folder} has no config.json"):
        hyperinit.load_generator(folder)


def test_unknown_generator_lists_valid_ones():
    with pytest.raises(hyperinit.CheckpointError, match="untrained"):
        hyperinit.load_generator("no-such-generator")


# ----- bad inputs and outputs ------------------------------------------------------------
def test_unknown_architecture(tmp_path, ghn):
    with pytest.raises(graphs.UnknownArchitectureError, match="resnet18"):
        hyperinit.save_init("torchvision:resnet81", tmp_path / "x.safetensors", ghn)
    assert os.listdir(tmp_path) == []


def test_missing_and_read_only_output_folders(tmp_path, ghn):
    with pytest.raises(hyperinit.OutputPathError, match="does not exist"):
        hyperinit.save_init("torchvision:resnet18", tmp_path / "no" / "x.safetensors", ghn)
    # /proc refuses new files even to root, unlike a chmod-ed folder.
    with pytest.raises(hyperinit.OutputPathError, match="not writable"):
        hyperinit.save_init("torchvision:resnet18", Path("/proc/x.safetensors"), ghn)


def test_failure_mid_stream_leaves_no_file(tmp_path, ghn, monkeypatch):
    real = hyperinit.GraphHyperNetwork.iter_tensors

    def failing(self, *args, **kwargs):
        for i, item in enumerate(real(self, *args, **kwargs)):
            if i == 5:
                raise RuntimeError("generator crashed")
            yield item

    monkeypatch.setattr(hyperinit.GraphHyperNetwork, "iter_tensors", failing)
    with pytest.raises(RuntimeError, match="crashed"):
        hyperinit.save_init("torchvision:resnet18", tmp_path / "x.safetensors", ghn)
    with pytest.raises(RuntimeError, match="crashed"):
        hyperinit.save_init("hf:gpt2", tmp_path / "d", ghn, max_shard_size=1, **HF["gpt2"])
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


def test_cli_predict_reports(tmp_path, capsys, ghn):
    from hyperinit.cli import main

    ghn.save_pretrained(tmp_path / "gen")
    out = tmp_path / "r.safetensors"
    code = main(["predict", "torchvision:resnet18", "--num-classes", "10", "--out", str(out),
                 "--generator", str(tmp_path / "gen"), "--seed", "2", "--noise", "0.3",
                 "--dtype", "float16"])
    captured = capsys.readouterr()
    assert code == 0 and out.is_file()
    assert "arch_hash" in captured.out and "MB" in captured.out and "gen@" in captured.err
    assert "(seed 2, noise 0.3)" in captured.err
    assert load_file(out)["fc.weight"].dtype == torch.float16
    with safe_open(out, "pt") as f:
        assert f.metadata()["hyperinit.noise"] == "0.3"
    assert main(["predict", "torchvision:resnet18", "--out", str(tmp_path / "n.safetensors"),
                 "--noise", "2"]) == 2
    assert "noise must be between 0 and 1" in capsys.readouterr().err
    assert main(["predict", "torchvision:resnet18", "--out", str(tmp_path / "no/x")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_predict_compare_prints_side_by_side(tmp_path, capsys, ghn, shared_data):
    from hyperinit.cli import main

    ghn.save_pretrained(tmp_path / "gen")
    code = main(["predict", "torchvision:squeezenet1_1", "--num-classes", "10", "--out",
                 str(tmp_path / "s.safetensors"), "--generator", str(tmp_path / "gen"),
                 "--compare", "2"])
    out = capsys.readouterr().out
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith(("| predicted", "| default"))]
    assert len(rows) == 2 and all(line.count("%") == 2 for line in rows)
    assert main(["predict", "hf:gpt2", "--config", '{"n_layer": 1}', "--out",
                 str(tmp_path / "g.safetensors"), "--compare", "2"]) == 2
    assert "image classifiers" in capsys.readouterr().err


@pytest.mark.parametrize("shape", [(64, 3, 3, 3), (16, 32, 3, 3), (24, 24), (8, 1, 3, 3)])
def test_orthogonalize_flattens_the_spectrum_and_keeps_the_norm(shape):
    """Like a noisy prediction (low rank plus noise), in every layout: tall, wide, square,
    depthwise. The result is the polar factor of the SVD, rescaled to the input's norm."""
    torch.manual_seed(0)
    rows, cols = shape[0], math.prod(shape[1:])
    low_rank = torch.randn(rows, 2) @ torch.randn(2, cols)
    weight = (0.5**0.5 * low_rank + 0.5**0.5 * low_rank.std() * torch.randn(rows, cols))
    weight = weight.reshape(shape).requires_grad_()
    out = orthogonalize(weight)
    singular = torch.linalg.svdvals(out.detach().reshape(rows, -1))
    assert singular.max() / singular.min() < 1.001
    assert out.norm().item() == pytest.approx(weight.norm().item(), rel=1e-5)
    u, _, vh = torch.linalg.svd(weight.detach().reshape(rows, -1), full_matrices=False)
    polar = (u @ vh) * weight.norm().item() / (u @ vh).norm()
    torch.testing.assert_close(out.detach().reshape(rows, -1), polar, atol=1e-4, rtol=1e-4)
    (grad,) = torch.autograd.grad((out * torch.randn(shape)).sum(), weight)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("family", ["vgg", "convnext", "mobilenet"])
def test_orthogonalize_is_the_polar_factor_on_shipped_noisy_predictions(family):
    """On what it is used for, ``ghn-cifar10``'s predictions with noise 0.5 (convolutions,
    depthwise kernels, linear layers), it matches the SVD polar factor at the same norm."""
    from training.samplers import image_samplers

    model = next(s for s in image_samplers() if s.tag == family).build(7)
    hyperinit.predict(model, "ghn-cifar10", seed=0, noise=0.5)
    weights = [p.detach() for p in model.parameters() if p.dim() >= 2]
    for weight in weights:
        matrix = weight.reshape(weight.shape[0], -1)
        u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
        polar = (u @ vh) * matrix.norm() / (u @ vh).norm()
        torch.testing.assert_close(orthogonalize(weight).reshape(matrix.shape), polar,
                                   atol=1e-4 * polar.abs().max().item(), rtol=1e-4)


def test_orth_names_are_the_weights_before_the_head():
    graph = graphs.build("torchvision:resnet18")
    names = orth_names(graph)
    assert "conv1.weight" in names and "layer4.1.conv2.weight" in names
    assert "fc.weight" not in names  # the head
    assert not any(n.endswith("bias") or n.startswith("bn") for n in names)
    assert len(names) == 20  # the stem, 16 3x3 convs and 3 shortcut convs


def test_a_generator_trained_through_orth_predicts_orthogonalized_weights():
    """``PredictDefaults.orth``: every weight but the head is orthogonalized after the noise;
    the rest of the prediction is the same as without it."""
    torch.manual_seed(0)
    plain = hyperinit.GraphHyperNetwork(TINY)
    orth = hyperinit.GraphHyperNetwork(TINY, hyperinit.PredictDefaults(orth=True))
    orth.load_state_dict(plain.state_dict())
    kwargs = {"seed": 3, "noise": 0.5, "num_classes": 10}
    a = hyperinit.predict_state_dict("torchvision:resnet18", plain, **kwargs)
    b = hyperinit.predict_state_dict("torchvision:resnet18", orth, **kwargs)
    names = orth_names(graphs.build(graphs.resolve("torchvision:resnet18", num_classes=10)))
    assert a.keys() == b.keys() and names
    for name in a:
        if name in names:
            torch.testing.assert_close(b[name], orthogonalize(a[name]))
            singular = torch.linalg.svdvals(b[name].reshape(b[name].shape[0], -1))
            assert singular.max() / singular.min() < 1.001
        else:
            assert torch.equal(a[name], b[name]), name
